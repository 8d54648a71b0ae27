"""KPA decider against worked examples from Knative's docs and autoscaler.go's rules (hand-computed)."""

from __future__ import annotations

import math

import pytest

from classifier_plan.kpa import Kpa, KpaConfig, KpaScaler, resolve_target


def feed(kpa: Kpa, start: float, seconds: int, value: float) -> float:
    """One sample per second from ``start``; returns the last time."""
    t = start
    for i in range(seconds):
        t = start + i
        kpa.record(t, value)
    return t


@pytest.mark.parametrize(
    ("metric", "annotation", "cc", "tu", "expected"),
    [
        ("concurrency", None, 0, None, 70.0),  # container-concurrency-target-default 100 x 70 %
        ("concurrency", 32.0, 0, None, 22.4),  # the chart's default: target 32 x 70 %
        ("concurrency", 32.0, 10, None, 7.0),  # containerConcurrency caps the annotation target
        ("concurrency", 32.0, 0, 1.0, 32.0),  # target-utilization-percentage 100
        ("rps", None, 0, None, 140.0),  # requests-per-second-target-default 200 x 70 %
        ("rps", 50.0, 5, None, 35.0),  # containerConcurrency does not cap an rps target
    ],
)
def test_target_resolution(metric: str, annotation: float | None, cc: int, tu: float | None, expected: float) -> None:
    assert resolve_target(metric, annotation, cc, tu) == pytest.approx(expected)


def test_stable_mode_desired_is_ceil_of_average_over_target() -> None:
    # Knative docs: 50 concurrent requests at target 10 -> 5 pods (one pod ready, below the panic threshold
    # only once the pods are there: start with 5 ready).
    kpa = Kpa(KpaConfig(target=10.0))
    t = feed(kpa, 0, 60, 50.0)
    assert kpa.decide(t, ready_pods=5) == 5
    assert not kpa.in_panic
    t = feed(kpa, 60, 60, 43.0)
    assert kpa.decide(t, ready_pods=5) == 5  # ceil(4.3)


def test_panic_enters_at_twice_the_ready_pods_and_leaves_one_stable_window_later() -> None:
    kpa = Kpa(KpaConfig(target=10.0))
    t = feed(kpa, 0, 60, 5.0)
    assert kpa.decide(t, ready_pods=1) == 1 and not kpa.in_panic
    # A burst: the 6-second panic window sees 25 -> dppc 3 >= 2.0 x 1 ready pod: panic, 3 pods.
    t = feed(kpa, 60, 6, 25.0)
    assert kpa.decide(t, ready_pods=1) == 3
    assert kpa.in_panic
    entered = t
    # Load falls back; still in panic (and never lower) until a stable window after the last over-threshold tick.
    t = feed(kpa, t + 1, 30, 1.0)
    assert kpa.decide(t, ready_pods=3) == 3 and kpa.in_panic
    t = feed(kpa, t + 1, int(entered + 60 - t), 1.0)
    assert kpa.decide(t, ready_pods=3) == 3 and kpa.in_panic  # exactly 60 s: not yet "before now"
    t = feed(kpa, t + 1, 2, 1.0)
    desired = kpa.decide(t, ready_pods=3)
    assert not kpa.in_panic
    assert desired == 1  # stable average now below one pod; floor(3 / 2) = 1 allows it


def test_no_scale_down_while_panicking() -> None:
    kpa = Kpa(KpaConfig(target=10.0))
    feed(kpa, 0, 10, 100.0)
    assert kpa.decide(9, ready_pods=1) == 10  # dppc 10 >= 2: panic at 10
    for t0 in range(10, 60, 2):
        feed(kpa, t0, 2, 20.0)  # would be 2 pods in stable mode
        assert kpa.decide(t0 + 1, ready_pods=10) == 10


def test_scale_down_limited_by_max_scale_down_rate() -> None:
    kpa = Kpa(KpaConfig(target=10.0))
    t = feed(kpa, 0, 60, 0.0)
    assert kpa.decide(t, ready_pods=10) == 5  # floor(10 / 2.0)
    assert kpa.decide(t, ready_pods=1) == 0  # floor(1 / 2) = 0: zero is allowed


def test_scale_up_limited_by_max_scale_up_rate() -> None:
    kpa = Kpa(KpaConfig(target=1.0, max_scale_up_rate=2.0, panic_threshold_pct=100000))
    t = feed(kpa, 0, 60, 100.0)
    assert kpa.decide(t, ready_pods=3) == 6  # ceil(2.0 x 3)


