"""Wakes from zero in both engines: activation-scale and initial-scale as Knative applies them, the panic
overshoot of a long wake quantified and flagged, and requests timed out during a wake flagged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifier_plan import simulate
from classifier_plan.control import Controller
from classifier_plan.report import _plan_lines
from classifier_plan.results import COLUMNS
from classifier_plan.traffic import TrafficProfile

from .conftest import chart_plan, make_setup

COL = {c: i for i, c in enumerate(COLUMNS)}
ENGINES = ["request", "fluid"]

NIGHT = TrafficProfile.model_validate(
    {
        "name": "idle hour, then 1 req/s",
        "duration": "2h",
        "segments": [{"kind": "points", "interpolation": "step", "points": [[0, 0], ["60m", 60]]}],
    }
)
"""An hour idle (the pod goes after 6.5 minutes, its node 10 minutes later), then 1 request/s for an hour:
a wake onto a new node (node launch 90 s, image pull 60 s, ...: ~3 minutes), and one pod is plenty."""


def _first_wake_step(table: np.ndarray) -> tuple[int, int]:
    """(desired before, desired after) at the first change out of 0 replicas after the first hour."""
    d = table[:, COL["desired_replicas"]]
    late = np.flatnonzero((table[:, COL["t_s"]] >= 3600) & (d > 0))[0]
    return int(d[late - 1]), int(d[late])


def test_activation_scale_and_initial_scale_are_read_from_the_rendered_revision(tmp_path: Path, helm: str) -> None:
    plan = chart_plan(tmp_path, {"autoscaling": {"minReplicas": 0, "knative": {"activationScale": 3}}})
    assert plan.knative is not None and plan.knative.activation_scale == 3 and plan.knative.initial_scale is None
    plain = chart_plan(tmp_path, {"autoscaling": {"minReplicas": 0, "knative": {"initialScale": 0}}})
    assert plain.knative is not None and plain.knative.activation_scale is None and plain.knative.initial_scale == 0
    assert any("activation-scale 3, initial-scale the cluster default" in line for line in _plan_lines(plan))
    assert any("activation-scale none, initial-scale 0" in line for line in _plan_lines(plain))


@pytest.mark.parametrize(("allow", "pods"), [(False, 1), (True, 0)])
def test_initial_scale_zero_needs_the_cluster_flag(tmp_path: Path, helm: str, profile, allow: bool, pods: int) -> None:
    """GetInitialScale: a revision's initial-scale 0 counts only with allow-zero-initial-scale."""
    values = {"autoscaling": {"minReplicas": 0, "knative": {"initialScale": 0}}}
    s = make_setup(tmp_path, helm, values, profile, knative_allow_zero_initial_scale=allow)
    ctrl = Controller(s, None, None)  # type: ignore[arg-type]
    assert ctrl.initial_replicas() == pods
    assert any("allow-zero-initial-scale" in n for n in s.notes) is (not allow)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_wake_asks_for_activation_scale_at_once(tmp_path: Path, helm: str, profile, engine: str) -> None:
    """With the rps metric (a held request counts once) the wake's own count is ceil(1 / 140) = 1: the first
    step out of zero is activation-scale's 3, and it stays while requests come (Knative's min non-zero)."""
    rps = {"minReplicas": 0, "maxReplicas": 4, "knative": {"metric": "rps"}}
    got = {}
    for scale in (None, 3):
        values = {"autoscaling": {**rps, "knative": {**rps["knative"], "activationScale": scale}}}
        rec, summary = simulate.run(make_setup(tmp_path, helm, values, profile), NIGHT, 500.0, engine)  # type: ignore[arg-type]
        got[scale] = (_first_wake_step(rec.table()), summary)
    assert got[None][0] == (0, 1) and got[3][0] == (0, 3)
    plain, floored = got[None][1], got[3][1]
    assert plain["flags"] == [] and plain["wakes"][0]["pods_asked"] == 1
    assert floored["peak_ready_replicas"] == 3 and floored["wakes"][0]["pods_asked"] == 3
    # two extra nodes from the wake to the end of the run (traffic never stops): what activation-scale costs
    hours = 2 * (NIGHT.duration - floored["wakes"][0]["at_s"]) / 3600
    assert floored["wake_overshoot"]["extra_node_hours"] == pytest.approx(hours, rel=0.02)
    assert "wake_overshoot" in floored["flags"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_long_wake_panics_to_max_scale_and_the_overshoot_is_quantified(
    tmp_path: Path, helm: str, profile, engine: str
) -> None:
    """Requests held for the ~3-minute wake count as concurrency (target 32 x 70 % = 22.4): the KPA panics
    to maxReplicas 4 for a load one pod serves. The extra node-hours and cost are what the same run costs
    beyond one capped at maxReplicas 1 (an independent reference: two runs, their node-hours subtracted)."""
    runs: dict[int, dict[str, Any]] = {}
    for cap in (4, 1):
        values = {"autoscaling": {"minReplicas": 0, "maxReplicas": cap}}
        runs[cap] = simulate.run(make_setup(tmp_path, helm, values, profile), NIGHT, 500.0, engine)[1]  # type: ignore[arg-type]
    over, capped = runs[4], runs[1]
    wake = over["wakes"][0]
    assert wake["at_s"] == pytest.approx(3600, abs=2) and wake["first_ready_after_s"] > 150
    assert (wake["pods_asked"], wake["pods_needed"], wake["nodes_asked"], wake["nodes_needed"]) == (4, 1, 4, 1)
    assert over["flags"] == ["wake_overshoot"] and over["wake_overshoot"]["wakes"] == 1
    hours = sum(over["node_hours"].values()) - sum(capped["node_hours"].values())
    assert wake["extra_node_hours"] == pytest.approx(hours, rel=0.05)
    assert wake["extra_cost_usd"] == pytest.approx(over["cost_usd"] - capped["cost_usd"], rel=0.05)
    month = over["wake_overshoot"]["extra_cost_per_month_if_repeated_usd"]
    assert month == pytest.approx(wake["extra_cost_usd"] * 730 / 2, rel=0.01)
    assert capped["flags"] == [] and capped["wakes"][0]["pods_asked"] == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_every_run_with_requests_timed_out_during_a_wake_is_flagged(
    tmp_path: Path, helm: str, profile, engine: str
) -> None:
    """A cold-start budget far below the real wake: the revision timeout (20 + 30 + 10 s) runs out while the
    node launches, and the run is flagged, with the timeouts attributed to the wake."""
    values = {"autoscaling": {"minReplicas": 0, "maxReplicas": 1, "coldStartSeconds": 20}}
    summary = simulate.run(make_setup(tmp_path, helm, values, profile), NIGHT, 500.0, engine)[1]  # type: ignore[arg-type]
    assert summary["requests_timed_out_waking"] > 0 and "wake_timeouts" in summary["flags"]
    assert summary["wakes"][0]["timed_out"] == pytest.approx(summary["requests_timed_out_waking"], rel=0.05, abs=3)
