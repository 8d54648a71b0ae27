"""Aggregated (fluid) engine: flows instead of requests, for internet-scale traffic and long horizons.

Each step of ``step_s``, the expected arrivals are split evenly over the ready pods. A pod serves at most its capacity
(the forward pass at the latency-capped batch size, and the event loop / decode pool where those are separate); what
it cannot serve waits in a first-in-first-out backlog bounded by ``max_queue_images`` and by what the pod drains
within the queue-wait budget (the rest is refused at once, 503), and what reaches the front ``request_timeout_ms``
after it was admitted is dropped (504) (:mod:`classifier_plan.fluidpod`). Latency, busy share, queue depth and
in-flight requests of a pod below capacity come from the pod curve (the request-level engine run once per load level,
:mod:`classifier_plan.podcurve`; an idle pod is idle); a request that waited (in a backlog, or held at Knative's
activator or the HTTP add-on's interceptor while no pod was ready) is answered after its wait plus a full pod's
service time. Held requests reach the pods as their holder sends them (:mod:`classifier_plan.holder`: paced by the
pods' free slots, or all at once), one-second steps while any wait. Pods, nodes, autoscalers and costs are the same
code as the request-level engine's. ``tests/plan/test_engine_agreement.py`` holds the two engines to each other."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from classifier_plan.cluster import Pod
from classifier_plan.control import PodSample
from classifier_plan.engine import EngineBase
from classifier_plan.fluidpod import FlowModel, PodFlow, StepOut
from classifier_plan.podcurve import QUANTILES, PodCurve, pod_curve

_WEIGHTS = np.diff(np.array([*QUANTILES, 1.0]))
"""Probability mass between consecutive quantiles (the last: above the 99.9th)."""


def _masses(qs: np.ndarray) -> np.ndarray:
    """A latency for each mass of :data:`_WEIGHTS`: the middle of its two quantiles (the top one alone)."""
    return np.concatenate([(qs[:-1] + qs[1:]) / 2.0, qs[-1:]])


def _weighted_p95(parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The 95th percentile of latencies given as (values, weights) pieces (NaN when nothing was served)."""
    if not parts:
        return math.nan
    v = np.concatenate([p[0] for p in parts])
    w = np.concatenate([p[1] for p in parts])
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    return float(v[order][min(len(v) - 1, int(np.searchsorted(cum, 0.95 * cum[-1])))])


