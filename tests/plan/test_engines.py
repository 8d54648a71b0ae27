"""Both engines: one pod against hand-computed numbers, invariants, scale from zero, DES vs fluid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier_plan import simulate
from classifier_plan.errors import PlanInputError
from classifier_plan.podcurve import QUANTILES, simulate_fixed
from classifier_plan.results import COLUMNS
from classifier_plan.traffic import TrafficProfile

from .conftest import batch_ms, make_setup

NO_POOL = {"autoscaling": {"minReplicas": 1, "maxReplicas": 6, "knative": {"target": 2}}}
COL = {c: i for i, c in enumerate(COLUMNS)}


def q(result, quantile: float) -> float:
    return result.quantiles_ms[QUANTILES.index(quantile)]


def test_a_lone_request_takes_overhead_plus_delay_plus_one_forward(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, {}, profile)
    r = simulate_fixed(s, rate_per_s=1.0, duration_s=60, arrivals="uniform")
    # 5 ms overhead (parse/decode + response) + the 5 ms batch delay (nobody else comes) + S(1) = 10 ms.
    assert q(r, 0.5) == pytest.approx(5 + 5 + batch_ms(1))
    assert q(r, 0.95) == pytest.approx(20.0)
    assert r.refused_share == 0.0


def test_overload_fills_the_queue_and_sheds_the_excess(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, {}, profile)
    capacity = 32 / batch_ms(32) * 1000  # 320 img/s with full batches
    r = simulate_fixed(s, rate_per_s=2 * capacity, duration_s=30, arrivals="uniform", warmup_s=5)
    assert r.refused_share == pytest.approx(0.5, abs=0.03)
    # A full queue of 256 images ahead at 320 img/s: ~0.8 s of waiting, plus one batch and the overhead.
    assert 700 <= q(r, 0.5) <= 1000
    assert r.busy_fraction == pytest.approx(1.0, abs=0.02)


def test_the_queue_wait_budget_refuses_at_once_what_would_wait_past_it(tmp_path: Path, helm: str, profile) -> None:
    """As the server: a request is admitted only if the images ahead and its own drain within
    max_queue_wait_ms at the saturated rate, not whenever 256 fit. A 300-ms budget lets a pass take 37.5 ms:
    batches of 10 (S(10) = 36.1 ms), 277 img/s, so 83 images are admitted (hand-computed)."""
    s = make_setup(tmp_path, helm, {"settings": {"max_queue_wait_ms": 300}}, profile)
    rate = 10 / batch_ms(10) * 1000
    assert s.batch_cap == 10 and s.queue_limit_images() == pytest.approx(0.3 * rate)
    r = simulate_fixed(s, rate_per_s=800, duration_s=20, arrivals="uniform", warmup_s=2)
    assert r.refused_share == pytest.approx(1 - rate / 800, abs=0.03) and r.timed_out == 0
    assert r.mean_depth <= 0.3 * rate
    # The wait admitted (0.3 s) plus the pass the last image rides in and the overhead, not 256 images' 0.8 s.
    assert q(r, 0.999) <= 300 + batch_ms(10) + 5 + 1e-6
    unbounded = make_setup(tmp_path, helm, {"settings": {"max_queue_wait_ms": 30000}}, profile)
    r = simulate_fixed(unbounded, rate_per_s=800, duration_s=20, arrivals="uniform", warmup_s=2)
    assert q(r, 0.5) >= 700  # a full queue of 256 images ahead


def test_the_budget_is_capped_at_the_deadline_so_nothing_waits_into_504(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, {"settings": {"request_timeout_ms": 300}}, profile)
    r = simulate_fixed(s, rate_per_s=800, duration_s=20, arrivals="uniform", warmup_s=2)
    assert r.timed_out == 0 and r.refused_share > 0.5
    assert q(r, 0.999) <= 300 + batch_ms(32) + 5 + 1e-6


def test_a_pass_is_kept_within_an_eighth_of_the_budget(tmp_path: Path, helm: str, profile) -> None:
    """The server's latency cap: a 400-ms budget lets a pass take 50 ms; S(16) = 53.5 ms is too long,
    S(14) = 47.7 ms fits (hand-computed from the synthetic profile)."""
    s = make_setup(tmp_path, helm, {"settings": {"max_queue_wait_ms": 400}}, profile)
    assert s.batch_cap == 14 and batch_ms(14) <= 50 < batch_ms(15)
    assert s.capacity() == pytest.approx(14 / batch_ms(14) * 1000)
    r = simulate_fixed(s, rate_per_s=600, duration_s=20, arrivals="uniform", warmup_s=2)
    assert r.served / 20 == pytest.approx(14 / batch_ms(14) * 1000, rel=0.05)  # full capped batches
    assert make_setup(tmp_path, helm, {}, profile).batch_cap == 32  # 1 s: S(32) = 100 ms fits


def spike(duration: str = "20m", base: float = 1200, peak: float = 18000, seed: int = 0) -> TrafficProfile:
    return TrafficProfile.model_validate(
        {
            "name": "spike",
            "duration": duration,
            "seed": seed,
            "segments": [
                {"kind": "points", "points": [[0, base]]},
                {"kind": "spike", "at": "4m", "duration": "8m", "ramp": "30s", "rate_per_min": peak, "mode": "set"},
            ],
        }
    )


def test_invariants_of_an_autoscaled_run(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, NO_POOL, profile)
    rec, summary = simulate.run(s, spike(), 500.0, "request")
    t = rec.table()
    ready, desired = t[:, COL["ready_replicas"]], t[:, COL["desired_replicas"]]
    assert ready.min() >= 1 and desired.max() <= 6 and ready.max() <= 6
    assert summary["peak_ready_replicas"] > 1  # it did scale
    outcomes = sum(summary[k] for k in ("requests_served", "requests_refused", "requests_timed_out", "requests_failed"))
    assert outcomes + summary["requests_in_flight_at_end"] == summary["requests_offered"]
    # Replicas never go up before traffic does, and come back down after the spike.
    assert desired[: 4 * 60].max() == desired[0]
    assert desired[-1] < desired.max()


def test_scale_from_zero_holds_requests_at_the_activator(tmp_path: Path, helm: str, profile) -> None:
    values = {"autoscaling": {"minReplicas": 0, "maxReplicas": 2, "knative": {"scaleDownDelay": "0s"}}}
    s = make_setup(tmp_path, helm, values, profile, seed=4)
    traffic = TrafficProfile.model_validate(
        {
            "name": "wake",
            "duration": "15m",
            "segments": [{"kind": "points", "interpolation": "step", "points": [[0, 0], ["10m", 60]]}],
        }
    )
    rec, summary = simulate.run(s, traffic, 60_000.0, "request")
    t = rec.table()
    assert t[(5 * 60), COL["ready_replicas"]] == 0  # scaled to zero while idle
    assert summary["wakes_from_zero"] == 1
    a = s.assumptions
    # The node is still there (600 s before it goes): bind, cached pull, storage init 5 s, cold start 10 s,
    # probes up to 10 s, endpoints 2 s, and up to a second for the activator's poke.
    low = a.scheduling_s + a.image_cached_pull_s + 5 + 10 + 2
    assert low <= summary["time_to_first_ready_s_after_idle"] <= low + 10 + 2
    assert summary["requests_refused"] == 0 and summary["requests_timed_out"] == 0  # held, then served


def test_standard_mode_at_zero_without_a_waker_is_refused_by_the_chart(tmp_path: Path, helm: str, profile) -> None:
    """KEDA's Prometheus triggers sum the predictor's own metrics, which read 0 with no pod: at zero nothing
    would ever wake it (300 requests after an idle period all refused, forever). The chart refuses that plan
    and names what wakes (issue 24)."""
    values = {
        "deploymentMode": "Standard",
        "autoscaling": {
            "minReplicas": 0,
            "maxReplicas": 3,
            "standard": {
                "autoscaler": "keda",
                "keda": {"prometheusAddress": "http://prom:9090", "gpuUtilizationTarget": 0},
            },
        },
    }
    with pytest.raises(PlanInputError) as refused:
        make_setup(tmp_path, helm, values, profile)
    assert "minReplicas is 0 in Standard mode" in str(refused.value)
    assert "autoscaling.standard.autoscaler=httpAddon" in str(refused.value)


def test_request_and_fluid_engines_agree(tmp_path: Path, helm: str, profile) -> None:
    """Same scenario both ways (autoscaling 1 -> 6 pods, overload and 503s while pods start). Tolerances:
    served and refused within 2 % of offered, peak ready pods within one, cost within 10 %, p95 within 25 %."""
    s = make_setup(tmp_path, helm, NO_POOL, profile)
    traffic = spike(peak=36000, seed=1)  # 600 req/s: one pod sheds load until more are ready (~3 min)
    _, des = simulate.run(s, traffic, 500.0, "request")
    _, flu = simulate.run(s, traffic, 500.0, "fluid")
    offered = des["requests_offered"]
    assert des["requests_refused"] > 0.05 * offered  # the scenario does overload
    assert flu["requests_offered"] == pytest.approx(offered, rel=0.02)
    assert flu["requests_served"] == pytest.approx(des["requests_served"], abs=0.02 * offered)
    assert flu["requests_refused"] == pytest.approx(des["requests_refused"], abs=0.02 * offered)
    assert abs(flu["peak_ready_replicas"] - des["peak_ready_replicas"]) <= 1
    assert flu["cost_usd"] == pytest.approx(des["cost_usd"], rel=0.10)
    assert flu["p95_ms"] == pytest.approx(des["p95_ms"], rel=0.25)


def test_fluid_handles_internet_scale(tmp_path: Path, helm: str, profile) -> None:
    values = {"autoscaling": {"minReplicas": 1, "maxReplicas": 1000, "knative": {"target": 8}}}
    s = make_setup(tmp_path, helm, values, profile)
    traffic = TrafficProfile.model_validate(
        {
            "name": "huge",
            "duration": "30m",
            "segments": [{"kind": "points", "points": [[0, 60_000], ["10m", 6_000_000], ["30m", 6_000_000]]}],
        }
    )
    rec, summary = simulate.run(s, traffic, 500.0, "fluid", step_s=2.0)
    ready = rec.table()[:, COL["ready_replicas"]]
    # 100,000 req/s at 320 img/s a pod needs > 300 pods; KPA's target asks for more.
    assert ready.max() >= 313
    assert np.isfinite(summary["p95_ms"])


def test_hpa_on_cpu_scales_a_cpu_pod_up(tmp_path: Path, helm: str, profile) -> None:
    values = {
        "deploymentMode": "Standard",
        "gpu": {"enabled": False},
        "resources": {"requests": {"cpu": "500m", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 5,
            "standard": {"autoscaler": "hpa", "hpa": {"targetUtilization": 50}},
        },
    }
    s = make_setup(tmp_path, helm, values, profile)
    # 1 req/s x 2 ms CPU per image + 0.02 idle = 0.022 cores = 4 % of the 0.5-core request: 1 pod.
    # 1,000 req/s saturates the pod at 320 img/s: 0.66 cores = 132 % of the request: it must scale up.
    # (A GPU pod whose CPU stays low when its GPU saturates never would: HPA on CPU misses GPU saturation.)
    traffic = TrafficProfile.model_validate(
        {
            "name": "cpu",
            "duration": "12m",
            "segments": [{"kind": "points", "interpolation": "step", "points": [[0, 60], ["2m", 60000]]}],
        }
    )
    rec, _ = simulate.run(s, traffic, 500.0, "request")
    desired = rec.table()[:, COL["desired_replicas"]]
    assert desired[: 2 * 60].max() == 1
    assert desired.max() >= 2


def test_keda_queue_depth_sum_scales_with_the_backlog_as_kserve_builds_it(tmp_path: Path, helm: str, profile) -> None:
    """KServe's prometheus trigger has no metricType, so KEDA asks for AverageValue: the HPA proposes
    ceil(value / target). The chart's query is the sum of every pod's queue depth, so the target is images
    per pod and the pods follow the backlog (an avg() would never propose more than a couple of pods)."""
    values = {
        "deploymentMode": "Standard",
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 10,
            "standard": {
                "autoscaler": "keda",
                "keda": {"prometheusAddress": "http://p:9090", "queueDepthTarget": 16, "gpuUtilizationTarget": 0},
            },
        },
    }
    s = make_setup(tmp_path, helm, values, profile)
    (metric,) = s.plan.hpa_metrics
    assert (metric.aggregation, metric.target_type) == ("sum", "AverageValue")
    traffic = TrafficProfile.model_validate(
        {"name": "overload", "duration": "15m", "segments": [{"kind": "points", "points": [[0, 60000]]}]}
    )
    rec, _ = simulate.run(s, traffic, 500.0, "fluid")
    ready = rec.table()[:, COL["ready_replicas"]]
    # 1,000 img/s needs 4 pods of this profile's ~320 img/s: a growing summed backlog asks for them
    assert ready.max() >= 4
    assert ready.max() <= 10
