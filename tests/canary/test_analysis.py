"""The step/verdict state machine and the judgement of one measurement (pure: no I/O, no clock)."""

from __future__ import annotations

import math

import pytest

from classifier_canary.analysis import Analysis, Measurement, RevisionStats, Verdict, evaluate
from classifier_canary.config import CanaryConfig


def cfg(**kw) -> CanaryConfig:
    base = {
        "isvc": "classifier",
        "prometheus_url": "http://prom:9090",
        "steps": (10, 25, 50, 100),
        "min_requests": 100,
        "max_failed_checks": 2,
        "max_no_data_checks": 3,
    }
    return CanaryConfig(**{**base, **kw})


def rev(name: str, requests=1000.0, err=0.0, shed=0.0, p95=0.100, versions=("v2",), dtypes=("float32",), client=0.0):
    return RevisionStats(name, requests, err, shed, p95, versions, dtypes, client)


def healthy(**canary) -> Measurement:
    return Measurement(600, rev("canary", **canary), rev("stable", p95=0.100, versions=("v1",)))


def test_healthy_canary_walks_every_step_then_promotes():
    a = Analysis(cfg())
    assert a.start().kind == "traffic" and a.start().percent == 10
    decisions = [a.judge(healthy()) for _ in range(3)]
    assert [(d.verdict, d.action.kind, d.action.percent) for d in decisions] == [
        (Verdict.PASS, "traffic", 25),
        (Verdict.PASS, "traffic", 50),
        (Verdict.PROMOTE, "promote", None),
    ]
    assert [(d.step, d.traffic_percent) for d in decisions] == [(1, 10), (2, 25), (3, 50)]
    assert a.done
    with pytest.raises(RuntimeError):
        a.judge(healthy())


def test_total_mode_failed_checks_add_up_over_steps_and_roll_back_at_the_limit():
    a = Analysis(cfg(max_failed_checks=2, count_failed_checks="total"))
    bad = healthy(err=0.02)
    d1 = a.judge(bad)
    assert (d1.verdict, d1.action.kind, d1.failed_checks, d1.traffic_percent) == (Verdict.FAIL, "stay", 1, 10)
    assert d1.reasons == ("canary error ratio 2.00% > 1.00%",)
    assert a.judge(healthy()).action.percent == 25  # a pass after a failure moves on ...
    d3 = a.judge(bad)  # ... but the failure still counts
    assert (d3.verdict, d3.action.kind, d3.failed_checks, d3.step) == (Verdict.ROLLBACK, "rollback", 2, 2)
    assert d3.decided_by == ("http",)


def test_consecutive_mode_a_pass_forgives_an_earlier_blip():
    """The default: two blips far apart never roll back a healthy canary; two in a row do."""
    a = Analysis(cfg(max_failed_checks=2))
    bad = healthy(err=0.02)
    assert a.judge(bad).verdict == Verdict.FAIL
    assert a.judge(healthy()).action.percent == 25
    d = a.judge(bad)
    assert (d.verdict, d.failed_checks) == (Verdict.FAIL, 1)
    assert a.judge(bad).verdict == Verdict.ROLLBACK


def test_p95_fails_only_past_both_the_ratio_and_the_margin():
    c = cfg(max_p95_ratio=1.25, min_p95_increase_seconds=0.05)
    # one histogram bucket up (25 -> 50 ms): x2, but +25 ms
    noisy = Measurement(600, rev("canary", p95=0.050), rev("stable", p95=0.025, versions=("v1",)))
    assert evaluate(noisy, c) == ("ok", [])
    slow = Measurement(600, rev("canary", p95=0.489), rev("stable", p95=0.300, versions=("v1",)))
    outcome, reasons = evaluate(slow, c)
    assert outcome == "fail" and reasons[0].startswith("canary p95 489ms is x1.63 the stable's 300ms")
    # 0 margin: the ratio alone, as before
    assert evaluate(noisy, cfg(max_p95_ratio=1.25, min_p95_increase_seconds=0))[0] == "fail"


def test_monitoring_outage_rolls_back_or_holds():
    down = Measurement(600, RevisionStats("c"), RevisionStats("s"), problem="Prometheus unreachable")
    a = Analysis(cfg())
    assert [a.judge(down).verdict for _ in range(2)] == [Verdict.FAIL, Verdict.ROLLBACK]
    h = Analysis(cfg(on_monitoring_outage="hold"))
    held = [h.judge(down) for _ in range(5)]
    assert {d.verdict for d in held} == {Verdict.HOLD} and held[-1].failed_checks == 0
    assert held[0].decided_by == ("monitoring",) and not held[0].new_window and held[0].action.kind == "stay"
    assert h.judge(healthy()).action.percent == 25  # Prometheus back: judged as usual


