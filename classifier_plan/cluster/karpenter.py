"""Karpenter's decisions for the predictor's NodePool (or a node autoscaler acting like it).

Pods that find no room are batched: the batch closes 1 s after its last pod arrived or 10 s after it opened
(``karpenter_batch_idle_s``, ``karpenter_batch_max_s``), then nodes of the cheapest instance type per placed
pod are launched while the NodePool's limits allow. Nodes empty for ``consolidateAfter`` are removed, at most
the disruption budget's share (or count) of the nodes at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from classifier_plan.cluster.objects import Node
from classifier_plan.setup import SimSetup


class Karpenter:
    """When to provision, which instance type, within which limits, and which empty nodes go."""

    def __init__(self, setup: SimSetup) -> None:
        self.s = setup
        self._batch: tuple[float, float] | None = None  # (opened, last pod added)

    def pod_unplaced(self, now: float) -> None:
        """A pod found no node with room: it opens the batch, or extends the open one."""
        self._batch = (self._batch[0], now) if self._batch else (now, now)

    def provision_now(self, now: float, pending: int, nodes: Iterable[Node]) -> bool:
        """Whether the batch closes now (then it is provisioned). Else, with ``pending`` pods left unplaced and
        no batch open, a new batch opens while the NodePool's limits leave room for another node."""
        b, a = self._batch, self.s.assumptions
        if b and (now >= b[1] + a.karpenter_batch_idle_s or now >= b[0] + a.karpenter_batch_max_s):
            self._batch = None
            return True
        if pending and b is None and self.within_limits(self.pick_type(pending), nodes):
            self._batch = (now, now)
        return False

    def pick_type(self, pods: int) -> str:
        """Cheapest price per placed pod among the allowed types (fewest wasted pods on ties)."""
        s = self.s
        return min(s.candidates, key=lambda c: (s.price_of(c) / min(pods, s.pods_per_node[c]), s.pods_per_node[c]))

    def within_limits(self, itype: str, nodes: Iterable[Node]) -> bool:
        """Whether one more ``itype`` node keeps the NodePool within its cpu, memory and GPU limits."""
        instances = self.s.prices.instances
        used = {"cpu": 0.0, "memory": 0.0, "gpu": 0.0}
        for n in nodes:
            it = instances[n.itype]
            used["cpu"] += it.vcpu
            used["memory"] += it.memory_gib * 2**30
            used["gpu"] += it.gpus
        it = instances[itype]
        add = {"cpu": it.vcpu, "memory": it.memory_gib * 2**30, "gpu": it.gpus}
        return all(used[k] + add[k] <= lim + 1e-9 for k, lim in self.s.limits.items())

    def to_consolidate(self, now: float, nodes: Iterable[Node]) -> list[Node]:
        """Ready nodes empty for ``consolidateAfter``, at most the disruption budget of them."""
        live = [n for n in nodes if n.state in ("ready", "launching")]
        if not any(n.empty_since is not None and n.state == "ready" for n in live):
            return []
        f = self.s.budget_fraction  # a share of the nodes, or (negative) a node count
        budget = (max(1, math.ceil(f * len(live))) if f >= 0 else int(-f)) if live else 0
        out: list[Node] = []
        for n in live:
            if budget <= 0:
                break
            if (
                n.state == "ready"
                and not n.pods
                and n.empty_since is not None
                and now - n.empty_since >= self.s.consolidate_after_s
            ):
                out.append(n)
                budget -= 1
        return out
