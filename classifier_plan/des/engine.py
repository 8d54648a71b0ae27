"""The request-level engine: arrivals, round-robin routing, the requests held while no pod is ready (Knative's
activator, the HTTP add-on's interceptor) and the control loop, over one
:class:`~classifier_plan.des.pod.PodQueue` per ready pod."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import simpy

from classifier_plan.cluster import Pod
from classifier_plan.control import PodSample
from classifier_plan.des.holding import HeldRequests
from classifier_plan.des.pod import PodQueue
from classifier_plan.des.service import ServiceModel
from classifier_plan.des.tally import Request, Tally
from classifier_plan.engine import EngineBase


class DesEngine(EngineBase):
    """Runs one scenario request by request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env = simpy.Environment()
        self.service = ServiceModel(self.s, self.traffic.mean_images, random.Random(self.seed + 2))
        self.tally = Tally(self.env)
        self.pq: dict[int, PodQueue] = {}
        self.routable: list[PodQueue] = []
        self.rr = 0
        rng = random.Random(self.seed + 3)  # the order an interceptor's held requests reach the pods
        self.held = HeldRequests(self.holder, self.tally, self.rec, rng) if self.holder else None
        self.on_second: Any = None  # called at the end of each simulated second (fixed-pod runs sample there)
        self._last_concurrency, self._last_arrivals = 0.0, 0

    # ------------------------------------------------------------------ Listener
    def on_ready(self, pod: Pod, now: float) -> None:
        q = PodQueue(pod, now, self.env, self.settings, self.service, self.tally, self._kill_if_left)
        self.pq[pod.id] = q
        self.routable.append(q)
        self.env.process(q.serve())
        self.note_ready(now)
        if self.held is not None:
            q.on_slot = self._release
            self._release()

    def _release(self) -> None:
        """Held requests to pods with room (on a new pod, and whenever requests leave one)."""
        if self.held is not None and len(self.held):
            self.held.release(self.routable, self.env.now)

    def on_drain(self, pod: Pod, now: float) -> None:
        q = self.pq[pod.id]
        q.drain()
        if q in self.routable:
            self.routable.remove(q)
        grace = self.s.plan.pod.termination_grace_s
        self.env.timeout(grace).callbacks.append(lambda _e, p=pod: self._kill_if_left(p))

    def on_kill(self, pod: Pod, now: float) -> None:
        self._kill_if_left(pod)

    def _kill_if_left(self, pod: Pod) -> None:
        q = self.pq.pop(pod.id, None)
        if q is None:
            return
        q.kill()
        if pod.state == "draining":
            self.cluster.pod_drained(pod, self.env.now)

    # ------------------------------------------------------------------ Signals
    def concurrency(self) -> float:
        return self._last_concurrency

    def arrivals(self) -> float:
        return float(self._last_arrivals)

    def waiting_at_activator(self) -> int:
        return len(self.held) if self.held is not None else 0

    def scrape(self, pod: Pod, now: float) -> PodSample:
        q = self.pq.get(pod.id)
        return PodSample(0, 0, 0, 0, 0) if q is None else q.scrape(now)

    # ------------------------------------------------------------------ requests
    def _arrive(self, images: int) -> None:
        now = self.env.now
        req = Request(now, images)
        self.tally.arrived()
        if images > self.settings.max_images_per_request:
            self.tally.outcome(req, "refused")  # 400: more images than the server accepts
            return
        if not self.routable:
            self.note_arrival_without_pods(now)
        if self.held is not None and (len(self.held) or not self.routable):
            self.held.hold(req, now)  # held while no pod is ready, and behind those still held after
            self._release()
            return
        if not self.routable:
            self.tally.outcome(req, "refused")  # no endpoints and nothing holds requests: 503
            self.rec.refused_no_pods += 1
            return
        self._route(req)

    def _route(self, req: Request) -> None:
        self.rr = (self.rr + 1) % len(self.routable)
        self.routable[self.rr].admit(req)

    # ------------------------------------------------------------------ loops
    def _arrivals(self) -> Any:
        env = self.env
        for times, images in self.traffic.arrivals_chunks():
            for t, k in zip(times.tolist(), images.tolist(), strict=True):
                if t > env.now:
                    yield env.timeout(t - env.now)
                self._arrive(int(k))

    def _control(self, progress: Any) -> Any:
        env = self.env
        self.cluster.bootstrap(self.ctrl.initial_replicas())
        while env.now < self.traffic.duration:
            yield env.timeout(1.0)
            now = env.now
            self._last_concurrency, self._last_arrivals = self.tally.take_signals()
            if self.held is not None:
                self.held.expire(now)
            for q in self.pq.values():
                q.new_second()
            self.control_step(now)
            if self.on_second is not None:
                self.on_second(now)
            self._record_second(now)
            if progress is not None:
                progress.update(1)

    def _record_second(self, now: float) -> None:
        """The timeline row of the second that ends at ``now``."""
        counts, latencies = self.tally.take_second()
        lat = sorted(latencies)
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else math.nan
        self.rec.latency.add(np.asarray(lat))
        queue = sum(q.depth for q in self.pq.values()) + (self.held.images if self.held is not None else 0)
        self.record_row(now - 1.0, 1.0, counts, queue, p95)

    def run(self, progress: Any = None) -> dict[str, float]:
        """Simulate the whole profile; returns the cost dict (typical, low, high discount)."""
        self.env.process(self._control(progress))
        self.env.process(self._arrivals())
        self.env.run(until=self.traffic.duration + 1e-6)
        o, r = self.tally.outcomes, self.rec
        r.offered = sum(row[1] for row in r.rows)
        r.served, r.refused, r.timed_out, r.failed = o["served"], o["refused"], o["timed_out"], o["failed"]
        r.extra["requests_in_flight_at_end"] = int(r.offered - sum(o.values()))
        r.extra["engine"] = "request"
        return self.finish()
