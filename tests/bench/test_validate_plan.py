"""Smoke test of the planner's check against the real server (bench/validate_plan.py): a real server on the
tiny model, the simulator on a capacity profile, both at the same open-loop rate, in the JSON and the table.
Asserts that the tool runs and reports, not how close the two are (that is measured, docs/capacity.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.validate_plan import main
from tests.support.servers import REPO

pytestmark = pytest.mark.slow

PROFILE = REPO / "classifier_plan" / "data" / "capacity" / "cpu-epyc-2c-efficientnet-lite0.json"


def test_a_short_validation_compares_the_real_pod_with_the_simulated_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    out, md = tmp_path / "validate.json", tmp_path / "validate.md"
    argv = ["--capacity", str(PROFILE), "--model_dir", str(tiny_model_dir), "--fractions", "0.2",
            "--duration", "2", "--warmup", "0.5", "--rounds", "1", "--retries", "0", "--allow_busy",
            "--out", str(out), "--md", str(md)]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert row["rate_per_s"] == pytest.approx(0.2 * res["capacity_img_per_s"], abs=0.01)
    assert row["real"]["p95_ms"] > 0 and row["real"]["share_503"] == 0 and row["real"]["errors"] == {}
    assert row["sim"]["p95_ms"] > 0 and row["sim"]["share_503"] == 0
    assert {"p95_ok", "share_ok", "share_503_diff_points"} <= set(row)
    assert "points meet both targets" in md.read_text()
