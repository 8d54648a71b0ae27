"""The nodes that exist: launched with their allocatable resources, ready ``node_launch_s`` later, removed;
each billed from launch to removal, each spot node watched for reclaims."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from classifier_plan.cluster.billing import Billing
from classifier_plan.cluster.events import EventQueue
from classifier_plan.cluster.objects import Node
from classifier_plan.cluster.spot import SpotReclaims
from classifier_plan.setup import SimSetup


class Nodes:
    """Node lifecycle: launch, ready (the cluster is told), removal."""

    def __init__(
        self,
        setup: SimSetup,
        ids: itertools.count[int],
        events: EventQueue,
        billing: Billing,
        spot: SpotReclaims,
        on_ready: Callable[[Node, float], None],
    ) -> None:
        self.s, self._ids, self.events, self.billing, self.spot = setup, ids, events, billing, spot
        self._on_ready = on_ready
        self.by_id: dict[int, Node] = {}

    def launch(self, itype: str, now: float, ready_at: float | None = None) -> Node:
        """A new ``itype`` node, ready ``node_launch_s`` from now (or at ``ready_at``)."""
        a = self.s.assumptions
        it = self.s.prices.instances[itype]
        cpu, mem = it.allocatable(a.daemonset_cpu, a.daemonset_memory_gib)
        ready = now + a.node_launch_s if ready_at is None else ready_at
        node = Node(next(self._ids), itype, self.s.capacity_type, now, ready, [float(it.gpus), cpu, mem])
        self.by_id[node.id] = node
        self.billing.node_on(node)
        node.empty_since = now
        self.events.at(ready, lambda t, n=node: self._ready(n, t))
        if node.capacity_type == "spot":
            self.spot.watch(node, ready)
        return node

    def _ready(self, node: Node, t: float) -> None:
        if node.state != "launching":
            return
        node.state = "ready"
        self._on_ready(node, t)

    def remove(self, node: Node, t: float) -> None:
        """The instance is gone (consolidated or reclaimed): billed up to ``t``."""
        if node.state == "gone":
            return
        self.billing.node_off(node, t)
        node.state = "gone"
        del self.by_id[node.id]

    def with_room(self, request: list[float]) -> Node | None:
        """The first ready node a pod of ``request`` fits on, else the first launching one."""
        ready = [n for n in self.by_id.values() if n.state == "ready" and n.fits(request)]
        launching = [n for n in self.by_id.values() if n.state == "launching" and n.fits(request)]
        return (ready or launching or [None])[0]
