"""KEDA's own part of scaling a ScaledObject: activation 0 -> 1 and cooldown back to 0.

Everything between 1 and ``maxReplicaCount`` is the HPA KEDA creates (:mod:`classifier_plan.hpa`,
without ``behavior`` unless ``advanced.horizontalPodAutoscalerConfig`` sets one). Every
``pollingInterval`` KEDA reads the triggers: a trigger is active when its value is strictly above its
``activationThreshold``; at zero replicas an active trigger scales to ``max(minReplicaCount, 1)``; with
``minReplicaCount: 0``, when no trigger has been active for ``cooldownPeriod``, it scales to zero.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class KedaLoop:
    """The activation/cooldown state of one ScaledObject."""

    min_replicas: int
    polling_s: float = 30.0
    cooldown_s: float = 300.0
    activation_threshold: float = 0.0
    last_active: float | None = None
    next_poll: float = 0.0

    @property
    def hpa_min(self) -> int:
        """``minReplicas`` of the HPA KEDA creates (never below 1)."""
        return max(1, self.min_replicas)

    def due(self, now: float) -> bool:
        """Whether a poll happens now (KEDA polls every ``polling_s`` from its start)."""
        if now + 1e-9 >= self.next_poll:
            self.next_poll = now + self.polling_s
            return True
        return False

    def poll(self, now: float, values: list[float], current: int) -> int | None:
        """The replica count KEDA itself sets after reading ``values`` (one per trigger), or None."""
        active = any(v > self.activation_threshold for v in values)
        if active:
            self.last_active = now
            if current == 0:
                return self.hpa_min
            return None
        if self.min_replicas == 0 and current > 0:
            since = self.last_active if self.last_active is not None else 0.0
            if now - since >= self.cooldown_s:
                return 0
        return None
