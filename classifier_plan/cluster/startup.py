"""A bound pod's way to ready: the node ready, scheduling, the image pull (once per node), the storage
initializer, then the container runs (unready) through the measured cold start, the first startup and
readiness probes, and endpoint propagation."""

from __future__ import annotations

import random
from collections.abc import Callable

from classifier_plan.cluster.events import EventQueue
from classifier_plan.cluster.objects import Pod, PodIndex
from classifier_plan.setup import SimSetup


class PodStartup:
    """Moves pods from pending through starting to ready; counts the cold starts."""

    def __init__(
        self,
        setup: SimSetup,
        events: EventQueue,
        rng: random.Random,
        pods: PodIndex,
        on_ready: Callable[[Pod, float], None],
    ) -> None:
        self.s, self.a, self.events, self.rng = setup, setup.assumptions, events, rng
        self.pods, self._on_ready = pods, on_ready
        self.cold_starts = 0

    def begin(self, pod: Pod, t: float) -> None:
        """The kubelet starts ``pod`` at ``t`` (if it is still pending on a ready node then)."""
        self.events.at(t, lambda t2, p=pod: self._start(p, t2))

    def _start(self, pod: Pod, t: float) -> None:
        """Image pull, storage initializer, then the container runs."""
        if pod.state != "pending" or pod.node is None or pod.node.state != "ready":
            return
        node, a = pod.node, self.a
        if node.image_at is None:
            node.image_at = t + a.image_pull_s
        pulled = max(node.image_at, t + a.image_cached_pull_s)
        init = self.s.storage_init_s
        self.events.at(pulled + init, lambda t2, p=pod: self._running(p, t2))

    def _running(self, pod: Pod, t: float) -> None:
        if pod.state != "pending":
            return
        self.pods.set(pod, "starting")
        self.cold_starts += 1
        s = self.s
        probes = self.rng.uniform(0, s.plan.pod.startup_period_s) + self.rng.uniform(0, s.plan.pod.readiness_period_s)
        self.events.at(
            t + s.pod_model.cold_start_s + probes + self.a.endpoint_propagation_s, lambda t2, p=pod: self._ready(p, t2)
        )

    def _ready(self, pod: Pod, t: float) -> None:
        if pod.state != "starting":
            return
        pod.ready_at = t
        self.pods.set(pod, "ready")
        self._on_ready(pod, t)
