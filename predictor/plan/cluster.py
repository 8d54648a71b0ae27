"""Pods, nodes and their costs: scheduling, Karpenter provisioning, spot reclaims, consolidation.

Shared by both engines. The engine calls :meth:`Cluster.set_replicas` (from the autoscaler) and
:meth:`Cluster.advance` (every step); the cluster calls the engine back through :class:`Listener` when a
pod becomes ready or must drain. A pod's start: bound to a node with room (``scheduling_s``), else
Karpenter batches the pending pods (idle 1 s, at most 10 s), launches the cheapest instance type that
fits (spot when the NodePool allows it) within the NodePool's limits and waits ``node_launch_s``; then
the image pull (once per node), the storage initializer (model size / bandwidth), the measured cold
start, and the first startup and readiness probes. A spot node gets its notice at a Poisson rate: its
pods drain and are replaced, the node goes ``spot_notice_s`` later. Empty nodes are consolidated after
the NodePool's ``consolidateAfter``, within its disruption budget.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from predictor.plan.setup import SimSetup


class Listener(Protocol):
    """What an engine does when a pod starts or stops serving."""

    def on_ready(self, pod: Pod, now: float) -> None: ...

    def on_drain(self, pod: Pod, now: float) -> None: ...

    def on_kill(self, pod: Pod, now: float) -> None: ...


@dataclass(eq=False)
class Node:
    """One node: its type, capacity type, free resources and lifecycle."""

    id: int
    itype: str
    capacity_type: str
    launched: float
    ready_at: float
    free: list[float]  # gpus, cores, bytes
    state: str = "launching"  # launching | ready | draining | gone
    pods: set[Pod] = field(default_factory=set)
    image_at: float | None = None
    empty_since: float | None = None


@dataclass(eq=False)
class Pod:
    """One predictor pod."""

    id: int
    created: float
    state: str = "pending"  # pending | starting | ready | draining | gone
    node: Node | None = None
    running_at: float | None = None
    ready_at: float | None = None


class Cluster:
    """The pods and nodes of one simulation."""

    def __init__(self, setup: SimSetup, listener: Listener) -> None:
        self.s = setup
        self.a = setup.assumptions
        self.listener = listener
        self.rng = random.Random(self.a.seed + 1)
        self.pods: dict[int, Pod] = {}
        self.nodes: dict[int, Node] = {}
        self.replicas = 0
        self._ids = itertools.count()
        self._seq = itertools.count()
        self._events: list[tuple[float, int, Callable[[float], None]]] = []
        self._batch: tuple[float, float] | None = None  # Karpenter batch (opened, last pod)
        self.unplaced: list[Pod] = []
        self.now = 0.0
        self.cost_usd = {"typical": 0.0, "low": 0.0, "high": 0.0}
        self._rates = {"typical": 0.0, "low": 0.0, "high": 0.0}
        self._live_types: dict[str, int] = {}
        self.live_nodes = {"spot": 0, "on-demand": 0}
        self.by_state: dict[str, dict[int, Pod]] = {k: {} for k in ("pending", "starting", "ready", "draining")}
        self.interruptions = 0
        self.cold_starts = 0
        self.node_seconds: dict[str, float] = {}

    # --------------------------------------------------------------------- time
    def at(self, t: float, fn: Callable[[float], None]) -> None:
        heapq.heappush(self._events, (t, next(self._seq), fn))

    def advance(self, now: float) -> None:
        """Run every lifecycle event due by ``now``; bill the nodes; run Karpenter and consolidation."""
        while self._events and self._events[0][0] <= now:
            t, _, fn = heapq.heappop(self._events)
            self._bill(t)
            fn(t)
        self._bill(now)
        if self._batch and (
            now >= self._batch[1] + self.a.karpenter_batch_idle_s
            or now >= self._batch[0] + self.a.karpenter_batch_max_s
        ):
            self._batch = None
            self._provision(now)
        elif self.unplaced and self._batch is None and self._room_for_more():
            self._batch = (now, now)
        self._consolidate(now)

    def _bill(self, t: float) -> None:
        dt = t - self.now
        if dt <= 0:
            return
        for k, rate in self._rates.items():
            self.cost_usd[k] += rate * dt / 3600.0
        for key, n in self._live_types.items():
            if n:
                self.node_seconds[key] = self.node_seconds.get(key, 0.0) + n * dt
        self.now = t

    def _node_on(self, node: Node) -> None:
        it = self.s.prices.instances[node.itype]
        for k in self._rates:
            self._rates[k] += it.price(node.capacity_type, k)
        key = f"{node.itype}/{node.capacity_type}"
        self._live_types[key] = self._live_types.get(key, 0) + 1
        self.live_nodes[node.capacity_type] += 1

    def _node_off(self, node: Node, t: float) -> None:
        if node.state == "gone":
            return
        self._bill(t)
        node.state = "gone"
        it = self.s.prices.instances[node.itype]
        for k in self._rates:
            self._rates[k] -= it.price(node.capacity_type, k)
        self._live_types[f"{node.itype}/{node.capacity_type}"] -= 1
        self.live_nodes[node.capacity_type] -= 1
        del self.nodes[node.id]

    # --------------------------------------------------------------------- pods
    def _set(self, pod: Pod, state: str) -> None:
        self.by_state.get(pod.state, {}).pop(pod.id, None)
        pod.state = state
        if state in self.by_state:
            self.by_state[state][pod.id] = pod

    def live_pods(self) -> list[Pod]:
        b = self.by_state
        return [*b["pending"].values(), *b["starting"].values(), *b["ready"].values()]

    def ready_pods(self) -> list[Pod]:
        return list(self.by_state["ready"].values())

    def count(self, state: str) -> int:
        return len(self.by_state[state])

    def bootstrap(self, n: int) -> None:
        """``n`` pods already ready at t = 0 on running nodes (the deployed steady state)."""
        self.replicas = n
        for _ in range(n):
            pod = self._new_pod(0.0)
            node = self._node_with_room() or self._launch(self._pick_type(n), 0.0, ready_at=0.0)
            node.image_at, node.state = 0.0, "ready"
            self._bind(pod, node, 0.0, start=False)
            pod.running_at, pod.ready_at = 0.0, 0.0
            self._set(pod, "ready")
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

    def _new_pod(self, now: float) -> Pod:
        pod = Pod(next(self._ids), now)
        self.pods[pod.id] = pod
        self.by_state["pending"][pod.id] = pod
        return pod

    def _delete(self, pod: Pod, now: float) -> None:
        if pod.state == "ready":
            self._set(pod, "draining")
            self.listener.on_drain(pod, now)
            return
        if pod in self.unplaced:
            self.unplaced.remove(pod)
        self._gone(pod, now)

    def pod_drained(self, pod: Pod, now: float) -> None:
        """The engine finished (or gave up on) a draining pod's queue."""
        self._gone(pod, now)

    def _gone(self, pod: Pod, now: float) -> None:
        self._set(pod, "gone")
        node = pod.node
        if node is not None and pod in node.pods:
            node.pods.discard(pod)
            req = self.s.pod_request
            node.free = [f + r for f, r in zip(node.free, req, strict=True)]
            if not node.pods:
                node.empty_since = now
            self._reschedule_unplaced(now)
        del self.pods[pod.id]

    # --------------------------------------------------------------------- scheduling
    def _fits(self, node: Node) -> bool:
        return node.state in ("launching", "ready") and all(
            f >= r - 1e-9 for f, r in zip(node.free, self.s.pod_request, strict=True)
        )

    def _node_with_room(self) -> Node | None:
        ready = [n for n in self.nodes.values() if n.state == "ready" and self._fits(n)]
        launching = [n for n in self.nodes.values() if n.state == "launching" and self._fits(n)]
        return (ready or launching or [None])[0]

    def _schedule(self, pod: Pod, now: float) -> None:
        node = self._node_with_room()
        if node is None:
            self.unplaced.append(pod)
            self._batch = (self._batch[0], now) if self._batch else (now, now)
            return
        self._bind(pod, node, now)

    def _reschedule_unplaced(self, now: float) -> None:
        while self.unplaced and (node := self._node_with_room()) is not None:
            self._bind(self.unplaced.pop(0), node, now)

    def _bind(self, pod: Pod, node: Node, now: float, start: bool = True) -> None:
        pod.node = node
        node.pods.add(pod)
        node.empty_since = None
        node.free = [f - r for f, r in zip(node.free, self.s.pod_request, strict=True)]
        if start:
            self.at(max(now + self.a.scheduling_s, node.ready_at), lambda t, p=pod: self._start(p, t))

    def _start(self, pod: Pod, t: float) -> None:
        """Image pull, storage initializer, then the container runs (unready) until load and probes pass."""
        if pod.state != "pending" or pod.node is None or pod.node.state != "ready":
            return
        node, a = pod.node, self.a
        if node.image_at is None:
            node.image_at = t + a.image_pull_s
        pulled = max(node.image_at, t + a.image_cached_pull_s)
        init = self.s.storage_init_s
        self.at(pulled + init, lambda t2, p=pod: self._running(p, t2))

    def _running(self, pod: Pod, t: float) -> None:
        if pod.state != "pending":
            return
        pod.running_at = t
        self._set(pod, "starting")
        self.cold_starts += 1
        s = self.s
        probes = self.rng.uniform(0, s.plan.pod.startup_period_s) + self.rng.uniform(0, s.plan.pod.readiness_period_s)
        self.at(
            t + s.pod_model.cold_start_s + probes + self.a.endpoint_propagation_s, lambda t2, p=pod: self._ready(p, t2)
        )

    def _ready(self, pod: Pod, t: float) -> None:
        if pod.state != "starting":
            return
        pod.ready_at = t
        self._set(pod, "ready")
        self.listener.on_ready(pod, t)

    # --------------------------------------------------------------------- Karpenter
    def _used(self) -> dict[str, float]:
        used = {"cpu": 0.0, "memory": 0.0, "gpu": 0.0}
        for n in self.nodes.values():
            it = self.s.prices.instances[n.itype]
            used["cpu"] += it.vcpu
            used["memory"] += it.memory_gib * 2**30
            used["gpu"] += it.gpus
        return used

    def _within_limits(self, itype: str) -> bool:
        it, used = self.s.prices.instances[itype], self._used()
        add = {"cpu": it.vcpu, "memory": it.memory_gib * 2**30, "gpu": it.gpus}
        return all(used[k] + add[k] <= lim + 1e-9 for k, lim in self.s.limits.items())

    def _room_for_more(self) -> bool:
        return self._within_limits(self._pick_type(len(self.unplaced)))

    def _pick_type(self, pods: int) -> str:
        """Cheapest price per placed pod among the allowed types (fewest wasted pods on ties)."""
        best = min(
            self.s.candidates,
            key=lambda c: (self.s.price_of(c) / min(pods, self.s.pods_per_node[c]), self.s.pods_per_node[c]),
        )
        return best

    def _provision(self, now: float) -> None:
        while self.unplaced:
            itype = self._pick_type(len(self.unplaced))
            if not self._within_limits(itype):
                return  # the NodePool's limits: the pods stay pending
            node = self._launch(itype, now)
            while self.unplaced and self._fits(node):
                self._bind(self.unplaced.pop(0), node, now)

    def _launch(self, itype: str, now: float, ready_at: float | None = None) -> Node:
        it = self.s.prices.instances[itype]
        cpu, mem = it.allocatable(self.a.daemonset_cpu, self.a.daemonset_memory_gib)
        ready = now + self.a.node_launch_s if ready_at is None else ready_at
        node = Node(next(self._ids), itype, self.s.capacity_type, now, ready, [float(it.gpus), cpu, mem])
        self.nodes[node.id] = node
        self._node_on(node)
        node.empty_since = now
        self.at(ready, lambda t, n=node: self._node_ready(n, t))
        if node.capacity_type == "spot":
            rate = self.s.interruption_rate_per_s(itype)
            if rate > 0:
                self.at(ready + self.rng.expovariate(rate), lambda t, n=node: self._notice(n, t))
        return node

    def _node_ready(self, node: Node, t: float) -> None:
        if node.state != "launching":
            return
        node.state = "ready"
        for pod in list(node.pods):
            if pod.state == "pending":
                self.at(t + self.a.scheduling_s, lambda t2, p=pod: self._start(p, t2))
        self._reschedule_unplaced(t)

    def _notice(self, node: Node, t: float) -> None:
        """Spot interruption: cordon, drain (pods replaced at once), terminate after the notice."""
        if node.state not in ("launching", "ready"):
            return
        node.state = "draining"
        self.interruptions += 1
        pods = [p for p in node.pods if p.state in ("pending", "starting", "ready")]
        for p in pods:
            self._delete(p, t)
        self.set_replicas(t, self.replicas)
        self.at(t + self.a.spot_notice_s, lambda t2, n=node: self._terminate(n, t2))

    def _terminate(self, node: Node, t: float) -> None:
        for p in list(node.pods):
            if p.state == "draining":
                self.listener.on_kill(p, t)  # the instance is gone: what it still held fails
            if p.id in self.pods:
                self._gone(p, t)
        self._node_off(node, t)
        self._reschedule_unplaced(t)

    def _consolidate(self, now: float) -> None:
        """Delete nodes empty for ``consolidateAfter``, at most the disruption budget at a time."""
        nodes = [n for n in self.nodes.values() if n.state in ("ready", "launching")]
        if not any(n.empty_since is not None and n.state == "ready" for n in nodes):
            return
        f = self.s.budget_fraction  # a share of the nodes, or (negative) a node count
        budget = (max(1, math.ceil(f * len(nodes))) if f >= 0 else int(-f)) if nodes else 0
        for n in nodes:
            if budget <= 0:
                break
            if (
                n.state == "ready"
                and not n.pods
                and n.empty_since is not None
                and now - n.empty_since >= self.s.consolidate_after_s
            ):
                self._node_off(n, now)
                budget -= 1

    # --------------------------------------------------------------------- views
    def nodes_by_capacity(self) -> tuple[int, int]:
        """(spot, on-demand) nodes that exist now (launching, ready or draining)."""
        return self.live_nodes["spot"], self.live_nodes["on-demand"]
