"""Which engine ``--engine auto`` runs, and the report's flags for requests lost while no pod was ready."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier_plan.fidelity import REQUEST_ENGINE_MAX, choose_engine
from classifier_plan.traffic import TrafficProfile

from .conftest import make_setup, values_file
from .test_cli import plan, traffic_file

KPA = {"autoscaling": {"minReplicas": 0, "maxReplicas": 4}}


def rate_for(requests: float, duration_s: float) -> float:
    return requests / duration_s * 60.0


def traffic(requests: float, duration: str = "1d", seconds: float = 86400.0) -> TrafficProfile:
    return TrafficProfile.model_validate(
        {
            "name": "t",
            "duration": duration,
            "segments": [{"kind": "points", "points": [[0, rate_for(requests, seconds)]]}],
        }
    )


def test_auto_runs_the_request_engine_up_to_the_threshold_then_the_fluid_engine(tmp_path: Path, helm, profile) -> None:
    s = make_setup(tmp_path, helm, KPA, profile)
    small = choose_engine(s, traffic(REQUEST_ENGINE_MAX * 0.9), "auto", None)
    assert (small.engine, small.step_s, small.notes) == ("request", 1.0, [])
    big = choose_engine(s, traffic(REQUEST_ENGINE_MAX * 2), "auto", None)
    assert big.engine == "fluid" and big.step_s == 1.0
    assert "test_engine_agreement" in big.notes[0]
    month = choose_engine(s, traffic(REQUEST_ENGINE_MAX * 2, "30d", 30 * 86400.0), "auto", None)
    assert (month.engine, month.step_s) == ("fluid", 5.0)


def test_auto_never_takes_a_fluid_step_the_cross_check_does_not_hold_at(tmp_path: Path, helm, profile) -> None:
    s = make_setup(tmp_path, helm, KPA, profile)
    big = traffic(REQUEST_ENGINE_MAX * 2)
    coarse = choose_engine(s, big, "auto", 30.0)  # asked for 30 s steps: not checked, so request by request
    assert coarse.engine == "request"
    assert "not faithful" in coarse.notes[0] and "longer than the 5 s" in coarse.notes[0]
    forced = choose_engine(s, big, "fluid", 30.0)  # forced: runs, and the report says what is not checked
    assert forced.engine == "fluid" and "forced by --engine fluid" in forced.notes[0]
    short_timeout = make_setup(tmp_path, helm, {**KPA, "settings": {"request_timeout_ms": 4000}}, profile)
    quick = choose_engine(short_timeout, big, "auto", 1.0)
    assert quick.engine == "request" and "request_timeout_ms (4 s) is under 10 one-second steps" in quick.notes[0]


def test_the_report_flags_requests_that_timed_out_during_a_wake(tmp_path: Path, helm, synthetic_path: Path) -> None:
    """Idle long enough for the node to go, then requests: the wake (node launch, image pull, cold start)
    outlasts the revision timeout, and the activator's 504s are flagged in the report and on stderr."""
    # a cold-start budget far below the real wake (the chart sizes the revision timeout from it: 20 + 40 s)
    values = values_file(tmp_path, {"autoscaling": {"minReplicas": 0, "maxReplicas": 2, "coldStartSeconds": 20}})
    t = traffic_file(
        tmp_path,
        {
            "name": "wake",
            "duration": "17m",
            "segments": [{"kind": "points", "interpolation": "step", "points": [[0, 0], ["13m", 240], ["15m", 0]]}],
        },
    )
    out = tmp_path / "plan"
    args = ("--values", values, "--traffic", t, "--capacity", synthetic_path, "--out", out, "--no-plots")
    r = plan(*args, "--engine", "fluid")
    assert r.returncode == 0, r.stderr
    assert "WARNING" in r.stderr and "timed out waiting for a wake from zero" in r.stderr
    report = (out / "report.md").read_text()
    assert "WAKE TIMEOUTS" in report and "revision timeout" in report
    import json

    s = json.loads((out / "summary.json").read_text())
    assert s["requests_timed_out_waking"] > 0 and s["requests_timed_out_waking"] <= s["requests_timed_out"]
    assert s["requests_refused_no_pods"] == 0


def test_a_standard_mode_plan_at_zero_is_refused_by_the_chart_with_the_alternatives(
    tmp_path: Path, helm, synthetic_path: Path
) -> None:
    """Standard mode with KEDA on the predictor's own metrics cannot wake from zero (the triggers read 0 when
    no pod exists): the chart refuses it, naming what works, and so does the plan built on it."""
    values = values_file(
        tmp_path,
        {
            "deploymentMode": "Standard",
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": 3,
                "standard": {"autoscaler": "keda", "keda": {"prometheusAddress": "http://p:9090"}},
            },
        },
    )
    t = traffic_file(
        tmp_path, {"name": "gap", "duration": "16m", "segments": [{"kind": "points", "points": [[0, 60]]}]}
    )
    r = plan("--values", values, "--traffic", t, "--capacity", synthetic_path, "--out", tmp_path / "plan", "--no-plots")
    assert r.returncode == 2, r.stderr
    assert "httpAddon" in r.stderr and "Knative" in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["knative-idle-zero-wake", "standard-keda-zero"])
def test_idle_pods_reach_zero_in_both_engines(name: str, tmp_path: Path, helm) -> None:
    """The cross-check's zero scenarios do go to zero (an idle pod reads 0 in the fluid engine too, so
    KPA's and KEDA's signals fall to 0); Knative then wakes on the next request, Standard mode never does."""
    from classifier_plan import simulate
    from classifier_plan.capacity import CapacityProfile
    from classifier_plan.results import COLUMNS

    from .conftest import SYNTHETIC
    from .test_engine_agreement import SCENARIOS

    sc = SCENARIOS[name]
    s = make_setup(tmp_path, helm, sc.values, CapacityProfile.model_validate(SYNTHETIC), sc.min_replicas, **sc.assume)
    for engine in ("request", "fluid"):
        rec, summary = simulate.run(s, sc.traffic, sc.slo_ms, engine)
        ready = rec.table()[:, COLUMNS.index("ready_replicas")]
        assert ready.min() == 0, engine
        if name.startswith("knative"):
            assert summary["wakes_from_zero"] == 1 and ready[600:].max() >= 1, engine  # woke at 10 min
        else:
            assert ready[-1] == 0 and summary["requests_refused_no_pods"] == summary["requests_offered"] > 0, engine
