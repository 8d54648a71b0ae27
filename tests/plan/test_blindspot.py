"""An autoscaler that cannot see an overload: a pod admits only what drains within its queue-wait budget,
so a per-pod target at or above that never reads as exceeded. Both engines, the real chart."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier_plan import simulate
from classifier_plan.blindspot import BlindTarget, blind_targets
from classifier_plan.report import wake_warnings
from tests.plan.conftest import make_setup
from tests.plan.test_engine_agreement import KEDA_QUEUE, slow_profile, traffic

OVERLOAD = traffic("overload", "6m", [[0, 1800]])  # 30 req/s against 5 img/s a pod


@pytest.mark.parametrize("engine", ["request", "fluid"])
def test_a_kpa_concurrency_target_above_what_a_slow_pod_admits_is_flagged(tmp_path: Path, helm: str, engine) -> None:
    """5 img/s and a 1-s budget: a pod admits 5 requests, the KPA aims at 32 x 0.7 = 22.4 a pod."""
    s = make_setup(tmp_path, helm, {}, slow_profile())
    assert s.queue_limit_images() == pytest.approx(5.0)
    assert blind_targets(s, 1.0) == [BlindTarget("kpa concurrency", pytest.approx(22.4), pytest.approx(5.0))]
    _, summary = simulate.run(s, OVERLOAD, 500.0, engine)
    assert summary["peak_ready_replicas"] == 1 < s.plan.max_replicas  # it never scaled out
    assert "scaling_blind" in summary["flags"] and summary["requests_refused"] > 0.7 * summary["requests_offered"]
    assert summary["scaling_blind"] == [{"signal": "kpa concurrency", "target_per_pod": 22.4, "most_per_pod": 5.0}]
    text = "\n".join(wake_warnings(summary, s.plan))
    assert "SCALING BLIND" in text and "kpa concurrency: at most 5 per pod, target 22.4" in text


@pytest.mark.parametrize("engine", ["request", "fluid"])
def test_a_target_the_pod_can_reach_scales_out_and_is_not_flagged(tmp_path: Path, helm: str, engine) -> None:
    """The same pods and load, scaled on requests per second (refused requests count too)."""
    s = make_setup(tmp_path, helm, {"autoscaling": {"knative": {"metric": "rps", "target": 4}}}, slow_profile())
    assert blind_targets(s, 1.0) == []
    _, summary = simulate.run(s, OVERLOAD, 500.0, engine)
    assert summary["peak_ready_replicas"] == s.plan.max_replicas
    assert "scaling_blind" not in summary["flags"]


def test_hpa_and_keda_targets(tmp_path: Path, helm: str, profile) -> None:
    # KEDA on queue depth 16 a pod; a slow pod holds at most 5 images: blind.
    slow = make_setup(tmp_path, helm, KEDA_QUEUE, slow_profile())
    assert blind_targets(slow, 1.0) == [BlindTarget("queue_depth", 16.0, pytest.approx(5.0))]
    # The synthetic pod (320 img/s) admits 256 images (max_queue_images): 16 is within reach.
    assert blind_targets(make_setup(tmp_path, helm, KEDA_QUEUE, profile), 1.0) == []
    # With CPU utilisation beside it, the HPA's largest proposal still grows with the load.
    values = {**KEDA_QUEUE, "autoscaling": {**KEDA_QUEUE["autoscaling"]}}
    values["autoscaling"]["standard"] = {
        **KEDA_QUEUE["autoscaling"]["standard"],
        "keda": {**KEDA_QUEUE["autoscaling"]["standard"]["keda"], "gpuUtilizationTarget": 60},
    }
    both = make_setup(tmp_path, helm, values, slow_profile())
    assert {m.signal for m in both.plan.hpa_metrics} == {"queue_depth", "gpu_util"}
    assert blind_targets(both, 1.0) == []
