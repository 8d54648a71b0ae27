"""``python -m predictor plan`` end to end as a real process: outputs, bad input, --recommend."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from classifier_plan.results import COLUMNS

from .conftest import REPO, values_file

SUMMARY_KEYS = {
    "requests_offered",
    "requests_refused",
    "requests_timed_out",
    "p95_ms",
    "slo_attainment",
    "peak_ready_replicas",
    "time_to_first_ready_s_after_idle",
    "cost_usd",
    "cost_per_month_if_repeated_usd",
    "baseline_cost_per_month_usd",
    "savings_ratio",
}
PLOTS = {"traffic.png", "replicas.png", "nodes.png", "queue.png", "latency.png", "refused.png", "cost.png"}


def plan(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "predictor", "plan", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )


def traffic_file(tmp_path: Path, data: dict, name: str = "traffic.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


SHORT = {
    "name": "short spike",
    "duration": "10m",
    "segments": [
        {"kind": "points", "points": [[0, 600]]},
        {"kind": "spike", "at": "2m", "duration": "4m", "rate_per_min": 9000, "ramp": "20s", "mode": "set"},
    ],
}


def test_plan_writes_report_plots_timeline_and_summary(tmp_path: Path, helm: str, synthetic_path: Path) -> None:
    values = values_file(
        tmp_path, {"autoscaling": {"maxReplicas": 5, "knative": {"target": 2}}, "image": {"tag": "1.2.3"}}
    )
    out = tmp_path / "plan"
    r = plan(
        "--values",
        values,
        "--traffic",
        traffic_file(tmp_path, SHORT),
        "--capacity",
        synthetic_path,
        "--slo-p95-ms",
        "500",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    assert "SLO" in r.stderr
    files = {p.name for p in out.iterdir()}
    assert {"report.md", "timeline.csv", "summary.json"} | PLOTS <= files
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in PLOTS)
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["peak_ready_replicas"] > 1 and summary["engine"] == "request"
    rows = list(csv.reader((out / "timeline.csv").open()))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 1 + 600
    report = (out / "report.md").read_text()
    assert "`image.tag` = `1.2.3`: changes the manifests, not what is simulated" in report
    assert "desired 1 ->" in report and "## Assumptions" in report
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".plan.")]  # no temporary left behind


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("traffic-unknown-key", "traffic.yaml: peak: unknown key (accepted: name, description, duration"),
        ("traffic-negative-rate", "traffic.yaml: segments.0.points.0.1: Input should be greater than or equal to 0"),
        ("values-do-not-render", "values.yaml: autoscaling.minReplicas: does not render"),
        ("values-unknown-key", "values.yaml: autoscaling.bogus: does not render"),
        ("prices-unknown-key", "prices.yaml: instances.g6.2xlarge.gpu_count: unknown key"),
        ("assume-unknown", "--assume: node_boot_s: unknown key (accepted: node_launch_s"),
        ("capacity-missing", "no such file; run `make bench-capacity`"),
    ],
)
def test_bad_input_exits_2_and_leaves_out_alone(
    tmp_path: Path, helm: str, synthetic_path: Path, case: str, says: str
) -> None:
    out = tmp_path / "plan"
    out.mkdir()
    (out / "keep.txt").write_text("earlier plan")
    traffic = traffic_file(tmp_path, SHORT)
    args: list[str | Path] = ["--traffic", traffic, "--capacity", synthetic_path, "--out", out, "--no-plots"]
    if case == "traffic-unknown-key":
        args[1] = traffic_file(tmp_path, {**SHORT, "peak": 3})
    elif case == "traffic-negative-rate":
        args[1] = traffic_file(tmp_path, {**SHORT, "segments": [{"kind": "points", "points": [[0, -1]]}]})
    elif case == "values-do-not-render":
        args += ["--values", values_file(tmp_path, {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}})]
    elif case == "values-unknown-key":
        args += ["--values", values_file(tmp_path, {"autoscaling": {"bogus": True}})]
    elif case == "prices-unknown-key":
        prices = yaml.safe_load((REPO / "classifier_plan" / "data" / "prices.yaml").read_text())
        prices["instances"]["g6.2xlarge"]["gpu_count"] = 1
        (tmp_path / "prices.yaml").write_text(yaml.safe_dump(prices))
        args += ["--prices", tmp_path / "prices.yaml"]
    elif case == "assume-unknown":
        args += ["--assume", "node_boot_s=3"]
    elif case == "capacity-missing":
        args[3] = tmp_path / "nope.json"
    r = plan(*args)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".plan")] == []


def test_recommend_returns_values_that_meet_the_slo_when_simulated_again(
    tmp_path: Path, helm: str, synthetic_path: Path
) -> None:
    # A spike of 500 req/s against one pod of 320 img/s: the user's single replica misses the SLO.
    values = values_file(tmp_path, {"autoscaling": {"maxReplicas": 1, "knative": {"target": 2}}})
    spike = {**SHORT["segments"][1], "rate_per_min": 30000}
    traffic = traffic_file(tmp_path, {**SHORT, "duration": "8m", "segments": [SHORT["segments"][0], spike]})
    out = tmp_path / "plan"
    r = plan(
        "--values",
        values,
        "--traffic",
        traffic,
        "--capacity",
        synthetic_path,
        "--slo-p95-ms",
        "200",
        "--out",
        out,
        "--no-plots",
        "--recommend",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["slo_met"] is False
    recommended = out / "recommended-values.yaml"
    assert recommended.exists(), (out / "report.md").read_text()
    # off a terminal (stderr is a pipe here) every candidate still reports: a long search is never silent
    searched = int(
        next(ln for ln in (out / "report.md").read_text().splitlines() if ln.startswith("Searched")).split()[1]
    )
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("plan: recommend: candidate ")]
    assert len(said) == searched and said[0].startswith("plan: recommend: candidate 1 ("), r.stderr
    assert "no recommended-values.yaml written" not in r.stderr
    again = tmp_path / "again"
    r2 = plan(
        "--values",
        values,
        "--values",
        recommended,
        "--traffic",
        traffic,
        "--capacity",
        synthetic_path,
        "--slo-p95-ms",
        "200",
        "--out",
        again,
        "--no-plots",
    )
    assert r2.returncode == 0, r2.stderr
    summary = json.loads((again / "summary.json").read_text())
    assert summary["slo_met"] is True and summary["slo_attainment"] >= 0.95
    assert summary == json.loads((out / "recommended-summary.json").read_text())


def test_recommend_with_nothing_cheaper_writes_no_override_and_says_so(
    tmp_path: Path, helm: str, synthetic_path: Path
) -> None:
    """One pod is the least any candidate can run, and it meets the SLO: no candidate is cheaper."""
    values = values_file(tmp_path, {"autoscaling": {"minReplicas": 1, "maxReplicas": 1}})
    traffic = traffic_file(tmp_path, {**SHORT, "duration": "5m", "segments": [SHORT["segments"][0]]})
    out = tmp_path / "plan"
    r = plan("--values", values, "--traffic", traffic, "--capacity", synthetic_path, "--out", out, "--no-plots",
             "--recommend")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["slo_met"] is True
    assert not (out / "recommended-values.yaml").exists() and not (out / "recommended-summary.json").exists()
    assert (
        "plan: --recommend: no candidate met the SLO for less than your values; no recommended-values.yaml" in r.stderr
    )
    assert "no candidate was cheaper: nothing to change" in (out / "report.md").read_text()
