"""Aggregated (fluid) engine: flows instead of requests, for internet-scale traffic and long horizons.

Each step of ``step_s``, the expected arrivals are split evenly over the ready pods. A pod serves at most
its capacity (the forward pass at ``max_batch_size``, and the event loop / decode pool where those are
separate); what it cannot serve queues, up to ``max_queue_images`` (then 503), and what waits longer than
``request_timeout_ms`` is dropped (504). Latency, busy share, queue depth and in-flight requests in
steady state come from the pod curve (the request-level engine run once per load level,
:mod:`classifier_plan.podcurve`); a backlog adds its wait on top. Knative's activator holds arrivals while
no pod is ready. Pods, nodes, autoscalers and costs are the same code as the request-level engine's.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from classifier_plan.cluster import Pod
from classifier_plan.control import PodSample
from classifier_plan.engine import EngineBase
from classifier_plan.podcurve import QUANTILES, PodCurve, pod_curve

_WEIGHTS = np.diff(np.array([*QUANTILES, 1.0]))
"""Probability mass between consecutive quantiles (the last: above the 99.9th)."""


def _masses(qs: np.ndarray) -> np.ndarray:
    """A latency for each mass of :data:`_WEIGHTS`: the middle of its two quantiles (the top one alone)."""
    return np.concatenate([(qs[:-1] + qs[1:]) / 2.0, qs[-1:]])


class _Flow:
    """One pod's backlog and what a scrape reads."""

    __slots__ = ("busy", "draining", "images", "last", "pod", "queue", "rho")

    def __init__(self, pod: Pod, now: float) -> None:
        self.pod, self.queue, self.rho = pod, 0.0, 0.0
        self.busy, self.images, self.last = 0.0, 0.0, now
        self.draining = False