def test_scale_down_delay_holds_the_highest_count_of_the_window() -> None:
    kpa = Kpa(KpaConfig(target=10.0, stable_window_s=6, panic_threshold_pct=100000, scale_down_delay_s=20))
    t = feed(kpa, 0, 6, 80.0)
    assert kpa.decide(t, ready_pods=8) == 8
    t = feed(kpa, 6, 8, 0.0)
    assert kpa.decide(t, ready_pods=8) == 8  # held: the 8 of t=5 is inside the 20 s window
    t = feed(kpa, 14, 12, 0.0)
    assert kpa.decide(t, ready_pods=8) == 4  # window passed: floor(8 / 2)


def test_no_decision_without_data() -> None:
    assert Kpa(KpaConfig(target=10.0)).decide(0.0, ready_pods=1) is None


def test_scaler_bounds_and_scale_to_zero_grace() -> None:
    sc = KpaScaler(min_scale=0, max_scale=4, grace_s=30.0)
    assert sc.apply(0.0, 9, current=2) == 4  # max-scale
    assert sc.apply(1.0, 0, current=1) == 1  # zero wanted: the pod stays for the grace period
    assert sc.apply(30.0, 0, current=1) == 1
    assert sc.apply(31.0, 0, current=1) == 0  # 30 s of wanting zero
    assert sc.apply(32.0, 1, current=0) == 1  # traffic back


def test_scaler_respects_min_scale() -> None:
    sc = KpaScaler(min_scale=2, max_scale=0, grace_s=30.0)
    assert sc.apply(0.0, 0, current=3) == 2
    assert sc.apply(0.0, 500, current=3) == 500  # max 0 = unbounded


def test_new_decider_with_pods_starts_in_panic() -> None:
    kpa = Kpa(KpaConfig(target=10.0), ready_at_start=4, now=0.0)
    feed(kpa, 0, 10, 1.0)
    assert kpa.decide(9, ready_pods=4) == 4  # keeps its pods until it has a stable window of data
    assert math.isclose(kpa.observed(9)[0], 1.0)


def test_a_window_of_zeros_reads_zero_after_float_drift() -> None:
    kpa = Kpa(KpaConfig(target=22.4))
    t = feed(kpa, 0, 60, 0.1 + 0.2)  # values whose sums do not cancel exactly in binary
    t = feed(kpa, t + 1, 61, 0.0)
    assert kpa.observed(t) == (0.0, 0.0)
    assert kpa.decide(t, ready_pods=1) == 0


# ------------------------------------------------- activation-scale (autoscaler.go: the least non-zero count)


def test_activation_scale_is_the_first_step_of_a_wake_from_zero() -> None:
    # One request held at the activator, 0 ready pods (counted as 1): dspc = ceil(1 / 10) = 1, raised to 3.
    kpa = Kpa(KpaConfig(target=10.0, activation_scale=3))
    t = feed(kpa, 0, 2, 1.0)
    assert kpa.decide(t, ready_pods=0) == 3
    plain = Kpa(KpaConfig(target=10.0))
    feed(plain, 0, 2, 1.0)
    assert plain.decide(t, ready_pods=0) == 1


def test_activation_scale_stays_a_floor_while_traffic_lasts_and_never_lowers_a_count() -> None:
    kpa = Kpa(KpaConfig(target=10.0, activation_scale=3))
    t = feed(kpa, 0, 120, 0.5)  # half a request in flight: one pod's worth, held at 3
    assert kpa.decide(t, ready_pods=3) == 3 and not kpa.in_panic
    t = feed(kpa, t + 1, 120, 70.0)  # load that needs 7 pods: activation-scale does not cap it
    assert kpa.decide(t, ready_pods=7) == 7


def test_activation_scale_lets_an_idle_revision_go_to_zero() -> None:
    kpa = Kpa(KpaConfig(target=10.0, activation_scale=3))
    t = feed(kpa, 0, 60, 5.0)
    t = feed(kpa, t + 1, 61, 0.0)  # a stable window of nothing: dspc = dppc = 0, no floor
    assert kpa.decide(t, ready_pods=3) == 1  # floor(3 / max-scale-down-rate 2), not activation-scale's 3
    assert kpa.decide(t + 2, ready_pods=1) == 0


@pytest.mark.parametrize("scale", [0, 1])
def test_activation_scale_below_two_changes_nothing(scale: int) -> None:
    kpa = Kpa(KpaConfig(target=10.0, activation_scale=scale))
    t = feed(kpa, 0, 2, 1.0)
    assert kpa.decide(t, ready_pods=0) == 1
