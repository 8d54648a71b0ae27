"""The fluid engine against the request-level engine on a family of small scenarios.

The request engine simulates every request (the reference, itself tested against the autoscalers'
documented algorithms and the real pod); the fluid engine is what ``--engine auto`` picks for long or huge
plans. Each scenario runs both ways and compares, within the tolerances below, what a user reads in a plan:
requests served, refused and timed out, p95, SLO attainment, the ready-replica and node trajectories, and
cost. The scenarios are small (seconds of request-level simulation each) but reach every regime: steady
load, a spike that overloads while pods start, overload against the queue limit on slow pods, idle to zero
and a wake under Knative (node still there; onto a new node with the chart's cold-start budget, where the
activator hands each pod at most containerConcurrency held requests; a burst beyond the activator's queue;
requests of several images, whose pod queue fills before its slots; a containerConcurrency of 8; a budget
too small, where held requests time out), Standard-mode KEDA scale to zero (it reaches zero and, with
no pod to read metrics from, never wakes), the KEDA HTTP add-on's scale to zero and wake onto a new node (its
interceptor holds requests and sends them all at once), on its request rate and on its concurrency (the held
requests count), and its request-rate scaling under a spike, and spot
reclaims.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from classifier_plan import simulate
from classifier_plan.capacity import CapacityProfile
from classifier_plan.results import COLUMNS
from classifier_plan.traffic import TrafficProfile

from .conftest import SYNTHETIC, make_setup

COL = {c: i for i, c in enumerate(COLUMNS)}

OUTCOME_TOL = 0.02
"""Served, refused, timed out and failed, as shares of each engine's offered requests: within 2 points (the
fluid engine offers the expected count, the request engine a Poisson draw of it, within ``3 sqrt(n)``)."""
P95_TOL = 0.25
"""p95 within 25 % (where both engines answered enough requests for a p95 to mean anything)."""
SLO_TOL = 0.04
"""SLO attainment (share of offered requests answered within the SLO) within 4 points."""
POD_SECONDS_TOL = 0.10
"""Ready-pod seconds and node seconds (the trajectories' areas) and cost within 10 %."""
PEAK_TOL = 1
"""Peak ready replicas and peak nodes within one."""
LAG_S = 60
"""Ready replicas at every second within one pod of the other engine's within ``LAG_S`` seconds of it
(autoscalers act on sampled signals: the same decision may fall one sync later)."""


def slow_profile() -> CapacityProfile:
    """5 img/s: 200 ms for one image, 6.4 s for a batch of 32 (a 256-image queue holds 51 s of work)."""
    p = copy.deepcopy(SYNTHETIC)
    p["pod_model"].update(batch_time_ms=[[1, 200.0], [32, 6400.0]], capacity_img_per_s=5.0)
    return CapacityProfile.model_validate(p)


def traffic(
    name: str, duration: str, points: list[list[Any]], step: bool = False, images: Any = 1, **kw: Any
) -> TrafficProfile:
    seg: dict[str, Any] = {"kind": "points", "points": points}
    if step:
        seg["interpolation"] = "step"
    return TrafficProfile.model_validate(
        {
            "name": name,
            "duration": duration,
            "images_per_request": images,
            "segments": [seg, *kw.pop("more", [])],
        }
    )


KPA = {"autoscaling": {"minReplicas": 1, "maxReplicas": 6, "knative": {"target": 2}}}
KEDA_QUEUE = {
    "deploymentMode": "Standard",
    "autoscaling": {
        "minReplicas": 1,
        "maxReplicas": 16,
        "standard": {
            "autoscaler": "keda",
            "keda": {"prometheusAddress": "http://p:9090", "queueDepthTarget": 16, "gpuUtilizationTarget": 0},
        },
    },
}
# The chart refuses minReplicas 0 with KEDA on the predictor's own metrics (nothing would wake it), so the
# scenario renders minReplicas 1 and the setup sets the floor to 0 (Scenario.min_replicas): both engines
# must still take an idle KEDA deployment to zero, and agree on the requests refused there.
KEDA_ZERO = {
    "deploymentMode": "Standard",
    "autoscaling": {
        "minReplicas": 1,
        "maxReplicas": 3,
        "standard": {
            "autoscaler": "keda",
            "keda": {"prometheusAddress": "http://p:9090", "queueDepthTarget": 16, "gpuUtilizationTarget": 0},
        },
    },
}
KN_ZERO = {"autoscaling": {"minReplicas": 0, "maxReplicas": 2, "knative": {"scaleDownDelay": "0s"}}}
HTTP_ADDON = {
    "deploymentMode": "Standard",
    "autoscaling": {
        "minReplicas": 0,
        "maxReplicas": 6,
        "standard": {
            "autoscaler": "httpAddon",
            "httpAddon": {"hosts": ["classifier.example.com"], "metric": "requestRate", "target": 50},
        },
    },
}
SPOT = {
    "knative": {"features": ["kubernetes.podspec-affinity", "kubernetes.podspec-tolerations"]},
    "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "knative": {"target": 2}},
    "spot": {"enabled": True},
    "karpenter": {"nodePool": {"enabled": True, "capacityTypes": ["spot"], "nodeClassName": "default"}},
}


@dataclass
class Scenario:
    values: dict[str, Any]
    traffic: TrafficProfile
    slo_ms: float = 500.0
    slow: bool = False
    assume: dict[str, Any] = field(default_factory=dict)
    p95: bool = True  # compare p95 (not where a handful of requests decide it)
    min_replicas: int | None = None  # overrides the rendered floor (see KEDA_ZERO)


SCENARIOS = {
    "steady": Scenario(KPA, traffic("steady", "6m", [[0, 6000]])),
    "spike-overload": Scenario(
        KPA,
        traffic(
            "spike",
            "10m",
            [[0, 1200]],
            more=[{"kind": "spike", "at": "2m", "duration": "4m", "ramp": "20s", "rate_per_min": 36000, "mode": "set"}],
        ),
    ),
    "queue-limit-slow-pods": Scenario(KEDA_QUEUE, traffic("overload", "8m", [[0, 1800]]), slow=True),
    "knative-idle-zero-wake": Scenario(
        KN_ZERO, traffic("wake", "14m", [[0, 0], ["10m", 240], ["12m", 0]], step=True), assume={"seed": 4}
    ),
    # The chart's cold-start budget (autoscaling.coldStartSeconds, 210 s) covers a wake onto a new node (~176 s
    # here): ~700 requests wait at the activator, which hands each ready pod at most containerConcurrency (256)
    # and the rest as slots free, so none is refused or times out.
    "knative-wake-onto-new-node": Scenario(
        KN_ZERO,
        traffic("wake-new-node", "18m", [[0, 0], ["13m", 240], ["16m", 0]], step=True),
        slo_ms=60_000.0,
        assume={"seed": 4},
    ),
    # 100 requests/s during that wake: beyond 10,000 waiting the activator answers 503 at once; the rest drain
    # through the pods' slots.
    "knative-wake-burst": Scenario(
        KN_ZERO,
        traffic("wake-burst", "18m", [[0, 0], ["13m", 6000], ["16m", 0]], step=True),
        slo_ms=60_000.0,
        assume={"seed": 4},
    ),
    # Half the requests carry 4 images: containerConcurrency (256) lets more images through than a pod's queue
    # (256) holds, a refused request frees its slot at once, and every held request beyond the queue is refused.
    "knative-wake-multi-image": Scenario(
        KN_ZERO,
        traffic("wake-multi", "18m", [[0, 0], ["13m", 240], ["16m", 0]], step=True, images={1: 0.5, 4: 0.5}),
        slo_ms=60_000.0,
        assume={"seed": 4},
    ),
    # containerConcurrency 8: the ~7,000 held requests reach the pods 8 at a time, as slots free.
    "knative-wake-small-concurrency": Scenario(
        {
            "autoscaling": {
                **KN_ZERO["autoscaling"],
                "knative": {"scaleDownDelay": "0s", "containerConcurrency": 8, "target": 4},
            }
        },
        traffic("wake-cc8", "18m", [[0, 0], ["13m", 2400], ["16m", 0]], step=True, images={1: 0.5, 4: 0.5}),
        slo_ms=60_000.0,
        assume={"seed": 4},
    ),
    # A budget set too small: held requests time out at the activator during the wake.
    "knative-wake-past-timeout": Scenario(
        {**KN_ZERO, "autoscaling": {**KN_ZERO["autoscaling"], "coldStartSeconds": 20}},
        traffic("wake-new-node", "18m", [[0, 0], ["13m", 240], ["16m", 0]], step=True),
        slo_ms=60_000.0,
        assume={"seed": 4},
    ),
    # The HTTP add-on: the last pod goes scaledownPeriod (300 s) after the last request, its node 600 s later
    # (no NodePool: cluster-autoscaler's default); the requests of minute 18 wait at the interceptor for a new
    # node and all reach the first pod at once (what does not fit its queue is refused).
    "http-addon-idle-zero-wake": Scenario(
        HTTP_ADDON,
        traffic("http-wake", "26m", [[0, 0], ["18m", 240], ["22m", 0]], step=True),
        slo_ms=60_000.0,
        assume={"seed": 4},
    ),
    # Scaling on the interceptor's concurrency (4 per pod): the held requests count, so the wake asks for
    # maxReplicas at once.
    "http-addon-concurrency-wake": Scenario(
        {
            **HTTP_ADDON,
            "autoscaling": {
                **HTTP_ADDON["autoscaling"],
                "standard": {
                    "autoscaler": "httpAddon",
                    "httpAddon": {"hosts": ["classifier.example.com"], "metric": "concurrency", "target": 4},
                },
            },
        },
        traffic("http-wake", "26m", [[0, 0], ["18m", 240], ["22m", 0]], step=True),
        slo_ms=60_000.0,
        assume={"seed": 4},
    ),
    "http-addon-spike": Scenario(
        HTTP_ADDON,
        traffic(
            "http-spike",
            "10m",
            [[0, 1200]],
            more=[{"kind": "spike", "at": "2m", "duration": "4m", "ramp": "20s", "rate_per_min": 36000, "mode": "set"}],
        ),
    ),
    "standard-keda-zero": Scenario(
        KEDA_ZERO,
        traffic("gap", "20m", [[0, 0], ["12m", 60]], step=True),
        assume={"seed": 2},
        p95=False,
        min_replicas=0,
    ),
    "spot-reclaim": Scenario(
        SPOT,
        traffic("spot", "15m", [[0, 12000]]),
        assume={"seed": 9, "spot_interruptions_per_node_hour": 12.0, "spot_notice_s": 30.0},
    ),
}


def per_second(table: np.ndarray) -> np.ndarray:
    """Timeline rows repeated over the seconds they span (fluid steps may be longer than a second)."""
    t = table[:, COL["t_s"]]
    span = np.diff(np.append(t, t[-1] + 1.0)).round().astype(int).clip(min=1)
    return np.repeat(table, span, axis=0)


def close_in_time(a: np.ndarray, b: np.ndarray, lag: int) -> bool:
    """Every a[t] is within one of some b[t'] with |t - t'| <= lag, and the other way round."""

    def one_way(x: np.ndarray, y: np.ndarray) -> bool:
        n = len(y)
        for t, v in enumerate(x):
            window = y[max(0, t - lag) : min(n, t + lag + 1)]
            if window.size and np.abs(window - v).min() > 1:
                return False
        return True

    return one_way(a, b) and one_way(b, a)


@pytest.fixture(scope="module")
def helm_setup(tmp_path_factory, helm):
    def build(sc: Scenario):
        base = SYNTHETIC if not sc.slow else None
        prof = CapacityProfile.model_validate(base) if base else slow_profile()
        return make_setup(tmp_path_factory.mktemp("v"), helm, sc.values, prof, sc.min_replicas, **sc.assume)

    return build


@pytest.fixture(scope="module")
def reference(helm_setup):
    """The request engine's run of each scenario, once per module."""
    cache: dict[str, Any] = {}

    def get(name: str):
        if name not in cache:
            sc = SCENARIOS[name]
            s = helm_setup(sc)
            cache[name] = (s, *simulate.run(s, sc.traffic, sc.slo_ms, "request"))
        return cache[name]

    return get


@pytest.mark.parametrize("step_s", [1.0, 5.0])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fluid_engine_agrees_with_the_request_engine(name: str, step_s: float, reference) -> None:
    """At 1 s steps and at the 5 s steps ``--engine auto`` takes beyond two days of traffic."""
    sc = SCENARIOS[name]
    s, rec_d, des = reference(name)
    rec_f, flu = simulate.run(s, sc.traffic, sc.slo_ms, "fluid", step_s=step_s)
    od, of = des["requests_offered"], flu["requests_offered"]
    assert abs(od - of) <= 3 * of**0.5 + 1
    for k in ("requests_served", "requests_refused", "requests_timed_out", "requests_failed"):
        assert abs(flu[k] / of - des[k] / od) <= OUTCOME_TOL, (k, flu[k], des[k])
    if sc.p95 and des["p95_ms"] is not None:
        assert flu["p95_ms"] == pytest.approx(des["p95_ms"], rel=P95_TOL)
    assert abs(flu["slo_attainment"] - des["slo_attainment"]) <= SLO_TOL
    assert abs(flu["peak_ready_replicas"] - des["peak_ready_replicas"]) <= PEAK_TOL
    assert abs(flu["peak_nodes"] - des["peak_nodes"]) <= PEAK_TOL
    assert flu["wakes_from_zero"] == des["wakes_from_zero"]
    assert flu["flags"] == des["flags"]  # wake timeouts, wake overshoot, refused at zero: the same findings
    assert [w["pods_needed"] for w in flu["wakes"]] == [w["pods_needed"] for w in des["wakes"]]
    for wf, wd in zip(flu["wakes"], des["wakes"], strict=True):
        assert abs(wf["pods_asked"] - wd["pods_asked"]) <= PEAK_TOL
        assert wf["extra_node_hours"] == pytest.approx(wd["extra_node_hours"], rel=POD_SECONDS_TOL, abs=60 / 3600)
    td, tf = per_second(rec_d.table()), per_second(rec_f.table())
    for col in ("ready_replicas",):
        a, b = td[:, COL[col]], tf[:, COL[col]]
        assert b.sum() == pytest.approx(a.sum(), rel=POD_SECONDS_TOL, abs=60), col
        assert close_in_time(a, b, LAG_S), col
    nodes_d = td[:, COL["nodes_spot"]] + td[:, COL["nodes_on_demand"]]
    nodes_f = tf[:, COL["nodes_spot"]] + tf[:, COL["nodes_on_demand"]]
    assert nodes_f.sum() == pytest.approx(nodes_d.sum(), rel=POD_SECONDS_TOL, abs=60)
    assert flu["cost_usd"] == pytest.approx(des["cost_usd"], rel=POD_SECONDS_TOL)
