"""One flag style (issue 27): every command line takes kebab-case flags and their snake_case spelling,
shows defaults, choices and units in ``--help``, and answers a wrong flag with the nearest right one.

Each command runs as a real process (``python -m ...``), as a user types it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from classifier_canary.cli import build_parser as canary_parser
from classifier_plan.cli import add_arguments as add_plan_arguments
from predictor.__main__ import build_parser
from predictor.client import build_parser as client_parser
from predictor.flags import Parser, normalize
from tests.support.servers import REPO

COMMANDS = {
    "serve": ["-m", "predictor", "serve"],
    "worker": ["-m", "predictor", "worker"],
    "canary": ["-m", "predictor", "canary"],
    "plan": ["-m", "predictor", "plan"],
    "client classify": ["-m", "predictor.client", "classify"],
    "client submit": ["-m", "predictor.client", "submit"],
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env_free = {"PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120, env=env_free)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_kebab_flags_only_with_defaults(command: str) -> None:
    r = cli(*COMMANDS[command], "--help")
    assert r.returncode == 0, r.stderr
    flags = [w.split("=")[0].strip("[],") for w in r.stdout.split() if w.startswith(("--", "[--"))]
    flags = [f.lstrip("[") for f in flags]
    assert flags and all("_" not in f for f in flags), [f for f in flags if "_" in f]
    assert "default" in r.stdout.lower() and "snake_case" in r.stdout


@pytest.mark.parametrize(
    ("argv", "wrong", "right"),
    [
        (["-m", "predictor", "serve", "--max-batch-szie", "4"], "--max-batch-szie", "--max-batch-size"),
        (["-m", "predictor", "worker", "--redis-ulr", "redis://x"], "--redis-ulr", "--redis-url"),
        (["-m", "predictor", "canary", "--isvc", "a", "--step-intervall", "1m"], "--step-intervall", "--step-interval"),
        (
            ["-m", "predictor", "plan", "--traffic", "t", "--out", "o", "--slo-p59-ms", "5"],
            "--slo-p59-ms",
            "--slo-p95-ms",
        ),
        (["-m", "predictor.client", "classify", "x", "--url", "u", "--topk", "3"], "--topk", "--top-k"),
    ],
)
def test_a_wrong_flag_is_answered_with_the_nearest_one(argv: list[str], wrong: str, right: str) -> None:
    r = cli(*argv)
    assert r.returncode == 2
    assert f"unrecognized arguments: {wrong} (did you mean {right}?)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_snake_case_spelling_is_an_alias_everywhere() -> None:
    serve = build_parser().parse_args(["serve", "--model_dir", "m", "--http_port=9000", "--enable_ui", "true"])
    kebab = build_parser().parse_args(["serve", "--model-dir", "m", "--http-port=9000", "--enable-ui", "true"])
    assert (
        vars(serve) == vars(kebab) == {"command": "serve", "model_dir": "m", "http_port": "9000", "enable_ui": "true"}
    )
    plan_parser = Parser(prog="python -m predictor plan")
    add_plan_arguments(plan_parser)  # what `python -m predictor plan` parses with (predictor.__main__.run_tool)
    plan = plan_parser.parse_args(["--traffic", "t", "--out", "o", "--slo_p95_ms", "250", "--no_plots"])
    assert plan.slo_p95_ms == 250 and plan.no_plots is True
    canary = canary_parser().parse_args(["--isvc", "a", "--step_interval", "1m", "--dry_run"])
    assert canary.step_interval_seconds == "1m" and canary.dry_run is True
    client = client_parser().parse_args(["classify", "x", "--url", "u", "--top_k", "3", "--timeout_s", "5"])
    assert client.top_k == 3 and client.timeout_s == 5.0


def test_values_and_what_follows_a_bare_double_dash_are_not_renamed() -> None:
    assert normalize(["--assume", "node_startup_s=90", "--x_y=a_b", "--", "--keep_me"]) == [
        "--assume",
        "node_startup_s=90",
        "--x-y=a_b",
        "--",
        "--keep_me",
    ]
