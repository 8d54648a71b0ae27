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

Modules: ``coordinator`` (:class:`Cluster`: pods, scheduling, the wiring), ``objects`` (pods, nodes, the
listener), ``events`` (the lifecycle event queue), ``nodes`` (launch, ready, removal), ``startup`` (a pod's
way to ready), ``karpenter`` (batching, instance choice, limits, consolidation), ``spot`` (reclaims),
``billing`` (cost and node-hours).
"""

from classifier_plan.cluster.coordinator import Cluster
from classifier_plan.cluster.objects import Listener, Node, Pod

__all__ = ["Cluster", "Listener", "Node", "Pod"]
