"""The cluster as one object: pods and their scheduling onto nodes; the collaborators do the rest."""

from __future__ import annotations

import itertools
import random

from classifier_plan.cluster.billing import Billing
from classifier_plan.cluster.events import EventQueue
from classifier_plan.cluster.karpenter import Karpenter
from classifier_plan.cluster.nodes import Nodes
from classifier_plan.cluster.objects import Listener, Node, Pod, PodIndex
from classifier_plan.cluster.spot import SpotReclaims
from classifier_plan.cluster.startup import PodStartup
from classifier_plan.setup import SimSetup


class Cluster:
    """The pods and nodes of one simulation.

    It keeps the Deployment's replicas, binds pods to nodes with room (else leaves them to Karpenter) and
    frees their room when they go; node lifecycle, pod start-up, Karpenter's decisions, spot reclaims and
    billing are its collaborators.
    """

    def __init__(self, setup: SimSetup, listener: Listener) -> None:
        self.s = setup
        self.a = setup.assumptions
        self.listener = listener
        rng = random.Random(self.a.seed + 1)  # probe phases and spot notices, one stream
        self._ids = itertools.count()  # pods and nodes
        self.events = EventQueue()
        self.billing = Billing(setup.prices)
        self.pods = PodIndex()
        self.karpenter = Karpenter(setup)
        self.spot = SpotReclaims(setup, self.events, rng, self._evict, self._terminate)
        self.nodes = Nodes(setup, self._ids, self.events, self.billing, self.spot, self._node_ready)
        self.startup = PodStartup(setup, self.events, rng, self.pods, listener.on_ready)
        self.replicas = 0
        self.unplaced: list[Pod] = []

    # --------------------------------------------------------------------- time
    def advance(self, now: float) -> None:
        """Run every lifecycle event due by ``now``; bill the nodes; run Karpenter and consolidation."""
        for t, fn in self.events.due(now):
            self.billing.to(t)
            fn(t)
        self.billing.to(now)
        if self.karpenter.provision_now(now, len(self.unplaced), self.nodes.by_id.values()):
            self._provision(now)
        for node in self.karpenter.to_consolidate(now, self.nodes.by_id.values()):
            self.nodes.remove(node, now)

    # --------------------------------------------------------------------- totals and views
    @property
    def cost_usd(self) -> dict[str, float]:
        """Cost so far (USD) at the typical, low and high spot discount."""
        return self.billing.cost_usd

    @property
    def node_seconds(self) -> dict[str, float]:
        """Node-seconds so far by ``instance type/capacity type``."""
        return self.billing.node_seconds

    @property
    def interruptions(self) -> int:
        return self.spot.interruptions

    @property
    def cold_starts(self) -> int:
        return self.startup.cold_starts

    def live_pods(self) -> list[Pod]:
        return self.pods.live()

    def ready_pods(self) -> list[Pod]:
        return self.pods.ready()

    def count(self, state: str) -> int:
        return self.pods.count(state)

    def nodes_by_capacity(self) -> tuple[int, int]:
        """(spot, on-demand) nodes that exist now (launching, ready or draining)."""
        live = self.billing.live_nodes
        return live["spot"], live["on-demand"]

    # --------------------------------------------------------------------- replicas
    def bootstrap(self, n: int) -> None:
        """``n`` pods already ready at t = 0 on running nodes (the deployed steady state)."""
        self.replicas = n
        for _ in range(n):
            pod = self._new_pod(0.0)
            node = self.nodes.with_room(self.s.pod_request) or self.nodes.launch(
                self.karpenter.pick_type(n), 0.0, ready_at=0.0
            )
            node.image_at, node.state = 0.0, "ready"
            self._bind(pod, node, 0.0, start=False)
            pod.ready_at = 0.0
            self.pods.set(pod, "ready")
            self.listener.on_ready(pod, 0.0)

    def set_replicas(self, now: float, n: int) -> None:
        """The Deployment's replica count: create pending pods or delete the least useful ones."""
        self.replicas = n
        live = self.live_pods()
        if len(live) < n:
            for _ in range(n - len(live)):
                self._schedule(self._new_pod(now), now)
        elif len(live) > n:
            order = {"pending": 0, "starting": 1, "ready": 2}
            victims = sorted(live, key=lambda p: (order[p.state], -(p.ready_at or p.created)))[: len(live) - n]
            for p in victims:
                self._delete(p, now)

    def pod_drained(self, pod: Pod, now: float) -> None:
        """The engine finished (or gave up on) a draining pod's queue."""
        self._gone(pod, now)

    def _new_pod(self, now: float) -> Pod:
        pod = Pod(next(self._ids), now)
        self.pods.add(pod)
        return pod

    def _delete(self, pod: Pod, now: float) -> None:
        if pod.state == "ready":
            self.pods.set(pod, "draining")
            self.listener.on_drain(pod, now)
            return
        if pod in self.unplaced:
            self.unplaced.remove(pod)
        self._gone(pod, now)

    def _gone(self, pod: Pod, now: float) -> None:
        self.pods.set(pod, "gone")
        node = pod.node
        if node is not None and pod in node.pods:
            node.pods.discard(pod)
            node.release(self.s.pod_request)
            if not node.pods:
                node.empty_since = now
            self._reschedule_unplaced(now)

    # --------------------------------------------------------------------- scheduling
    def _schedule(self, pod: Pod, now: float) -> None:
        node = self.nodes.with_room(self.s.pod_request)
        if node is None:
            self.unplaced.append(pod)
            self.karpenter.pod_unplaced(now)
            return
        self._bind(pod, node, now)

    def _reschedule_unplaced(self, now: float) -> None:
        while self.unplaced and (node := self.nodes.with_room(self.s.pod_request)) is not None:
            self._bind(self.unplaced.pop(0), node, now)

    def _bind(self, pod: Pod, node: Node, now: float, start: bool = True) -> None:
        pod.node = node
        node.pods.add(pod)
        node.empty_since = None
        node.reserve(self.s.pod_request)
        if start:
            self.startup.begin(pod, max(now + self.a.scheduling_s, node.ready_at))

    def _provision(self, now: float) -> None:
        """Karpenter's batch closed: launch nodes for the unplaced pods while the NodePool's limits allow."""
        while self.unplaced:
            itype = self.karpenter.pick_type(len(self.unplaced))
            if not self.karpenter.within_limits(itype, self.nodes.by_id.values()):
                return  # the NodePool's limits: the pods stay pending
            node = self.nodes.launch(itype, now)
            while self.unplaced and node.fits(self.s.pod_request):
                self._bind(self.unplaced.pop(0), node, now)

    # --------------------------------------------------------------------- node events
    def _node_ready(self, node: Node, t: float) -> None:
        for pod in list(node.pods):
            if pod.state == "pending":
                self.startup.begin(pod, t + self.a.scheduling_s)
        self._reschedule_unplaced(t)

    def _evict(self, node: Node, t: float) -> None:
        """A spot notice: the node's pods are deleted and the Deployment replaces them at once."""
        for p in [p for p in node.pods if p.state in ("pending", "starting", "ready")]:
            self._delete(p, t)
        self.set_replicas(t, self.replicas)

    def _terminate(self, node: Node, t: float) -> None:
        """The reclaimed instance goes: what its draining pods still held fails."""
        for p in list(node.pods):
            if p.state == "draining":
                self.listener.on_kill(p, t)
            if p.state != "gone":
                self._gone(p, t)
        self.nodes.remove(node, t)
        self._reschedule_unplaced(t)
