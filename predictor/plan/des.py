"""Request-level engine: a discrete-event simulation (simpy) of every request through the pods.

Each pod is the predictor as measured: admission against ``max_queue_images`` (503 when full), the
pre-inference overhead (parsing, decoding), the batcher (a batch starts when ``max_batch_size`` images
wait or ``max_batch_delay_ms`` after its first image, one batch at a time on the inference thread,
items past ``request_timeout_ms`` dropped with 504), the forward time of the batch from the capacity
profile, then the response. Requests reach pods round-robin; in Knative mode they wait at the activator
while no pod is ready (504 after the revision timeout); in Standard mode they are refused (503).
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import Any

import numpy as np
import simpy

from predictor.plan.capacity import POST_SHARE
from predictor.plan.cluster import Pod
from predictor.plan.control import PodSample
from predictor.plan.engine import EngineBase


class _Req:
    __slots__ = ("deadline", "images", "left", "outcome", "t0")

    def __init__(self, t0: float, images: int) -> None:
        self.t0, self.images, self.left = t0, images, images
        self.outcome: str | None = None
        self.deadline = math.inf


class _PodQ:
    """The data plane of one pod."""

    __slots__ = (
        "admitted",
        "busy",
        "depth",
        "draining",
        "front",
        "full",
        "images",
        "inflight",
        "last",
        "pod",
        "queue",
        "queued",
        "rate",
        "running",
        "wake",
    )

    def __init__(self, pod: Pod, now: float) -> None:
        self.pod = pod
        self.depth = 0  # images admitted and not through the forward pass (classifier_queue_depth)
        self.queue: deque[list[Any]] = deque()  # [request, images, enqueued at]
        self.queued = 0  # images in the batcher's queue
        self.inflight = 0
        self.busy = 0.0  # forward seconds since the last scrape
        self.images = 0
        self.last = now
        self.draining = False
        self.admitted = 0  # images admitted this second, and the last whole second's (its load)
        self.rate = 0.0
        self.front = 0.0  # when this pod's event loop is free (pods whose CPU is not shared)
        self.running: list[list[Any]] = []  # the batch on the inference thread
        self.wake: simpy.Event | None = None
        self.full: simpy.Event | None = None


class DesEngine(EngineBase):
    """Runs one scenario request by request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env = simpy.Environment()
        self.rng = random.Random(self.seed + 2)
        self.pq: dict[int, _PodQ] = {}
        self.routable: list[_PodQ] = []
        self.rr = 0
        self.waiting: deque[_Req] = deque()
        self.inflight = 0
        self.area = 0.0
        self.last_change = 0.0
        self.queued_total = 0
        self.sec = [0, 0, 0, 0]  # offered, served, refused, timed out in the current second
        self.sec_lat: list[float] = []
        self.arrived_sec = 0
        self.outcomes = {"served": 0, "refused": 0, "timed_out": 0, "failed": 0}
        self.keep_latencies: list[float] | None = None  # every served latency (ms), for fixed-pod runs
        self.keep_after = 0.0
        self.on_second: Any = None
        pm, st = self.s.pod_model, self.settings
        self.jitter_s = min(pm.overhead_jitter_ms, pm.overhead_ms) / 1000.0
        self.jitter_u_s = pm.jitter_per_utilization_ms / 1000.0
        self.cap_img = max(1e-9, pm.capacity(st.max_batch_size, self.traffic.mean_images))
        self.pre_s = (pm.overhead_ms - self.jitter_s * 1000.0) * (1 - POST_SHARE) / 1000.0
        self.post_s = (pm.overhead_ms - self.jitter_s * 1000.0) * POST_SHARE / 1000.0
        self.delay_s = st.max_batch_delay_ms / 1000.0
        self.batch_s = [pm.batch_ms(n) / 1000.0 for n in range(st.max_batch_size + 1)]

    # ------------------------------------------------------------------ accounting
    def _inflight(self, delta: int) -> None:
        now = self.env.now
        self.area += self.inflight * (now - self.last_change)
        self.last_change = now
        self.inflight += delta

    def _outcome(self, req: _Req, kind: str, latency_s: float | None = None) -> None:
        assert req.outcome is None, f"request already {req.outcome}, now {kind}"
        req.outcome = kind
        self.outcomes[kind] += 1
        self._inflight(-1)
        if kind == "served":
            self.sec[1] += 1
            self.sec_lat.append(1000.0 * latency_s)  # type: ignore[operator]
            if self.keep_latencies is not None and req.t0 >= self.keep_after:
                self.keep_latencies.append(1000.0 * latency_s)  # type: ignore[operator]
        elif kind == "refused":
            self.sec[2] += 1
        else:
            self.sec[3] += 1

    # ------------------------------------------------------------------ Listener
    def on_ready(self, pod: Pod, now: float) -> None:
        q = _PodQ(pod, now)
        self.pq[pod.id] = q
        self.routable.append(q)
        self.env.process(self._batcher(q))
        self.note_ready(now)
        while self.waiting and self.routable:
            self._route(self.waiting.popleft())

    def on_drain(self, pod: Pod, now: float) -> None:
        q = self.pq[pod.id]
        q.draining = True
        if q in self.routable:
            self.routable.remove(q)
        if q.wake is not None and not q.wake.triggered:
            q.wake.succeed()
        grace = self.s.plan.pod.termination_grace_s
        self.env.timeout(grace).callbacks.append(lambda _e, p=pod: self._kill_if_left(p))

    def on_kill(self, pod: Pod, now: float) -> None:
        self._kill_if_left(pod)

    def _kill_if_left(self, pod: Pod) -> None:
        q = self.pq.pop(pod.id, None)
        if q is None:
            return
        for req, *_ in [*q.queue, *q.running]:
            if req.outcome is None:
                self._outcome(req, "failed")
        self.queued_total -= q.depth
        q.queue.clear()
        q.depth = 0
        if pod.state == "draining":
            self.cluster.pod_drained(pod, self.env.now)

    # ------------------------------------------------------------------ Signals
    def concurrency(self) -> float:
        return self._last_concurrency

    def arrivals(self) -> float:
        return float(self._last_arrivals)

    def waiting_at_activator(self) -> int:
        return len(self.waiting)

    def scrape(self, pod: Pod, now: float) -> PodSample:
        q = self.pq.get(pod.id)
        if q is None:
            return PodSample(0, 0, 0, 0, 0)
        sample = PodSample(q.depth, q.inflight, q.busy, q.images, now - q.last)
        q.busy, q.images, q.last = 0.0, 0, now
        return sample

    # ------------------------------------------------------------------ requests
    def _arrive(self, images: int) -> None:
        now = self.env.now
        req = _Req(now, images)
        self.sec[0] += 1
        self.arrived_sec += 1
        self._inflight(+1)
        if images > self.settings.max_images_per_request:
            self._outcome(req, "refused")  # 400: more images than the server accepts
            return
        if not self.routable:
            self.note_arrival_without_pods(now)
            if self.activator:
                req.deadline = now + self.activator_timeout_s
                self.waiting.append(req)
            else:
                self._outcome(req, "refused")  # no endpoints: the gateway answers 503
            return
        self._route(req)

    def _route(self, req: _Req) -> None:
        now = self.env.now
        if req.deadline <= now:
            self._outcome(req, "timed_out")  # the activator gave up
            return
        self.rr = (self.rr + 1) % len(self.routable)
        q = self.routable[self.rr]
        k = req.images
        if q.depth + k > self.settings.max_queue_images:
            self._outcome(req, "refused")
            return
        q.depth += k
        q.admitted += k
        q.inflight += 1
        self.queued_total += k
        req.deadline = now + self.settings.request_timeout_ms / 1000.0
        pm = self.s.pod_model
        pre = self.pre_s + (k - 1) * pm.decode_ms_per_image / 1000.0 / max(1, pm.decode_threads)
        theta = self.jitter_s + self.jitter_u_s * min(1.0, q.rate / self.cap_img)
        if theta > 0:
            pre += self.rng.expovariate(1.0 / theta)
        if not pm.cpu_shared and pm.frontend_ms_per_request > 0:
            q.front = max(now, q.front) + pm.frontend_ms_per_request / 1000.0
            pre += q.front - now
        self.env.timeout(pre).callbacks.append(lambda _e, q=q, r=req: self._enqueue(q, r))

    def _enqueue(self, q: _PodQ, req: _Req) -> None:
        if q.pod.id not in self.pq:
            return  # the pod was killed meanwhile
        q.queue.append([req, req.images, self.env.now])
        q.queued += req.images
        if q.wake is not None and not q.wake.triggered:
            q.wake.succeed()
        elif q.full is not None and not q.full.triggered and q.queued >= self.settings.max_batch_size:
            q.full.succeed()

    def _take(self, q: _PodQ) -> list[list[Any]]:
        """Up to ``max_batch_size`` images from the front; requests past their deadline get 504."""
        cap, now = self.settings.max_batch_size, self.env.now
        batch: list[list[Any]] = []
        n = 0
        while q.queue and n < cap:
            item = q.queue[0]
            req, left = item[0], item[1]
            if req.outcome is not None or req.deadline <= now:
                q.queue.popleft()
                q.queued -= left
                q.depth -= left
                self.queued_total -= left
                if req.outcome is None:
                    self._outcome(req, "timed_out")
                    q.inflight -= 1
                continue
            take = min(left, cap - n)
            batch.append([req, take])
            n += take
            if take == left:
                q.queue.popleft()
            else:
                item[1] = left - take
            q.queued -= take
        return batch

    def _batcher(self, q: _PodQ) -> Any:
        env, cap = self.env, self.settings.max_batch_size
        while q.pod.id in self.pq:
            if not q.queue:
                if q.draining and q.depth == 0:
                    self._kill_if_left(q.pod)
                    return
                q.wake = env.event()
                yield q.wake
                q.wake = None
                continue
            remaining = q.queue[0][2] + self.delay_s - env.now
            if q.queued < cap and remaining > 0:
                q.full = env.event()
                yield env.timeout(remaining) | q.full
                q.full = None
            batch = self._take(q)
            n = sum(b[1] for b in batch)
            if n == 0:
                continue
            run = self.batch_s[n]
            q.running = batch
            yield env.timeout(run)
            q.running = []
            if q.pod.id not in self.pq:
                return
            q.busy += run
            q.images += n
            q.depth -= n
            self.queued_total -= n
            done = env.now + self.post_s
            for req, took in batch:
                req.left -= took
                if req.left == 0 and req.outcome is None:
                    q.inflight -= 1
                    self._outcome(req, "served", done - req.t0)

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
        self._last_concurrency, self._last_arrivals = 0.0, 0
        self.cluster.bootstrap(self.ctrl.initial_replicas())
        while env.now < self.traffic.duration:
            yield env.timeout(1.0)
            now = env.now
            self._inflight(0)
            self._last_concurrency, self.area = self.area, 0.0
            self._last_arrivals, self.arrived_sec = self.arrived_sec, 0
            while self.waiting and self.waiting[0].deadline <= now:
                req = self.waiting.popleft()
                self._outcome(req, "timed_out")
            for q in self.pq.values():
                q.rate, q.admitted = float(q.admitted), 0
            self.control_step(now)
            if self.on_second is not None:
                self.on_second(now)
            lat = sorted(self.sec_lat)
            p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else math.nan
            self.rec.latency.add(np.asarray(lat))
            queue = self.queued_total + sum(r.images for r in self.waiting)
            self.record_row(now - 1.0, 1.0, tuple(self.sec), queue, p95)  # type: ignore[arg-type]
            self.sec, self.sec_lat = [0, 0, 0, 0], []
            if progress is not None:
                progress.update(1)

    def run(self, progress: Any = None) -> dict[str, float]:
        """Simulate the whole profile; returns the cost dict (typical, low, high discount)."""
        self.env.process(self._control(progress))
        self.env.process(self._arrivals())
        self.env.run(until=self.traffic.duration + 1e-6)
        o, r = self.outcomes, self.rec
        r.offered = sum(row[1] for row in r.rows)
        r.served, r.refused, r.timed_out, r.failed = o["served"], o["refused"], o["timed_out"], o["failed"]
        r.extra["requests_in_flight_at_end"] = int(r.offered - sum(o.values()))
        r.extra["engine"] = "request"
        return self.finish()
