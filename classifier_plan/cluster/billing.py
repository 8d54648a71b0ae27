"""What the nodes cost: every node billed from launch to removal at its type's price, in three spot-discount
scenarios, and the node-seconds of each instance and capacity type."""

from __future__ import annotations

from classifier_plan.cluster.objects import Node
from classifier_plan.prices import PriceBook

DISCOUNTS = ("typical", "low", "high")


class Billing:
    """The running cost and node-time of the cluster, brought up to date at each event."""

    def __init__(self, prices: PriceBook) -> None:
        self.prices = prices
        self.cost_usd = dict.fromkeys(DISCOUNTS, 0.0)
        self.node_seconds: dict[str, float] = {}
        self.live_nodes = {"spot": 0, "on-demand": 0}
        self.now = 0.0
        self._rates = dict.fromkeys(DISCOUNTS, 0.0)  # $/h of the nodes that exist
        self._live_types: dict[str, int] = {}  # "itype/capacity type" -> nodes that exist

    def to(self, t: float) -> None:
        """Bill the nodes that exist from the last update to ``t``."""
        dt = t - self.now
        if dt <= 0:
            return
        for k, rate in self._rates.items():
            self.cost_usd[k] += rate * dt / 3600.0
        for key, n in self._live_types.items():
            if n:
                self.node_seconds[key] = self.node_seconds.get(key, 0.0) + n * dt
        self.now = t

    def node_on(self, node: Node) -> None:
        """``node`` is billed from now on."""
        it = self.prices.instances[node.itype]
        for k in self._rates:
            self._rates[k] += it.price(node.capacity_type, k)
        key = f"{node.itype}/{node.capacity_type}"
        self._live_types[key] = self._live_types.get(key, 0) + 1
        self.live_nodes[node.capacity_type] += 1

    def node_off(self, node: Node, t: float) -> None:
        """``node`` is billed up to ``t`` and no longer."""
        self.to(t)
        it = self.prices.instances[node.itype]
        for k in self._rates:
            self._rates[k] -= it.price(node.capacity_type, k)
        self._live_types[f"{node.itype}/{node.capacity_type}"] -= 1
        self.live_nodes[node.capacity_type] -= 1