class FluidEngine(EngineBase):
    """Runs one scenario as flows, ``step_s`` at a time."""

    def __init__(self, *args: Any, step_s: float = 1.0, curve: PodCurve | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_s = step_s
        self.curve = curve or pod_curve(self.s, self.traffic)
        self.mu = self.curve.capacity_img_per_s
        self.m = self.traffic.mean_images
        self.flows: dict[int, _Flow] = {}
        self.waiting: deque[list[float]] = deque()  # [arrived at, requests] at the activator
        self._conc = 0.0
        self._arr = 0.0
        cum = np.concatenate([[0.0], np.cumsum(self.traffic.per_second())])
        edges = np.minimum(np.arange(math.ceil(self.traffic.duration / step_s) + 1) * step_s, self.traffic.duration)
        # Expected arrivals per step (the per-second rates, linear inside a second).
        self._per_step = np.diff(np.interp(edges, np.arange(len(cum)), cum))
        self._at_cache: dict[float, tuple[Any, ...]] = {}
        self._idle_masses, self._idle_p95 = self._curve(0.0)[:2]

    def _curve(self, rho: float) -> tuple[Any, ...]:
        """The pod curve at ``rho`` (memoised on a 0.1 % grid: most steps repeat the same loads)."""
        key = round(rho, 3)
        got = self._at_cache.get(key)
        if got is None:
            qs, mean, busy, depth, inflight = self.curve.at(key)
            got = (
                _masses(np.asarray(qs)),
                float(qs[QUANTILES.index(0.95)]),
                float(mean),
                float(busy),
                float(depth),
                float(inflight),
            )
            self._at_cache[key] = got
        return got

    # ------------------------------------------------------------------ Listener / Signals
    def on_ready(self, pod: Pod, now: float) -> None:
        self.flows[pod.id] = _Flow(pod, now)
        self.note_ready(now)

    def on_drain(self, pod: Pod, now: float) -> None:
        f = self.flows.get(pod.id)
        if f is not None:
            f.draining = True

    def on_kill(self, pod: Pod, now: float) -> None:
        f = self.flows.pop(pod.id, None)
        if f is not None:
            self.rec.failed += f.queue / self.m
            if pod.state == "draining":
                self.cluster.pod_drained(pod, now)

    def concurrency(self) -> float:
        return self._conc

    def arrivals(self) -> float:
        return self._arr

    def waiting_at_activator(self) -> int:
        return math.ceil(sum(w[1] for w in self.waiting))

    def scrape(self, pod: Pod, now: float) -> PodSample:
        f = self.flows.get(pod.id)
        if f is None:
            return PodSample(0, 0, 0, 0, 0)
        _, _, _, _, depth, inflight = self._curve(f.rho)
        s = PodSample(depth + f.queue, inflight + f.queue / self.m, f.busy, f.images, now - f.last)
        f.busy, f.images, f.last = 0.0, 0.0, now
        return s

    # ------------------------------------------------------------------ one step
    def _activator(self, now: float, arriving: float) -> float:
        """Arrivals and released activator requests to send to pods now (or hold them)."""
        kept: deque[list[float]] = deque()
        for w in self.waiting:
            if now - w[0] >= self.activator_timeout_s:
                self.rec.timed_out += w[1]
                self._sec[3] += w[1]
            else:
                kept.append(w)
        self.waiting = kept
        routable = [f for f in self.flows.values() if not f.draining]
        if routable:
            released = sum(w[1] for w in self.waiting)
            self.waiting.clear()
            return arriving + released
        if arriving > 0:
            self.note_arrival_without_pods(now)
        if self.activator:
            if arriving > 0:
                self.waiting.append([now, arriving])
        else:
            self.rec.refused += arriving
            self._sec[2] += arriving
        return 0.0

    def _serve(self, now: float, dt: float, requests: float) -> tuple[float, float]:
        """Move the flows one step; returns (served-weighted p95 ms, queued images)."""
        st = self.settings
        routable = [f for f in self.flows.values() if not f.draining]
        per_pod = requests * self.m / len(routable) if routable else 0.0
        cap = self.mu * dt
        timeout_s = st.request_timeout_ms / 1000.0
        served_total = wsum = p95sum = conc = queue = 0.0
        for f in list(self.flows.values()):
            inflow = 0.0 if f.draining else per_pod
            before = f.queue
            served = min(before + inflow, cap)
            q = before + inflow - served
            refused = max(0.0, q - st.max_queue_images)
            q -= refused
            late = max(0.0, q - timeout_s * self.mu)
            q -= late
            if q < 1e-6:
                q = 0.0  # float residue would read as concurrency and keep the last pod from ever going
            f.queue, f.rho = q, min(inflow, cap) / cap if cap else 0.0
            masses, p95, mean, busy, depth, _inflight = self._curve(f.rho)
            wait_ms = 1000.0 * (before + q) / 2.0 / self.mu
            f.busy += busy * dt if q <= 0 else dt
            f.images += served
            self.rec.refused += refused / self.m
            self.rec.timed_out += late / self.m
            self._sec[2] += refused / self.m
            self._sec[3] += late / self.m
            reqs = served / self.m
            self.rec.served += reqs
            self._sec[1] += reqs
            if reqs > 0:
                # A backlog's wait replaces the steady-state queueing the curve already holds: the larger of
                # the two (the curve at no load, plus the wait), never their sum.
                if wait_ms > 0:
                    masses, p95 = np.maximum(masses, self._idle_masses + wait_ms), max(p95, self._idle_p95 + wait_ms)
                self.rec.latency.add(masses, reqs * _WEIGHTS)
                p95sum += reqs * p95
                wsum += reqs
            served_total += reqs
            conc += reqs / dt * mean / 1000.0 + q / self.m
            queue += depth + q
            if f.draining and q <= 1e-9:
                self.flows.pop(f.pod.id, None)
                self.cluster.pod_drained(f.pod, now)
        self._conc = conc + sum(w[1] for w in self.waiting)
        return (p95sum / wsum if wsum else math.nan), queue

    def run(self, progress: Any = None) -> dict[str, float]:
        """Simulate the whole profile; returns the cost dict."""
        dt, duration = self.step_s, self.traffic.duration
        self.cluster.bootstrap(self.ctrl.initial_replicas())
        steps = math.ceil(duration / dt)
        for i in range(steps):
            t0 = i * dt
            t1 = min(duration, t0 + dt)
            self._sec = [0.0, 0.0, 0.0, 0.0]
            arriving = float(self._per_step[i])
            self._arr = arriving / (t1 - t0)
            self.rec.offered += arriving
            self._sec[0] = arriving
            requests = self._activator(t0, arriving)
            p95, queue = self._serve(t1, t1 - t0, requests)
            queue += sum(w[1] for w in self.waiting) * self.m
            self.control_step(t1)
            self.record_row(t0, t1 - t0, tuple(self._sec), queue, p95)  # type: ignore[arg-type]
            if progress is not None:
                progress.update(t1 - t0)
        self.rec.extra["requests_in_flight_at_end"] = round(
            sum(f.queue for f in self.flows.values()) / self.m + sum(w[1] for w in self.waiting)
        )
        self.rec.extra["engine"] = "fluid"
        self.rec.extra["fluid_step_s"] = dt
        return self.finish()
