"""One ready pod's data plane: admission against ``max_queue_images`` and the queue-wait budget (503 when
the images ahead and its own would not drain within ``max_queue_wait_ms`` at the saturated rate; a request
finding the pod empty is always admitted), the pre-inference stage, the batcher (a batch starts at the
latency-capped batch size or ``max_batch_delay_ms`` after its first, one at a time on the inference thread,
items past their deadline dropped with 504), the forward pass and the response."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from typing import Any

import simpy

from classifier_plan.chart import PredictorSettings
from classifier_plan.cluster import Pod
from classifier_plan.control import PodSample
from classifier_plan.des.service import ServiceModel
from classifier_plan.des.tally import Request, Tally


class PodQueue:
    """The requests inside one pod, and what a scrape of it reads."""

    __slots__ = (
        "admitted",
        "busy",
        "depth",
        "draining",
        "env",
        "front",
        "full",
        "images",
        "inflight",
        "killed",
        "last",
        "on_empty",
        "on_slot",
        "pod",
        "queue",
        "queued",
        "rate",
        "running",
        "service",
        "settings",
        "tally",
        "wake",
    )

    def __init__(
        self,
        pod: Pod,
        now: float,
        env: simpy.Environment,
        settings: PredictorSettings,
        service: ServiceModel,
        tally: Tally,
        on_empty: Callable[[Pod], None],
    ) -> None:
        self.pod, self.env, self.settings, self.service, self.tally = pod, env, settings, service, tally
        self.on_empty = on_empty  # called once a draining pod has nothing left
        self.on_slot: Callable[[], None] | None = None  # called when requests leave (a holder may send more)
        self.depth = 0  # images admitted and not through the forward pass (classifier_queue_depth)
        self.queue: deque[list[Any]] = deque()  # [request, images, enqueued at]
        self.queued = 0  # images in the batcher's queue
        self.inflight = 0
        self.busy = 0.0  # forward seconds since the last scrape
        self.images = 0
        self.last = now
        self.draining = False
        self.killed = False
        self.admitted = 0  # images admitted this second, and the last whole second's (its load)
        self.rate = 0.0
        self.front = 0.0  # when this pod's event loop is free (pods whose CPU is not shared)
        self.running: list[list[Any]] = []  # the batch on the inference thread
        self.wake: simpy.Event | None = None
        self.full: simpy.Event | None = None

    # ------------------------------------------------------------------ control
    def new_second(self) -> None:
        """The images admitted in the second that ended become the pod's load."""
        self.rate, self.admitted = float(self.admitted), 0

    def scrape(self, now: float) -> PodSample:
        """Queue depth and in-flight requests now, busy time and images since the last scrape."""
        sample = PodSample(self.depth, self.inflight, self.busy, self.images, now - self.last)
        self.busy, self.images, self.last = 0.0, 0, now
        return sample

    def drain(self) -> None:
        """No new requests; the batcher serves what is left, then the pod reports itself empty."""
        self.draining = True
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def kill(self) -> None:
        """The container is gone: every request still inside fails."""
        self.killed = True
        for req, *_ in [*self.queue, *self.running]:
            if req.outcome is None:
                self.tally.outcome(req, "failed")
        self.queue.clear()
        self.depth = 0

    # ------------------------------------------------------------------ requests
    def admit(self, req: Request) -> None:
        """Admit ``req`` (503 when its images do not fit the queue or its budget) and start its pre-inference
        work."""
        now, k, st = self.env.now, req.images, self.settings
        if self.depth + k > st.max_queue_images or (self.depth and self.depth + k > self.service.wait_limit_images):
            self.tally.outcome(req, "refused")
            return
        self.depth += k
        self.admitted += k
        self.inflight += 1
        req.deadline = min(req.deadline, now + st.request_timeout_ms / 1000.0)  # and a holder's, if it binds
        pre = self.service.pre_inference_s(k, self.rate)
        if self.service.frontend_s > 0:
            self.front = max(now, self.front) + self.service.frontend_s
            pre += self.front - now
        self.env.timeout(pre).callbacks.append(lambda _e, r=req: self._enqueue(r))

    def _enqueue(self, req: Request) -> None:
        if self.killed:
            return
        self.queue.append([req, req.images, self.env.now])
        self.queued += req.images
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()
        elif self.full is not None and not self.full.triggered and self.queued >= self.service.batch_cap:
            self.full.succeed()

    def _take(self) -> list[list[Any]]:
        """Up to the batch cap of images from the front; requests past their deadline get 504."""
        cap, now = self.service.batch_cap, self.env.now
        batch: list[list[Any]] = []
        n = 0
        while self.queue and n < cap:
            item = self.queue[0]
            req, left = item[0], item[1]
            if req.outcome is not None or req.deadline <= now:
                self.queue.popleft()
                self.queued -= left
                self.depth -= left
                if req.outcome is None:
                    self.tally.outcome(req, "timed_out")
                    self.inflight -= 1
                    self._slot()
                continue
            take = min(left, cap - n)
            batch.append([req, take])
            n += take
            if take == left:
                self.queue.popleft()
            else:
                item[1] = left - take
            self.queued -= take
        return batch

    def serve(self) -> Generator[simpy.Event, Any, None]:
        """The batcher and the inference thread (a simpy process, for as long as the pod lives)."""
        env, svc = self.env, self.service
        cap = svc.batch_cap
        while not self.killed:
            if not self.queue:
                if self.draining and self.depth == 0:
                    self.on_empty(self.pod)
                    return
                self.wake = env.event()
                yield self.wake
                self.wake = None
                continue
            remaining = self.queue[0][2] + svc.delay_s - env.now
            if self.queued < cap and remaining > 0:
                self.full = env.event()
                yield env.timeout(remaining) | self.full
                self.full = None
            batch = self._take()
            n = sum(b[1] for b in batch)
            if n == 0:
                continue
            yield from self._forward(batch, n)

    def _forward(self, batch: list[list[Any]], n: int) -> Generator[simpy.Event, Any, None]:
        """One forward pass of ``n`` images, then the responses of the requests it completes."""
        run = self.service.batch_s[n]
        self.running = batch
        yield self.env.timeout(run)
        self.running = []
        if self.killed:
            return
        self.busy += run
        self.images += n
        self.depth -= n
        done = self.env.now + self.service.post_s
        for req, took in batch:
            req.left -= took
            if req.left == 0 and req.outcome is None:
                self.inflight -= 1
                self.tally.outcome(req, "served", done - req.t0)
        self._slot()

    def _slot(self) -> None:
        if self.on_slot is not None and not self.draining:
            self.on_slot()
