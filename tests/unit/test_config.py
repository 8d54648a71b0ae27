"""Settings: flags, environment variables and defaults map one to one onto one pydantic-settings class."""

from __future__ import annotations

import subprocess
import sys

import pytest

from predictor.__main__ import build_parser
from predictor.config import Settings, settings_from_args
from tests.support.servers import REPO


def test_every_field_is_a_flag_and_flags_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDICTOR_MAX_BATCH_SIZE", "12")
    monkeypatch.setenv("PREDICTOR_MODEL_NAME", "from-env")
    args = build_parser().parse_args(["serve", "--model_name", "from-flag", "--http_port", "9000"])
    s = settings_from_args(args)
    assert s.model_name == "from-flag" and s.http_port == 9000
    assert s.max_batch_size == 12, "env vars fill what flags leave unset"
    assert s.max_batch_delay_ms == 5.0, "defaults fill the rest"
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for name in Settings.model_fields:
        assert f"--{name}" in help_text


def test_every_field_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--max_batch_size", "0"], "max_batch_size"),
        (["--backend", "tensorrt-llm"], "backend"),
        (["--http_port", "http"], "http_port"),
        (["--default_top_k", "50", "--max_top_k", "10"], "exceeds max_top_k"),
        (["--workers", "2"], "--workers: Input should be less than or equal to 1"),
    ],
)
def test_invalid_settings_exit_2_with_a_message(flags: list[str], words: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "predictor", "serve", *flags], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert words in r.stderr and "Traceback" not in r.stderr


def test_missing_model_dir_fails_fast_with_a_clear_message(tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "predictor", "serve", "--model_dir", str(tmp_path / "nope"), "--http_port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    assert "is not a model directory" in r.stderr


def test_help_shows_each_flags_default_choices_and_env_var() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "predictor", "serve", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # argparse wraps lines
    assert "--device {auto,cpu,cuda}" in text and "--backend {auto,torch,openvino,onnxruntime}" in text
    assert "--enable_grpc {true,false}" in text and "--max_batch_size INT" in text
    assert "Default: 32. Env: PREDICTOR_MAX_BATCH_SIZE." in text
    assert "VALUE" not in text
    bad = subprocess.run(
        [sys.executable, "-m", "predictor", "serve", "--device", "gpu"], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice: 'gpu'" in bad.stderr and "cuda" in bad.stderr, bad.stderr
    # booleans are case-insensitive, as the chart and env vars write them
    args = build_parser().parse_args(["serve", "--enable_grpc", "True"])
    assert settings_from_args(args).enable_grpc is True
