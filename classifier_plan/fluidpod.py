"""One pod as a flow, the way the request-level engine's pod behaves when it is full.

A pod admits images while its ``classifier_queue_depth`` (the batch on the inference thread plus what waits)
stays within its queue limit (``max_queue_images``, and what it drains within the queue-wait budget) and
refuses the rest at once (503), like ``des/pod.py``'s admission. What
it cannot serve at once waits in a first-in-first-out backlog of cohorts; a cohort that reaches the front
``request_timeout_ms`` after it was admitted is dropped (504) without using the pod, like the batcher's
deadline check. Each cohort keeps the time its requests arrived (at the pod, or earlier at Knative's
activator), so the requests it holds are answered with the wait they really had.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from classifier_plan.cluster import Pod

_EPS = 1e-6
"""Images: below this a cohort or backlog is empty (float residue would read as load forever)."""


class PodFlow:
    """One ready (or draining) pod: its backlog and what a scrape reads."""

    __slots__ = ("backlog", "busy", "drain_at", "images", "last", "pod", "queue", "rho")

    def __init__(self, pod: Pod, now: float) -> None:
        self.pod = pod
        self.backlog: deque[list[float]] = deque()  # [arrived at, admitted at, images, wait s]
        self.queue = 0.0  # images in the backlog
        self.rho = 0.0  # share of the pod's capacity used in the last step
        self.busy, self.images, self.last = 0.0, 0.0, now
        self.drain_at: float | None = None  # when the pod was told to drain (None: routable)

    @property
    def draining(self) -> bool:
        return self.drain_at is not None


@dataclass
class StepOut:
    """What one pod did in one step (images), and the waits of the images served from a queue."""

    direct: float = 0.0  # served at once, the pod's steady-state latency at its load
    refused: float = 0.0
    timed_out: float = 0.0
    waited: list[tuple[float, float]] = field(default_factory=list)  # (wait s, images) served after waiting


class FlowModel:
    """The limits every pod of a run shares: capacity, queue limit, deadline."""

    def __init__(
        self,
        capacity_img_per_s: float,
        queue_limit_images: float,
        batch_cap: int,
        timeout_s: float,
        answer_timeout_s: float = math.inf,
    ):
        self.mu = max(1e-9, capacity_img_per_s)
        # The batch on the inference thread counts in the queue depth too: a full pod has it and the backlog.
        self.in_service = float(min(batch_cap, queue_limit_images))
        self.backlog_cap = max(0.0, float(queue_limit_images) - self.in_service)
        self.timeout_s = timeout_s  # from admission to the pod (request_timeout_ms)
        self.answer_timeout_s = answer_timeout_s  # from arrival (Knative's revision timeout, for held requests)

    def depth(self, f: PodFlow) -> float:
        """Images admitted and not through the forward pass, beyond the steady state's (0 with no backlog)."""
        return f.queue + self.in_service if f.queue > 0 else 0.0

    def step(self, f: PodFlow, t0: float, dt: float, new: float, held: list[tuple[float, float]]) -> StepOut:
        """``new`` images arriving evenly over ``[t0, t0 + dt)`` and ``held`` cohorts (arrived at, images)
        released to the pod at ``t0``: serve, queue, refuse and drop for one step."""
        out = StepOut()
        cap = self.mu * dt
        if not f.backlog and not held and new <= cap:
            out.direct, f.rho = new, new / cap  # the common case: a pod below capacity
            return out
        used = self._drain_backlog(f, t0, cap, out)
        for arrived, images in held:  # all at t0, in front of this step's arrivals: their wait is exact
            take = min(images, cap - used)
            if take > 0:
                out.waited.append((t0 - arrived + used / self.mu, take))
                used += take
            self._admit(f, arrived, t0, images - take, t0 - arrived + (used + f.queue) / self.mu, out)
        # This step's arrivals see the backlog as it is over the step (start and end averaged): in a full pod
        # it stays at the queue limit while the pod serves and refuses, and each admitted image waits for it.
        start = f.queue + used
        take = min(new, cap - used)
        used += take
        admit = self._admit(f, t0 + dt / 2.0, t0 + dt / 2.0, new - take, 0.0, out)
        if take > 0:
            if start <= 0 and f.queue <= 0:
                out.direct += take  # served as it came: the pod's steady state at this load
            else:
                out.waited.append(((start + f.queue) / 2.0 / self.mu, take))
        if admit is not None:
            admit[3] = (start + f.queue) / 2.0 / self.mu
        if f.queue < _EPS:
            f.backlog.clear()
            f.queue = 0.0
        f.rho = min(1.0, used / cap)
        return out

    def _admit(
        self, f: PodFlow, arrived: float, admitted: float, images: float, wait_s: float, out: StepOut
    ) -> list[float] | None:
        """Queue what fits within the queue limit (a new cohort, returned), refuse the rest."""
        if images <= _EPS:
            return None
        admit = min(images, max(0.0, self.backlog_cap - f.queue))
        out.refused += images - admit
        if admit <= _EPS:
            return None
        cohort = [arrived, admitted, admit, wait_s]
        f.backlog.append(cohort)
        f.queue += admit
        return cohort

    def _drain_backlog(self, f: PodFlow, t0: float, cap: float, out: StepOut) -> float:
        """Serve the backlog from its front for up to ``cap`` images; drop what reached the front too late.

        A served cohort waited what the queue ahead of it held when it was admitted (at most the time it
        took to reach the front), plus its wait at the activator.
        """
        used = 0.0
        while f.backlog and used < cap:
            arrived, admitted, images, wait_s = f.backlog[0]
            at = t0 + used / self.mu
            if at - admitted >= self.timeout_s or at - arrived >= self.answer_timeout_s:
                out.timed_out += images
                f.queue -= images
                f.backlog.popleft()
                continue
            take = min(images, cap - used)
            queued = min(wait_s - (admitted - arrived), at + take / 2.0 / self.mu - admitted)
            out.waited.append((admitted - arrived + max(0.0, queued), take))
            used += take
            f.backlog[0][2] -= take
            f.queue -= take
            if f.backlog[0][2] < _EPS:
                f.queue -= f.backlog[0][2]
                f.backlog.popleft()
        return used

    def drop_all(self, f: PodFlow) -> float:
        """The pod is gone: the images it still held (they fail)."""
        lost = f.queue
        f.backlog.clear()
        f.queue = 0.0
        return lost
