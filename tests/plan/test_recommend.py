"""``--recommend`` against a wake's panic overshoot, and its candidate space, as a real ``plan`` process."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from classifier_plan.assumptions import Assumptions
from classifier_plan.recommend import knobs

from .conftest import CHART, chart_plan, values_file
from .test_cli import plan, traffic_file

DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
NIGHT = {
    "name": "idle hour, then 1 req/s",
    "duration": "3h",
    "segments": [{"kind": "points", "interpolation": "step", "points": [[0, 0], ["60m", 60]]}],
}
"""An hour idle (pod and node go), then two hours at 1 request/s: a ~3-minute wake onto a new node whose held
requests (~3 % of the day's) still leave the 95 % SLO met."""


def test_recommend_caps_a_wake_that_overshoots_for_less_and_still_meets_the_slo(
    tmp_path: Path, helm: str, synthetic_path: Path
) -> None:
    values = values_file(tmp_path, {"autoscaling": {"minReplicas": 0}})  # the chart's maxReplicas 4, concurrency
    traffic = traffic_file(tmp_path, NIGHT)
    out = tmp_path / "plan"
    common = ("--traffic", traffic, "--capacity", synthetic_path, "--slo-p95-ms", "500", "--no-plots")
    r = plan("--values", values, *common, "--out", out, "--recommend")
    assert r.returncode == 0, r.stderr
    yours = json.loads((out / "summary.json").read_text())
    assert "wake_overshoot" in yours["flags"] and yours["slo_met"]
    assert yours["wakes"][0]["pods_asked"] == 4 and yours["wakes"][0]["pods_needed"] == 1
    assert "plan: WARNING: wake overshoot: 1 of 1 wakes from zero asked for up to 4 pods" in r.stderr
    report = (out / "report.md").read_text()
    assert "**WAKE OVERSHOOT: 1 of 1 wakes from zero asked for up to 4 pods (4 nodes)" in report
    assert "| 4 / 1 **overshoot** | 4 / 1 |" in report  # the wake's row in "Wakes from zero"
    best = json.loads((out / "recommended-summary.json").read_text())
    assert best["slo_met"] and best["cost_usd"] < yours["cost_usd"]
    assert best["flags"] == [] and all(w["pods_asked"] <= w["pods_needed"] for w in best["wakes"])
    assert "Wake overshoot: yours 4 / 1 pods" in report and "recommended none." in report
    # the override, applied after the user's values, simulates to the same numbers
    again = tmp_path / "again"
    r2 = plan("--values", values, "--values", out / "recommended-values.yaml", *common, "--out", again)
    assert r2.returncode == 0, r2.stderr
    assert json.loads((again / "summary.json").read_text()) == best


def test_recommend_says_so_when_no_candidate_meets_the_slo(tmp_path: Path, helm: str, synthetic_path: Path) -> None:
    """A 1 ms SLO: no pod answers that fast (10 ms for one image), whatever the autoscaling."""
    values = values_file(tmp_path, {"autoscaling": {"maxReplicas": 2}})
    traffic = traffic_file(
        tmp_path, {"name": "steady", "duration": "2m", "segments": [{"kind": "points", "points": [[0, 600]]}]}
    )
    out = tmp_path / "plan"
    r = plan("--values", values, "--traffic", traffic, "--capacity", synthetic_path, "--slo-p95-ms", "1",
             "--out", out, "--no-plots", "--recommend")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "no candidate met the SLO for less than your values; no recommended-values.yaml written" in r.stderr
    assert "**No candidate met the SLO**" in (out / "report.md").read_text()
    assert not (out / "recommended-values.yaml").exists()


def test_knative_candidates_include_the_wake_cap_activation_and_initial_scale(tmp_path: Path, helm: str) -> None:
    user = {"autoscaling": {"minReplicas": 0, "maxReplicas": 8}}
    kn_plan = chart_plan(tmp_path, user)
    space, notes = knobs(DEFAULTS, user, kn_plan, needed=6, assumptions=Assumptions(), wake_needed=1)
    assert {1, 2, 6, 8, 12} <= set(space["autoscaling.maxReplicas"])  # the wake's 1 pod caps the overshoot
    assert space["autoscaling.knative.metric"] == ["concurrency", "rps"]
    assert space["autoscaling.knative.activationScale"] == [None, 2, 6]  # Knative accepts 2 and up
    assert "autoscaling.knative.initialScale" not in space
    assert any("allow-zero-initial-scale" in n for n in notes)
    allowed, notes = knobs(DEFAULTS, user, kn_plan, 6, Assumptions(knative_allow_zero_initial_scale=True), 1)
    assert allowed["autoscaling.knative.initialScale"] == [0] and notes == []
    standard = {"deploymentMode": "Standard", "autoscaling": {"minReplicas": 1}}
    std_space, _ = knobs(DEFAULTS, standard, chart_plan(tmp_path, standard), 6, Assumptions(), 0)
    assert not [k for k in std_space if k.startswith("autoscaling.knative.")]
