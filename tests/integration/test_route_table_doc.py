"""docs/security.md's route table equals the routes the real app mounts, with every optional route off and
on: built by ``python -m predictor routes`` exactly as ``serve`` builds it, KServe's routes included, so a
route added by us or by a KServe upgrade fails here until the table lists it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import DEFAULT_MODEL_DIR, REPO

DOC = REPO / "docs" / "security.md"
Row = tuple[str, tuple[str, ...], bool]
"""(path, sorted methods, public)"""


def documented() -> list[tuple[Row, str]]:
    """(row, mounted-when condition) of the table after ``<!-- route-table -->``."""
    lines = DOC.read_text().split("<!-- route-table -->", 1)[1].strip().splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        path, methods, public, when, _purpose = (c.strip() for c in line.strip("|").split("|"))
        assert public in ("yes", "no: admin token"), line
        rows.append(((path.strip("`"), tuple(sorted(m.strip() for m in methods.split(","))), public == "yes"), when))
    return rows


CONDITIONS = {
    "always": lambda s: True,
    "`http_metrics_port=0`": lambda s: s["http_metrics_port"] == "0",
    "`enable_ui=false`": lambda s: s["enable_ui"] == "false",
    "`enable_ui=true`": lambda s: s["enable_ui"] == "true",
    "`enable_docs_url=true`": lambda s: s["enable_docs_url"] == "true",
    "`redis_url` set": lambda s: bool(s["redis_url"]),
    "`enable_model_repository_routes=true`": lambda s: s["enable_model_repository_routes"] == "true",
}


def mounted(flags: dict[str, str]) -> list[Row]:
    args = [sys.executable, "-m", "predictor", "routes", "--json", "--model_dir", str(DEFAULT_MODEL_DIR)]
    for k, v in flags.items():
        args += [f"--{k}", v]
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return [(x["path"], tuple(x["methods"]), x["public"]) for x in json.loads(r.stdout)]


OFF = {
    "enable_ui": "false",
    "enable_docs_url": "false",
    "redis_url": "",
    "enable_model_repository_routes": "false",
    "http_metrics_port": "0",
}


def on(token_file: Path) -> dict[str, str]:
    return {
        "enable_ui": "true",
        "enable_docs_url": "true",
        "redis_url": "redis://127.0.0.1:1/0",  # never contacted: nothing is served
        "enable_model_repository_routes": "true",
        "admin_token_file": str(token_file),
        "http_metrics_port": "9095",
    }


def test_every_condition_in_the_table_is_understood():
    assert {when for _, when in documented()} <= set(CONDITIONS)


@pytest.mark.parametrize("optional", ["off", "on"])
def test_the_documented_routes_are_the_mounted_routes(optional: str, tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text("t")
    flags = OFF if optional == "off" else on(token_file)
    expected = sorted(row for row, when in documented() if CONDITIONS[when](flags))
    actual = mounted(flags)
    assert len(actual) == len(set(actual)), "a route is mounted twice"
    assert sorted(actual) == expected, {
        "mounted, not documented": sorted(set(actual) - set(expected)),
        "documented, not mounted": sorted(set(expected) - set(actual)),
    }
    assert [r for r in actual if not r[2]] == (
        [] if optional == "off" else [r for r in actual if r[0].startswith("/v2/repository/")]
    )
