"""KEDA activation and cooldown, as the ScaledObject spec describes them."""

from __future__ import annotations

from classifier_plan.keda import KedaLoop


def test_activation_from_zero_needs_a_value_above_the_threshold() -> None:
    k = KedaLoop(min_replicas=0)
    assert k.poll(0.0, [0.0], current=0) is None  # 0 is not > activationThreshold 0
    assert k.poll(30.0, [0.5], current=0) == 1  # active: 0 -> max(minReplicaCount, 1)
    k2 = KedaLoop(min_replicas=0, activation_threshold=5.0)
    assert k2.poll(0.0, [5.0], current=0) is None
    assert k2.poll(30.0, [0.0, 5.1], current=0) == 1  # any trigger active


def test_cooldown_to_zero_after_the_last_active_poll() -> None:
    k = KedaLoop(min_replicas=0, cooldown_s=300.0)
    assert k.poll(0.0, [3.0], current=2) is None  # active: the HPA scales between 1 and max
    assert k.poll(30.0, [0.0], current=2) is None
    assert k.poll(299.0, [0.0], current=2) is None
    assert k.poll(300.0, [0.0], current=2) == 0  # 300 s without activity


def test_no_scale_to_zero_with_min_replicas() -> None:
    k = KedaLoop(min_replicas=2, cooldown_s=300.0)
    assert k.hpa_min == 2
    assert k.poll(0.0, [0.0], current=2) is None
    assert k.poll(1000.0, [0.0], current=2) is None
    assert KedaLoop(min_replicas=0).hpa_min == 1  # the HPA KEDA creates never goes below 1


def test_polling_interval() -> None:
    k = KedaLoop(min_replicas=0, polling_s=30.0)
    due = [t for t in range(0, 100) if k.due(float(t))]
    assert due == [0, 30, 60, 90]