def test_thresholds_are_inclusive_limits():
    c = cfg(max_error_ratio=0.01, max_shed_ratio=0.005, max_p95_ratio=1.25, min_p95_increase_seconds=0)
    assert evaluate(healthy(err=0.01, shed=0.005, p95=0.125), c) == ("ok", [])
    outcome, reasons = evaluate(healthy(err=0.0101, shed=0.0051, p95=0.126), c)
    assert outcome == "fail"
    assert reasons == [
        "canary error ratio 1.01% > 1.00%",
        "canary shed (503) ratio 0.51% > 0.50%",
        "canary p95 126ms is x1.26 the stable's 100ms > x1.25 and +26ms > +0ms",
    ]


def test_too_few_requests_is_no_data_then_one_failed_check():
    a = Analysis(cfg(max_no_data_checks=3, max_failed_checks=2))
    quiet = Measurement(600, rev("canary", requests=40), rev("stable"))
    d = [a.judge(quiet) for _ in range(3)]
    assert [x.verdict for x in d] == [Verdict.NO_DATA, Verdict.NO_DATA, Verdict.FAIL]
    assert [x.new_window for x in d] == [False, False, True]  # the window grows while waiting for data
    assert d[0].reasons == ("canary canary answered 40.0 requests < min 100",)
    assert d[2].reasons[0] == "not enough data for 3 checks in a row"
    assert (d[2].failed_checks, d[2].no_data_checks) == (1, 0)
    assert a.judge(healthy()).verdict == Verdict.PASS  # enough data again: judged normally


def test_stable_with_too_few_requests_is_no_data_too():
    outcome, reasons = evaluate(Measurement(60, rev("c"), rev("s", requests=3)), cfg())
    assert outcome == "no-data" and reasons == ["stable s answered 3.0 requests < min 100"]


def test_prometheus_problem_and_missing_series_are_failed_checks_never_passes():
    m = Measurement(600, RevisionStats("c"), RevisionStats("s"), problem="Prometheus unreachable: refused")
    assert evaluate(m, cfg()) == ("fail", ["Prometheus unreachable: refused"])
    m = Measurement(600, rev("c", requests=None), rev("s"), missing=("canary revision 'c' in rate",))
    assert evaluate(m, cfg()) == ("fail", ["no series for canary revision 'c' in rate"])


def test_no_latency_value_fails_with_the_reason():
    outcome, reasons = evaluate(healthy(p95=None, err=1.0, shed=1.0), cfg())
    assert outcome == "fail"
    assert "canary p95 has no value: no request of canary was answered and timed" in reasons
    assert "canary error ratio 100.00% > 1.00%" in reasons


def test_model_info_checks():
    assert evaluate(healthy(versions=()), cfg())[1] == [
        "canary canary exports no classifier_model_info: is it our predictor, and scraped?"
    ]
    assert evaluate(healthy(versions=("v2", "v3")), cfg())[1] == ["canary pods serve different model versions: v2, v3"]
    assert evaluate(healthy(), cfg(expect_version="v2", expect_dtype="fp32")) == ("ok", [])
    assert evaluate(healthy(), cfg(expect_version="v9", expect_dtype="fp16"))[1] == [
        "canary serves model version v2, expected v9",
        "canary serves dtype float32, expected float16",
    ]


def test_p95_ratio():
    assert healthy(p95=0.25).p95_ratio == pytest.approx(2.5)
    assert Measurement(1, rev("c", p95=0.1), rev("s", p95=0.0)).p95_ratio == math.inf
    assert Measurement(1, rev("c", p95=None), rev("s")).p95_ratio is None


def test_canary_never_ready_rolls_back_before_any_step():
    a = Analysis(cfg())
    d = a.canary_not_ready("canary not ready after 600s")
    assert (d.verdict, d.action.kind, d.step, d.reasons) == (
        Verdict.ROLLBACK,
        "rollback",
        0,
        ("canary not ready after 600s",),
    )
    assert a.done


def test_two_steps_is_the_shortest_run():
    a = Analysis(cfg(steps=(50, 100)))
    assert a.judge(healthy()).verdict == Verdict.PROMOTE


@pytest.mark.parametrize(
    ("canary", "stable", "failed"),
    [
        (0.0, 0.0, False),
        (0.05, 0.05, False),  # the same bad clients reach both revisions: not the canary's fault
        (0.059, 0.05, False),  # within the allowed increase (0.01)
        (0.061, 0.05, True),
        (1.0, 0.0, True),  # refuses everything the stable serves
    ],
)
def test_a_canary_refusing_what_the_stable_serves_fails(canary: float, stable: float, failed: bool) -> None:
    m = Measurement(600, rev("canary", client=canary), rev("stable", versions=("v1",), client=stable))
    verdict, reasons = evaluate(m, cfg(max_client_error_increase=0.01))
    assert (verdict == "fail") is failed, reasons
    if failed:
        assert reasons == [
            f"canary client-error (4xx) ratio {100 * canary:.2f}% > the stable's {100 * stable:.2f}% + 1.00%"
        ]


def test_no_client_error_series_is_a_failed_check_not_a_pass() -> None:
    m = Measurement(600, rev("canary", client=None), rev("stable", versions=("v1",)))
    assert evaluate(m, cfg()) == ("fail", ["client-error (4xx) ratio has no value"])
