"""The requests Knative's activator or the HTTP add-on's interceptor holds, request by request
(:mod:`classifier_plan.holder` says what each does)."""

from __future__ import annotations

import math
import random
from collections import deque

from classifier_plan.des.pod import PodQueue
from classifier_plan.des.tally import Request, Tally
from classifier_plan.holder import Holder
from classifier_plan.results import Recorder


class HeldRequests:
    """Requests waiting for a pod with room: first in, first out behind a per-pod limit (the activator's
    breaker); all at once in no particular order without one (every interceptor goroutine wakes when the
    endpoint appears)."""

    def __init__(self, holder: Holder, tally: Tally, rec: Recorder, rng: random.Random) -> None:
        self.h, self.tally, self.rec, self.rng = holder, tally, rec, rng
        self.queue: deque[Request] = deque()
        self.rr = 0

    def __len__(self) -> int:
        return len(self.queue)

    @property
    def images(self) -> int:
        return sum(r.images for r in self.queue)

    def hold(self, req: Request, now: float) -> None:
        """Queue ``req`` until ``timeout_s`` after its arrival (503 at once when the queue is full)."""
        if len(self.queue) >= self.h.queue_depth:
            self.tally.outcome(req, "refused")
            self.rec.refused_waking += 1
            return
        req.deadline = now + self.h.timeout_s
        self.queue.append(req)

    def expire(self, now: float) -> None:
        """Requests that waited their whole timeout give up (counted as timed out waking)."""
        while self.queue and self.queue[0].deadline <= now:
            self.tally.outcome(self.queue.popleft(), "timed_out")
            self.rec.timed_out_waking += 1

    def release(self, pods: list[PodQueue], now: float) -> None:
        """Send waiting requests, oldest first, to pods with room (each admits or refuses at once)."""
        self.expire(now)
        if not self.h.per_pod and len(self.queue) > 1:
            order = list(self.queue)
            self.rng.shuffle(order)
            self.queue = deque(order)  # deadlines no longer in order: nothing expires before this empties
        while self.queue and pods:
            q = self._pick(pods)
            if q is None:
                return  # every pod is at its limit: the rest wait for a slot or a new pod
            req = self.queue.popleft()
            if not self.h.bounds_answer:
                req.deadline = math.inf  # from here the pod's own deadline alone
            q.admit(req)
            if req.outcome == "refused":  # the pod's queue is full
                self.rec.refused_waking += 1

    def _pick(self, pods: list[PodQueue]) -> PodQueue | None:
        """The next pod with room: round-robin, or the first one where the limit is 3 or less."""
        limit, n = self.h.per_pod, len(pods)
        if not limit:
            self.rr = (self.rr + 1) % n
            return pods[self.rr]
        start = 0 if self.h.first_available else self.rr + 1
        for i in range(n):
            q = pods[(start + i) % n]
            if q.inflight < limit:
                self.rr = (start + i) % n
                return q
        return None
