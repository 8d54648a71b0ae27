"""Spot reclaims: each spot node gets its interruption notice at a Poisson rate from the time it is ready;
its pods are evicted at once (and replaced), the instance goes ``spot_notice_s`` after the notice."""

from __future__ import annotations

import random
from collections.abc import Callable

from classifier_plan.cluster.events import EventQueue
from classifier_plan.cluster.objects import Node
from classifier_plan.setup import SimSetup

NodeAction = Callable[[Node, float], None]


class SpotReclaims:
    """Draws each spot node's notice and counts the interruptions; the cluster evicts and terminates."""

    def __init__(
        self, setup: SimSetup, events: EventQueue, rng: random.Random, evict: NodeAction, terminate: NodeAction
    ) -> None:
        self.s, self.events, self.rng = setup, events, rng
        self._evict, self._terminate = evict, terminate
        self.interruptions = 0

    def watch(self, node: Node, ready: float) -> None:
        """Schedule the notice of a spot node that is ready at ``ready`` (none at a zero rate)."""
        rate = self.s.interruption_rate_per_s(node.itype)
        if rate > 0:
            self.events.at(ready + self.rng.expovariate(rate), lambda t, n=node: self._notice(n, t))

    def _notice(self, node: Node, t: float) -> None:
        """Cordon, evict the pods (they are replaced at once), terminate after the notice."""
        if node.state not in ("launching", "ready"):
            return
        node.state = "draining"
        self.interruptions += 1
        self._evict(node, t)
        self.events.at(t + self.s.assumptions.spot_notice_s, lambda t2, n=node: self._terminate(n, t2))