class FluidEngine(EngineBase):
    """Runs one scenario as flows, ``step_s`` at a time."""

    def __init__(self, *args: Any, step_s: float = 1.0, curve: PodCurve | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        st, pm = self.settings, self.s.pod_model
        self.step_s = step_s
        self.curve = curve or pod_curve(self.s, self.traffic)
        self.mu = self.curve.capacity_img_per_s
        counts, p = self.traffic.image_weights
        ok = counts <= st.max_images_per_request
        self.too_large = float(p[~ok].sum())  # share of requests refused (400) for their image count
        self.m = float((counts[ok] * p[ok]).sum() / p[ok].sum()) if ok.any() else 1.0
        h = self.holder
        answer_s = h.timeout_s if h is not None and h.bounds_answer else math.inf
        self.model = FlowModel(
            self.mu, self.s.queue_limit_images(self.m), self.s.batch_cap, st.request_timeout_ms / 1000.0, answer_s
        )
        self.flows: dict[int, PodFlow] = {}
        self.waiting: deque[list[float]] = deque()  # [arrived at, requests] held (activator or interceptor)
        self._conc = 0.0
        self._arr = 0.0
        # Expected arrivals up to each whole second (the per-second rates, linear inside a second).
        self._cum = np.concatenate([[0.0], np.cumsum(self.traffic.per_second())])
        self._at_cache: dict[tuple[float, int], tuple[Any, ...]] = {}
        self._pods = 1  # routable pods in the current step (the curve's arrival spacing)
        idle = self._curve(0.0)[0]
        # Served after waiting: the wait, then a full pod's share of the batch ahead and its own full batch
        # instead of the lone request's single-image forward.
        full_ms = 1000.0 * self.model.in_service / self.mu
        self._waited_masses = idle + max(0.0, full_ms - pm.batch_ms(1))

    def _curve(self, rho: float, pods: int = 1) -> tuple[Any, ...]:
        """The pod curve at ``rho`` on one of ``pods`` pods (memoised on a 0.1 % grid: most steps repeat)."""
        key = (round(rho, 3), pods)
        got = self._at_cache.get(key)
        if got is None:
            qs, mean, busy, depth, inflight = self.curve.at(key[0], pods)
            got = (_masses(np.asarray(qs)), float(mean), float(busy), float(depth), float(inflight))
            self._at_cache[key] = got
        return got

    # ------------------------------------------------------------------ Listener / Signals
    def on_ready(self, pod: Pod, now: float) -> None:
        self.flows[pod.id] = PodFlow(pod, now)
        self.note_ready(now)

    def on_drain(self, pod: Pod, now: float) -> None:
        f = self.flows.get(pod.id)
        if f is not None:
            f.drain_at = now

    def on_kill(self, pod: Pod, now: float) -> None:
        f = self.flows.pop(pod.id, None)
        if f is not None:
            lost = self.model.drop_all(f) / self.m
            self.rec.failed += lost
            self._sec[3] += lost
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
        _, _, _, depth, inflight = self._curve(f.rho, self._pods)
        extra = self.model.depth(f)
        s = PodSample(max(depth, extra), max(inflight, extra / self.m), f.busy, f.images, now - f.last)
        f.busy, f.images, f.last = 0.0, 0.0, now
        return s

    # ------------------------------------------------------------------ one step
    def _activator(
        self, now: float, dt: float, arriving: float
    ) -> tuple[float, list[tuple[float, float]], dict[int, float]]:
        """Arrivals sent straight to pods; held cohorts released now (arrived at, requests) and each pod's share
        of them. Requests wait while no pod is ready, and behind those still waiting (:mod:`classifier_plan.holder`)."""
        routable = [f for f in self.flows.values() if not f.draining]
        if not routable and arriving > 0:
            self.note_arrival_without_pods(now)
        if self.holder is None:
            if not routable:
                self._refuse(arriving)
                self.rec.refused_no_pods += arriving
                return 0.0, [], {}
            return arriving, [], {}
        while self.waiting and now - self.waiting[0][0] >= self.holder.timeout_s:
            late = self.waiting.popleft()[1]
            self.rec.timed_out += late
            self._sec[3] += late
            self.rec.timed_out_waking += late
        if routable and not self.waiting:
            return arriving, [], {}
        room = max(0.0, self.holder.queue_depth - sum(w[1] for w in self.waiting))
        self._refuse(max(0.0, arriving - room), waking=True)  # the holder's queue is full: 503 at once
        if min(arriving, room) > 0:
            self.waiting.append([now, min(arriving, room)])
        return (0.0, *self._release(routable, dt)) if routable else (0.0, [], {})

    def _refuse(self, requests: float, waking: bool = False) -> None:
        self.rec.refused += requests
        self._sec[2] += requests
        if waking:
            self.rec.refused_waking += requests

    def _release(self, routable: list[PodFlow], dt: float) -> tuple[list[tuple[float, float]], dict[int, float]]:
        """Held requests for the pods, oldest first, and each pod's share: the step's cohorts and {pod id: share}.

        With a per-pod limit (the activator) as many as the pods' free slots over the step take (the rest keep
        waiting); without one (the interceptor), or when a pod's queue fills before its slots do (a request it
        refuses frees its slot, so the activator sends the next one at once), all of them at once, what does not
        fit the pods' queues refused.
        """
        limit = self.holder.per_pod if self.holder else 0
        queue_img = self.model.backlog_cap + self.model.in_service
        paced = bool(limit) and limit * self.m <= queue_img + 1e-9
        if paced:  # a pod's free slots now (its batch and backlog take some), and those its service frees
            room_img = limit * self.m - self.model.in_service
            rooms = {f.pod.id: (max(0.0, room_img - f.queue) + self.mu * dt) / self.m for f in routable}
        else:  # what fits each pod's queue at once
            rooms = {f.pod.id: max(0.0, queue_img - self.model.depth(f)) / self.m for f in routable}
        total = sum(rooms.values())
        out, left = [], total if paced else math.inf
        while self.waiting and left > 1e-9:
            at, r = self.waiting[0]
            take = min(r, left)
            out.append((at, take))
            left -= take
            if take >= r - 1e-9:
                self.waiting.popleft()
            else:
                self.waiting[0][1] = r - take
        held = sum(r for _, r in out)
        if not paced and held > total:  # refused at once by the pods' full queues (503)
            self._refuse(held - total, waking=True)
            out = self._fitting(out, total, fifo=bool(limit))
        return out, {k: v / total if total > 0 else 1.0 / len(rooms) for k, v in rooms.items()}

    @staticmethod
    def _fitting(cohorts: list[tuple[float, float]], total: float, fifo: bool) -> list[tuple[float, float]]:
        """The part of ``cohorts`` the pods take: the oldest first (the activator's queue order), or an equal
        share of each (the interceptor's goroutines race for the pod)."""
        held = sum(r for _, r in cohorts)
        if not fifo:
            return [(at, r * total / held) for at, r in cohorts]
        out, left = [], total
        for at, r in cohorts:
            if left <= 1e-9:
                break
            out.append((at, min(r, left)))
            left -= min(r, left)
        return out

    def _serve(
        self, t0: float, dt: float, requests: float, held: list[tuple[float, float]], shares: dict[int, float]
    ) -> tuple[float, float]:
        """Move the flows one step (``held`` split by ``shares``); returns (p95 ms of what was served, queued
        images)."""
        routable = [f for f in self.flows.values() if not f.draining]
        n = self._pods = max(1, len(routable))
        new = requests * self.m / n if routable else 0.0
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        direct: dict[float, float] = {}
        conc = queue = 0.0
        grace = self.s.plan.pod.termination_grace_s
        for f in list(self.flows.values()):
            if f.draining and f.drain_at is not None and t0 + dt - f.drain_at >= grace and f.queue > 0:
                self.on_kill(f.pod, t0 + dt)  # the grace period ran out with requests inside
                continue
            mine = [(at, r * self.m * shares.get(f.pod.id, 0.0)) for at, r in held] if not f.draining else []
            out = self.model.step(f, t0, dt, 0.0 if f.draining else new, mine)
            masses, mean, busy, depth, _ = self._curve(f.rho, n)
            self._count(out)
            served = out.direct + sum(w[1] for w in out.waited)
            f.busy += dt if (f.queue > 0 or out.waited) else busy * dt
            f.images += served
            if out.direct > 0:
                direct[round(f.rho, 3)] = direct.get(round(f.rho, 3), 0.0) + out.direct / self.m
            for wait_s, images in out.waited:
                parts.append((self._waited_masses + 1000.0 * wait_s, images / self.m * _WEIGHTS))
            conc += out.direct / self.m / dt * mean / 1000.0 + self.model.depth(f) / self.m
            queue += max(depth, self.model.depth(f))
            if f.draining and f.queue <= 0:
                self.flows.pop(f.pod.id, None)
                self.cluster.pod_drained(f.pod, t0 + dt)
        for rho, reqs in direct.items():
            parts.append((self._curve(rho, n)[0], reqs * _WEIGHTS))
        for masses, w in parts:
            self.rec.latency.add(masses, w)
        self._conc = conc + sum(w[1] for w in self.waiting)
        return _weighted_p95(parts), queue

    def _count(self, out: StepOut) -> None:
        m = self.m
        served = (out.direct + sum(w[1] for w in out.waited)) / m
        self.rec.served += served
        self.rec.refused += out.refused / m
        self.rec.timed_out += out.timed_out / m
        self._sec[1] += served
        self._sec[2] += out.refused / m
        self._sec[3] += out.timed_out / m

    def _expected(self, t0: float, t1: float) -> float:
        """Expected arrivals in ``[t0, t1)`` (O(1): a month has millions of seconds)."""
        return self._cum_at(t1) - self._cum_at(t0)

    def _cum_at(self, t: float) -> float:
        """Expected arrivals before ``t``: the per-second cumulative sum, linear inside a second."""
        cum = self._cum
        i = min(int(t), len(cum) - 1)
        if i >= len(cum) - 1 or t == i:
            return float(cum[i])
        return float((cum[i + 1] - cum[i]) * (t - i) + cum[i])

    def _fine(self, t0: float, coarse: float) -> bool:
        """Whether the next step must be one second: requests wait for a pod (at the activator, or arriving
        while none is ready) or a pod holds a backlog; these are held to the request engine at 1 s."""
        if self.waiting or any(f.queue > 0 for f in self.flows.values()):
            return True
        routable = any(not f.draining for f in self.flows.values())
        return not routable and self._expected(t0, t0 + coarse) > 0

    def run(self, progress: Any = None) -> dict[str, float]:
        """Simulate the whole profile, ``step_s`` at a time (one second where :meth:`_fine`); returns the cost."""
        duration = self.traffic.duration
        self.cluster.bootstrap(self.ctrl.initial_replicas())
        self._sec = [0.0, 0.0, 0.0, 0.0]
        t0 = 0.0
        while t0 < duration - 1e-9:
            dt = self.step_s
            if dt > 1.0 and self._fine(t0, dt):
                dt = 1.0
            t1 = min(duration, t0 + dt)
            arriving = self._expected(t0, t1)
            self._arr = arriving / (t1 - t0)
            self.rec.offered += arriving
            self._sec[0] += arriving
            too_large = arriving * self.too_large
            self.rec.refused += too_large
            self._sec[2] += too_large
            requests, held, shares = self._activator(t0, t1 - t0, arriving - too_large)
            p95, queue = self._serve(t0, t1 - t0, requests, held, shares)
            queue += sum(w[1] for w in self.waiting) * self.m
            self.control_step(t1)
            self.record_row(t0, t1 - t0, tuple(self._sec), queue, p95)  # type: ignore[arg-type]
            self._sec = [0.0, 0.0, 0.0, 0.0]
            if progress is not None:
                progress.update(t1 - t0)
            t0 = t1
        self.rec.extra["requests_in_flight_at_end"] = round(
            sum(f.queue for f in self.flows.values()) / self.m + sum(w[1] for w in self.waiting)
        )
        self.rec.extra["engine"] = "fluid"
        self.rec.extra["fluid_step_s"] = self.step_s
        return self.finish()
