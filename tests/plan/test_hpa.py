"""HPA against the worked examples of the Kubernetes HPA page and the controller's rules (hand-computed)."""

from __future__ import annotations

from classifier_plan import hpa
from classifier_plan.hpa import DEFAULT_DOWN, DEFAULT_UP, Hpa, Policy, Rules


def test_docs_formula_doubles_and_halves() -> None:
    # "if the current metric value is 200m, and the desired value is 100m, the number of replicas will be
    # doubled ... if the current value is instead 50m, you'll halve the number of replicas".
    assert hpa.resource_replicas(2, [200.0, 200.0], 0, 100.0) == 4
    assert hpa.resource_replicas(4, [50.0] * 4, 0, 100.0) == 2


def test_tolerance_skips_small_ratios() -> None:
    assert hpa.resource_replicas(3, [108.0] * 3, 0, 100.0) == 3  # ratio 1.08 within 0.1
    assert hpa.resource_replicas(3, [111.0] * 3, 0, 100.0) == 4  # ceil(1.11 x 3)
    assert hpa.resource_replicas(3, [91.0] * 3, 0, 100.0) == 3
    assert hpa.resource_replicas(3, [111.0] * 3, 0, 100.0, tolerance=0.2) == 3


def test_unready_pods_count_as_zero_when_scaling_up() -> None:
    # One ready pod at 260 % of a 50 % target and one starting pod: 260 / 2 / 50 = 2.6 -> ceil(2.6 x 2) = 6
    # (without the unready pod it would be ceil(5.2 x 1) = 6 too; with 3 unready: 260 / 4 / 50 = 1.3 -> 6).
    assert hpa.resource_replicas(2, [260.0], 1, 50.0) == 6
    assert hpa.resource_replicas(4, [260.0], 3, 50.0) == 6
    # A ratio the unready pods would turn below 1: no change.
    assert hpa.resource_replicas(4, [120.0], 3, 100.0) == 4


def test_external_average_value_and_value_targets() -> None:
    assert hpa.external_average_value(1, 32.0, 16.0) == 2  # ceil(32 / 16)
    assert hpa.external_average_value(2, 33.0, 16.0) == 2  # 33 / (16 x 2) within tolerance
    assert hpa.external_average_value(5, 0.0, 16.0) == 0  # clamped to minReplicas by the controller
    assert hpa.external_value(3, 3, 32.0, 16.0) == 6  # ceil(2.0 x 3 ready)


def test_default_scale_up_policy_four_pods_or_double_per_15s() -> None:
    h = Hpa(1, 100)
    assert h.sync(0.0, 1, 20) == 5  # max(1 + 4 pods, 1 x 2) per 15 s
    assert h.sync(15.0, 5, 20) == 10  # the t=0 event is outside (now - 15, now]: max(5 + 4, 10)
    assert h.sync(30.0, 10, 100) == 20
    h2 = Hpa(1, 100)
    assert h2.sync(0.0, 10, 100) == 20  # 100 % beats 4 pods


def test_scale_up_within_one_period_counts_earlier_events() -> None:
    h = Hpa(1, 100, up=Rules(0.0, (Policy("Pods", 4, 60.0),)), down=DEFAULT_DOWN)
    assert h.sync(0.0, 1, 20) == 5
    assert h.sync(15.0, 5, 20) == 5  # 4 pods already added in the last 60 s
    assert h.sync(61.0, 5, 20) == 9


def test_downscale_stabilisation_window_keeps_the_highest_recommendation() -> None:
    h = Hpa(1, 100)
    assert h.sync(0.0, 10, 10) == 10
    for t in range(15, 300, 15):
        assert h.sync(float(t), 10, 2) == 10  # 300 s window still holds the 10
    assert h.sync(301.0, 10, 2) == 2  # window passed; -100 % per 15 s allows it


def test_scale_down_policy_limits_the_rate() -> None:
    h = Hpa(1, 100, up=DEFAULT_UP, down=Rules(0.0, (Policy("Pods", 1, 60.0),)))
    assert h.sync(0.0, 10, 2) == 9
    assert h.sync(15.0, 9, 2) == 9
    assert h.sync(61.0, 9, 2) == 8


def test_legacy_rules_without_behavior() -> None:
    h = Hpa(1, 100, up=None, down=None)
    assert h.sync(0.0, 1, 50) == 4  # max(2 x 1, 4)
    assert h.sync(15.0, 4, 50) == 8
    # The 5-minute stabilisation takes the highest recommendation of the window, 50, even while the
    # metric now asks for 1: it keeps scaling up (at most x2 per sync) until the 50s age out.
    assert h.sync(30.0, 8, 1) == 16
    assert h.sync(45.0, 16, 1) == 32
    assert h.sync(60.0, 32, 1) == 50
    assert h.sync(361.0, 50, 1) == 1


def test_bounds_and_disabled_at_zero() -> None:
    h = Hpa(2, 6)
    assert h.sync(0.0, 4, 50) == 6
    assert h.sync(0.0, 1, 1) == 2  # below minReplicas: brought up to it
    assert h.sync(0.0, 0, 50) == 0  # target at zero replicas: scaling disabled
    assert h.sync(0.0, 9, 9) == 6  # above maxReplicas
