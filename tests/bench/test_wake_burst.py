"""Smoke test of the wake-burst bench (bench/wake_burst.py): a fresh real server on the tiny model, a burst
at its first ready, the answers counted. Asserts behaviour, not speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.wake_burst import main
from tests.support.servers import REPO

pytestmark = pytest.mark.slow


def test_a_burst_at_ready_is_answered_and_counted(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "wake.json"
    argv = ["--server", f"after={REPO}", "--model_dir", str(tiny_model_dir), "--burst", "12", "--rounds", "1",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["server"] == "after" and run["burst"] == 12
    assert run["status"] == {"200": 12}, run  # a fresh pod admits a burst it can drain within the budget
    assert 0 < run["ok_p50_ms"] <= run["ok_p99_ms"]
    assert json.loads(capsys.readouterr().out.strip()) == run
