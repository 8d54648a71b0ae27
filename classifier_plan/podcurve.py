"""Fixed pods at a constant rate (request-level), and the pod curve the fluid engine reads.

:func:`simulate_fixed` runs the request-level engine on ``pods`` replicas that never scale, at one
offered rate: what ``bench/validate_plan.py`` compares with the real server, and what
:func:`pod_curve` runs at loads from 2 % to 98 % of a pod's capacity so that the fluid engine has the
latency distribution, busy share, queue depth and in-flight count of a pod in steady state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from classifier_plan.capacity import CapacityProfile
from classifier_plan.chart import ChartPlan
from classifier_plan.setup import SimSetup
from classifier_plan.traffic import PointsSegment, TrafficProfile

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


@dataclass(frozen=True)
class FixedResult:
    """One constant-rate run of fixed pods."""

    rate_per_s: float
    requests: int
    served: int
    refused_share: float
    timed_out: int
    quantiles_ms: tuple[float, ...]
    mean_ms: float
    busy_fraction: float
    mean_depth: float
    mean_inflight: float


def fixed_setup(setup: SimSetup, pods: int = 1) -> SimSetup:
    """The same pods, nodes and prices with ``pods`` replicas and no autoscaler."""
    plan = dataclasses.replace(
        setup.plan, mode="standard", autoscaler="none", min_replicas=pods, max_replicas=pods, knative=None
    )
    return SimSetup(plan, setup.profile, setup.prices, setup.assumptions)


def constant_traffic(
    rate_per_s: float,
    duration_s: float,
    arrivals: Literal["poisson", "uniform"],
    images: int | dict[int, float],
    seed: int,
) -> TrafficProfile:
    return TrafficProfile(
        name=f"constant {rate_per_s:.3g} req/s",
        duration=duration_s,
        arrivals=arrivals,
        images_per_request=images,
        segments=[PointsSegment(kind="points", points=[(0.0, rate_per_s * 60.0)])],
        seed=seed,
    )


def simulate_fixed(
    setup: SimSetup,
    rate_per_s: float,
    duration_s: float,
    arrivals: Literal["poisson", "uniform"] = "poisson",
    images: int | dict[int, float] = 1,
    pods: int = 1,
    warmup_s: float = 0.0,
    seed: int = 0,
) -> FixedResult:
    """Request-level run of ``pods`` fixed replicas at ``rate_per_s``; statistics after ``warmup_s``."""
    from classifier_plan.des import DesEngine

    fs = fixed_setup(setup, pods)
    traffic = constant_traffic(rate_per_s, duration_s + warmup_s, arrivals, images, seed)
    eng = DesEngine(fs, traffic, slo_ms=1e9)
    lat: list[float] = []
    eng.tally.keep_latencies, eng.tally.keep_after = lat, warmup_s
    depth: list[float] = []
    inflight: list[float] = []
    busy = [0.0]

    def sample(now: float) -> None:
        if now <= warmup_s:
            for q in eng.pq.values():
                q.busy = 0.0
            return
        depth.append(sum(q.depth for q in eng.pq.values()) / pods)
        inflight.append(sum(q.inflight for q in eng.pq.values()) / pods)
        for q in eng.pq.values():
            busy[0] += q.busy
            q.busy = 0.0

    eng.on_second = sample
    eng.run()
    table = eng.rec.table()
    after = table[:, 0] >= warmup_s
    offered = float(table[after, 1].sum())
    refused = float(table[after, 3].sum())
    timed_out = float(table[after, 4].sum())
    arr = np.asarray(lat) if lat else np.zeros(1)
    return FixedResult(
        rate_per_s=rate_per_s,
        requests=int(offered),
        served=len(lat),
        refused_share=refused / offered if offered else 0.0,
        timed_out=int(timed_out),
        quantiles_ms=tuple(float(np.quantile(arr, q)) for q in QUANTILES),
        mean_ms=float(arr.mean()),
        busy_fraction=busy[0] / (duration_s * pods),
        mean_depth=float(np.mean(depth)) if depth else 0.0,
        mean_inflight=float(np.mean(inflight)) if inflight else 0.0,
    )


@dataclass(frozen=True)
class PodCurve:
    """Steady-state behaviour of one pod as a function of its load (share of its capacity).

    Measured twice where the traffic's arrivals are Poisson: as they reach a lone pod (``quantiles_ms`` ...)
    and evenly spaced (``even``), which is what round-robin routing over many pods makes of them (the
    arrivals at one of ``n`` pods are every ``n``-th of the stream: their squared coefficient of variation is
    ``1 / n``). :meth:`at` weighs the two by ``1 / n``, as queueing delay grows linearly with that variation
    (Kingman's formula).
    """

    capacity_img_per_s: float
    fractions: np.ndarray
    quantiles_ms: np.ndarray  # (fractions, QUANTILES)
    mean_ms: np.ndarray
    busy: np.ndarray
    depth: np.ndarray
    inflight: np.ndarray
    even: PodCurve | None = None

    def at(
        self, rho: np.ndarray | float, pods: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(quantiles, mean ms, busy share, mean depth, mean in-flight) at loads ``rho`` on one of ``pods`` pods.

        Latencies below the lightest measured load are the lightest load's (a lone request's); busy share,
        depth and in-flight fall linearly to 0 at no load, so an idle pod reads 0 and a trigger on it can
        go to zero. Above the heaviest load everything is the heaviest load's.
        """
        own = self._at(rho)
        if self.even is None or pods <= 1:
            return own
        w = 1.0 / pods
        even = self.even._at(rho)
        return tuple(w * a + (1.0 - w) * b for a, b in zip(own, even, strict=True))  # type: ignore[return-value]

    def _at(self, rho: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r = np.clip(np.asarray(rho, dtype=float), 0.0, self.fractions[-1])
        f = self.fractions
        f0 = np.concatenate([[0.0], f])
        qs = np.stack([np.interp(r, f, self.quantiles_ms[:, j]) for j in range(len(QUANTILES))], axis=-1)
        return (
            qs,
            np.interp(r, f, self.mean_ms),
            np.interp(r, f0, np.concatenate([[0.0], self.busy])),
            np.interp(r, f0, np.concatenate([[0.0], self.depth])),
            np.interp(r, f0, np.concatenate([[0.0], self.inflight])),
        )


def pod_curve(setup: SimSetup, traffic: TrafficProfile, requests_per_point: int = 3000) -> PodCurve:
    """Run one fixed pod at each of :data:`FRACTIONS` of its capacity (the traffic's images; its arrivals,
    and evenly spaced ones too where they are Poisson)."""
    even = _curve(setup, traffic, "uniform", requests_per_point) if traffic.arrivals == "poisson" else None
    return dataclasses.replace(_curve(setup, traffic, traffic.arrivals, requests_per_point), even=even)


def _curve(
    setup: SimSetup, traffic: TrafficProfile, arrivals: Literal["poisson", "uniform"], requests_per_point: int
) -> PodCurve:
    cap = setup.capacity(traffic.mean_images)
    rows = []
    for f in FRACTIONS:
        rate = f * cap / traffic.mean_images
        duration = float(np.clip(requests_per_point / rate, 5.0, 600.0))
        rows.append(simulate_fixed(setup, rate, duration, arrivals, traffic.images_per_request, warmup_s=2.0))
    return PodCurve(
        capacity_img_per_s=cap,
        fractions=np.array(FRACTIONS),
        quantiles_ms=np.array([r.quantiles_ms for r in rows]),
        mean_ms=np.array([r.mean_ms for r in rows]),
        busy=np.array([r.busy_fraction for r in rows]),
        depth=np.array([r.mean_depth for r in rows]),
        inflight=np.array([r.mean_inflight for r in rows]),
    )


def standalone_setup(profile: CapacityProfile) -> SimSetup:
    """One pod with the settings the profile was measured with (no chart): for ``bench/validate_plan.py``."""
    from classifier_plan._settings import chart_settings
    from classifier_plan.assumptions import Assumptions
    from classifier_plan.chart import PodSpec, PredictorSettings
    from classifier_plan.prices import load_prices

    s = chart_settings({k: v for k, v in profile.settings.items() if v is not None})
    settings = PredictorSettings(**{f: getattr(s, f) for f in PredictorSettings.__dataclass_fields__})
    pod = PodSpec(
        cpu_request=float(profile.machine.get("usable_cores", 2)),
        memory_request=2**30,
        gpu_resource=None,
        gpus=0,
        prefers_spot=False,
        tolerates_spot=False,
        storage_uri="",
        startup_period_s=1.0,
        readiness_period_s=1.0,
        termination_grace_s=30.0,
    )
    plan = ChartPlan(mode="standard", autoscaler="none", min_replicas=1, max_replicas=1, settings=settings, pod=pod)
    return SimSetup(plan, profile, load_prices(), Assumptions())


def calibrate_jitter(
    profile: CapacityProfile,
    grid0: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
    grid1: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0),
) -> CapacityProfile:
    """The overhead's spread chosen so the simulator's p95 matches the measured one below the knee.

    The measured spread (p95 - p50) at light open-loop load is partly the overhead's own variation and partly
    requests colliding in the batcher, which the simulation reproduces by itself; so the exponential part
    (``overhead_jitter_ms + jitter_per_utilization_ms * u``) is picked on a grid by simulating those
    points (evenly spaced arrivals, as the load generator sends) and minimising the squared relative p95 error.
    """
    points = [
        p
        for p in profile.measurements.get("open_loop", [])
        if not p.get("rejected_503_share") and (p["server"]["mean_batch_size"] or 0) < 4 and p["latency_ms"].get("p95")
    ]
    if not points:
        return profile
    best: tuple[float, float, float] | None = None
    for a in grid0:
        for b in grid1:
            pm = profile.pod_model.model_copy(update={"overhead_jitter_ms": a, "jitter_per_utilization_ms": b})
            trial = standalone_setup(profile.model_copy(update={"pod_model": pm}))
            err = 0.0
            for p in points:
                r = simulate_fixed(trial, p["rate_per_s"], min(10.0, 2000 / p["rate_per_s"]), "uniform", warmup_s=1.0)
                err += (r.quantiles_ms[QUANTILES.index(0.95)] / p["latency_ms"]["p95"] - 1.0) ** 2
            if best is None or err < best[0]:
                best = (err, a, b)
    assert best is not None
    pm = profile.pod_model.model_copy(update={"overhead_jitter_ms": best[1], "jitter_per_utilization_ms": best[2]})
    return profile.model_copy(update={"pod_model": pm})
