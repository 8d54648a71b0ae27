"""HorizontalPodAutoscaler (autoscaling/v2), as kube-controller-manager's ``podautoscaler`` decides.

Pure functions and one state machine, written after ``pkg/controller/podautoscaler/horizontal.go`` and
``replica_calculator.go``:

* proposals: ``ceil(current * value / target)`` with the 0.1 tolerance; for CPU, pods not yet ready
  count as 0 % when scaling up, pending pods are ignored (:func:`resource_replicas`); an external metric
  of type ``AverageValue`` proposes ``ceil(value / target)`` (:func:`external_average_value`), ``Value``
  ``ceil(ready * value / target)`` (:func:`external_value`). The largest proposal wins.
* with ``behavior`` (what KServe's own HPA gets: an empty one, so the API defaults apply): the lowest
  recommendation of the scale-up stabilisation window and the highest of the scale-down window (300 s),
  then the policies (default up: max of +100 % and +4 pods per 15 s; down: -100 % per 15 s) against the
  replica changes already made inside each policy's period;
* without ``behavior`` (the HPA KEDA creates when the ScaledObject sets none): the older rules, a
  5-minute downscale stabilisation and at most ``max(2 * current, 4)`` per sync.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

TOLERANCE = 0.1
DOWNSCALE_STABILIZATION_S = 300.0


@dataclass(frozen=True)
class Policy:
    """One scaling policy: ``Pods`` or ``Percent`` per ``period_s``."""

    type: str
    value: int
    period_s: float


@dataclass(frozen=True)
class Rules:
    """``HPAScalingRules`` after API defaulting."""

    stabilization_s: float
    policies: tuple[Policy, ...]
    select: str = "Max"  # Max | Min | Disabled


DEFAULT_UP = Rules(0.0, (Policy("Percent", 100, 15.0), Policy("Pods", 4, 15.0)))
DEFAULT_DOWN = Rules(DOWNSCALE_STABILIZATION_S, (Policy("Percent", 100, 15.0),))


def _within(ratio: float, tolerance: float) -> bool:
    return abs(1.0 - ratio) <= tolerance


def resource_replicas(
    current: int, ready_utilization: list[float], unready: int, target_pct: float, tolerance: float = TOLERANCE
) -> int:
    """Proposal for a resource utilisation target (``GetResourceReplicas``).

    Args:
        current: the scale target's replicas.
        ready_utilization: utilisation (percent of request) of each ready pod with metrics.
        unready: running pods not ready yet (they count as 0 % when the ratio says scale up).
        target_pct: the target average utilisation.
    """
    if not ready_utilization:
        return current
    ratio = sum(ready_utilization) / len(ready_utilization) / target_pct
    if unready == 0 or ratio <= 1.0:
        return current if _within(ratio, tolerance) else math.ceil(ratio * len(ready_utilization))
    new_ratio = sum(ready_utilization) / (len(ready_utilization) + unready) / target_pct
    if _within(new_ratio, tolerance) or new_ratio < 1.0:
        return current  # the unready pods would flip the direction: do nothing
    proposal = math.ceil(new_ratio * (len(ready_utilization) + unready))
    return current if proposal < current else proposal


def external_average_value(current: int, value: float, target: float, tolerance: float = TOLERANCE) -> int:
    """Proposal for an external metric with an ``AverageValue`` target (``GetExternalPerPodMetricReplicas``)."""
    if current and _within(value / (target * current), tolerance):
        return current
    return math.ceil(value / target)


def external_value(current: int, ready: int, value: float, target: float, tolerance: float = TOLERANCE) -> int:
    """Proposal for an external metric with a ``Value`` target (``getUsageRatioReplicaCount``)."""
    ratio = value / target
    if current == 0:
        return math.ceil(ratio)
    return current if _within(ratio, tolerance) else math.ceil(ratio * ready)


@dataclass
class Hpa:
    """One HPA's stabilisation and rate-limit state across syncs."""

    min_replicas: int
    max_replicas: int
    up: Rules | None = DEFAULT_UP  # None (with down None): the HPA has no behavior
    down: Rules | None = DEFAULT_DOWN
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    up_events: deque[tuple[float, int]] = field(default_factory=deque)
    down_events: deque[tuple[float, int]] = field(default_factory=deque)

    @property
    def has_behavior(self) -> bool:
        return self.up is not None and self.down is not None

    def sync(self, now: float, current: int, proposal: int) -> int:
        """One reconcile: the replica count to set given the metrics' largest ``proposal``."""
        if current == 0 and self.min_replicas != 0:
            return 0  # scaling is disabled while the target has zero replicas
        if current > self.max_replicas:
            desired = self.max_replicas
        elif current < self.min_replicas:
            desired = self.min_replicas
        elif self.has_behavior:
            desired = self._with_behavior(now, current, proposal)
        else:
            desired = self._legacy(now, current, proposal)
        if desired != current:
            events = self.up_events if desired > current else self.down_events
            events.append((now, abs(desired - current)))
        return desired

    def _legacy(self, now: float, current: int, proposal: int) -> int:
        cutoff = now - DOWNSCALE_STABILIZATION_S
        while self.recommendations and self.recommendations[0][0] < cutoff:
            self.recommendations.popleft()
        stabilized = max([proposal, *(r for _, r in self.recommendations)])
        self.recommendations.append((now, proposal))
        up_limit = max(2 * current, 4)
        hi = min(self.max_replicas, up_limit)
        lo = max(1, self.min_replicas)
        return min(max(stabilized, lo), hi)

    def _with_behavior(self, now: float, current: int, proposal: int) -> int:
        assert self.up is not None and self.down is not None
        longest = max(self.up.stabilization_s, self.down.stabilization_s)
        while self.recommendations and self.recommendations[0][0] < now - longest:
            self.recommendations.popleft()
        up_rec = min([proposal, *(r for t, r in self.recommendations if t > now - self.up.stabilization_s)])
        down_rec = max([proposal, *(r for t, r in self.recommendations if t > now - self.down.stabilization_s)])
        self.recommendations.append((now, proposal))
        desired = min(max(current, up_rec), down_rec)
        if desired > current:
            limit = max(current, self._limit(now, current, self.up, up=True))
            return min(desired, min(self.max_replicas, limit))
        if desired < current:
            limit = min(current, self._limit(now, current, self.down, up=False))
            return max(desired, max(self.min_replicas, limit))
        return desired

    def _changed(self, now: float, period: float, events: deque[tuple[float, int]]) -> int:
        return sum(n for t, n in events if t > now - period)

    def _limit(self, now: float, current: int, rules: Rules, up: bool) -> int:
        """Highest (up) or lowest (down) count the policies allow now (``calculateScale*Limit*``)."""
        if rules.select == "Disabled":
            return current
        pick_most = rules.select == "Max"
        choose = (max if pick_most else min) if up else (min if pick_most else max)
        result: int | None = None
        for p in rules.policies:
            start = (
                current
                - self._changed(now, p.period_s, self.up_events)
                + self._changed(now, p.period_s, self.down_events)
            )
            if p.type == "Pods":
                proposed = start + p.value if up else start - p.value
            elif up:
                proposed = math.ceil(start * (1 + p.value / 100.0))
            else:
                proposed = int(start * (1 - p.value / 100.0))
            result = proposed if result is None else choose(result, proposed)
        return current if result is None else result
