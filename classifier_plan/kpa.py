"""Knative Pod Autoscaler, as knative/serving's ``pkg/autoscaler/scaling/autoscaler.go`` decides.

A pure state machine: :meth:`Kpa.record` takes the revision's total concurrency (or request rate) once
a second; :meth:`Kpa.decide` (every ``tick_s``, 2 s in Knative) returns the desired pod count:

* observed stable / panic values = averages over the stable window (60 s) and the panic window (10 %
  of it); ``dspc = ceil(stable / target)``, ``dppc = ceil(panic / target)``, both clamped to
  ``[floor(ready / max-scale-down-rate), ceil(ready * max-scale-up-rate)]`` with ``ready >= 1``;
* panic starts when ``dppc / ready >= panic-threshold`` (200 %), is extended while over it, ends one
  stable window after the last over-threshold tick; in panic the count never goes down;
* ``activation-scale`` (when above 1) is the least non-zero count: a desired stable (panic) count is raised
  to it whenever the stable (panic) value asks for any pod (``dspc > 0``, ``dppc > 0``), so a wake from
  zero asks for ``max(activation-scale, computed)``; it never lowers a count, and an idle revision still
  goes to zero;
* ``scale-down-delay`` holds the highest desired count of that trailing window;
* the target is ``max(0.01, total * target-utilization)`` where total is the annotation target (or
  ``containerConcurrency``, or the default 100 / 200 rps), ``min``-ed with ``containerConcurrency``
  for concurrency (``pkg/reconciler/autoscaling/resources/target.go``).

Scale-to-zero's grace period and the min/max bounds are applied by the caller (:class:`KpaScaler`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from classifier_plan.assumptions import Assumptions
    from classifier_plan.chart import KnativeScaling


@dataclass(frozen=True)
class KpaConfig:
    """The decider's knobs (Knative config-autoscaler defaults unless the revision overrides them)."""

    target: float
    stable_window_s: float = 60.0
    panic_window_pct: float = 10.0
    panic_threshold_pct: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_down_delay_s: float = 0.0
    tick_s: float = 2.0
    activation_scale: int = 0  # autoscaling.knative.dev/activation-scale; 0 or 1 = none (Knative wants >= 2)

    @property
    def panic_window_s(self) -> float:
        return max(1.0, self.stable_window_s * self.panic_window_pct / 100.0)


def resolve_target(
    metric: str,
    annotation_target: float | None,
    container_concurrency: int,
    target_utilization: float | None,
    concurrency_default: float = 100.0,
    rps_default: float = 200.0,
    utilization_default: float = 0.7,
) -> float:
    """The per-pod target the decider aims at (``ResolveMetricTarget``)."""
    if metric == "rps":
        total = rps_default
    else:
        total = float(container_concurrency) if container_concurrency else concurrency_default
    if annotation_target is not None:
        total = annotation_target
        if metric != "rps" and container_concurrency:
            total = min(annotation_target, float(container_concurrency))
    tu = utilization_default if target_utilization is None else target_utilization
    return max(0.01, total * tu)


def revision_target(kn: KnativeScaling, a: Assumptions) -> float:
    """The per-pod target of the chart's revision, with the cluster's config-autoscaler defaults."""
    return resolve_target(
        kn.metric,
        kn.target,
        kn.container_concurrency,
        kn.target_utilization,
        a.knative_concurrency_target_default,
        a.knative_rps_target_default,
        a.knative_target_utilization,
    )


class Kpa:
    """The KPA decider of one revision."""

    def __init__(self, config: KpaConfig, ready_at_start: int = 0, now: float = 0.0) -> None:
        self.cfg = config
        # Windows kept with running sums: (time, value) deques for the stable and the panic window.
        self._stable: deque[tuple[float, float]] = deque()
        self._panic: deque[tuple[float, float]] = deque()
        self._sums = [0.0, 0.0]
        # A new decider starts in panic when it already has more than one pod (autoscaler.go).
        self.panic_since: float | None = now if ready_at_start > 1 else None
        self.max_panic_pods = ready_at_start
        self.delay: deque[tuple[float, int]] = deque()  # decreasing desired counts: its front is the max
        self.in_panic = self.panic_since is not None

    def record(self, now: float, value: float) -> None:
        """One per-second sample of total concurrency (or requests/s) of the revision."""
        for i, (window, dq) in enumerate(
            ((self.cfg.stable_window_s, self._stable), (self.cfg.panic_window_s, self._panic))
        ):
            dq.append((now, value))
            self._sums[i] += value
            while dq and dq[0][0] <= now - window:
                self._sums[i] -= dq.popleft()[1]

    def observed(self, now: float) -> tuple[float, float] | None:
        """(stable, panic) averages over the windows ending now, or None before the first sample."""
        if not self._stable or not self._panic:
            return None
        # Running sums drift by ~1e-13 once values leave the window: a window of zeros must read 0, not
        # 1e-14 (which ceil() would turn into a pod that never goes).
        stable, panic = (s if s > 1e-9 else 0.0 for s in self._sums)
        return stable / len(self._stable), panic / len(self._panic)

    def decide(self, now: float, ready_pods: int, reachable: bool = True) -> int | None:
        """Desired pods now, or None while there is no data (``ScaleResult`` invalid)."""
        obs = self.observed(now)
        if obs is None:
            return None
        stable, panic = obs
        cfg = self.cfg
        ready = max(1.0, float(ready_pods))
        max_up = math.ceil(cfg.max_scale_up_rate * ready)
        max_down = math.floor(ready / cfg.max_scale_down_rate) if reachable else 0
        dspc = math.ceil(stable / cfg.target)
        dppc = math.ceil(panic / cfg.target)
        desired_stable = int(min(max(dspc, max_down), max_up))
        desired_panic = int(min(max(dppc, max_down), max_up))
        # After the rate clamps, as autoscaler.go does: a wake from 0 ready pods asks for it at once.
        desired_stable = self._activation_floor(dspc, desired_stable)
        desired_panic = self._activation_floor(dppc, desired_panic)
        over = dppc / ready >= cfg.panic_threshold_pct / 100.0
        if over:
            self.panic_since = now
        elif self.panic_since is not None and self.panic_since + cfg.stable_window_s < now:
            self.panic_since = None
            self.max_panic_pods = 0
        desired = desired_stable
        if self.panic_since is not None:
            desired = max(desired, desired_panic)
            self.max_panic_pods = max(self.max_panic_pods, desired)
            desired = self.max_panic_pods
        self.in_panic = self.panic_since is not None
        if cfg.scale_down_delay_s > 0:
            desired = self._delayed(now, desired)
        return desired

    def _activation_floor(self, wanted: float, desired: int) -> int:
        """``desired`` raised to activation-scale when the metric asks for any pod (``wanted > 0``)."""
        scale = self.cfg.activation_scale
        return max(desired, scale) if scale > 1 and wanted > 0 else desired

    def _delayed(self, now: float, desired: int) -> int:
        """The highest desired count over the trailing scale-down-delay window (``max.TimeWindow``)."""
        while self.delay and self.delay[-1][1] <= desired:
            self.delay.pop()  # a newer, higher value outlives it in the window
        self.delay.append((now, desired))
        while self.delay[0][0] <= now - self.cfg.scale_down_delay_s:
            self.delay.popleft()
        return self.delay[0][1]


@dataclass
class KpaScaler:
    """Bounds and scale to zero around the decider (``pkg/reconciler/autoscaling/kpa/scaler.go``).

    ``desired == 0`` first marks the revision inactive (the activator goes back in the path) and keeps the
    current pods; they go only after ``grace_s`` (scale-to-zero-grace-period, 30 s) more of wanting zero.
    """

    min_scale: int
    max_scale: int  # 0 = unbounded
    grace_s: float = 30.0
    zero_wanted_since: float | None = None

    def apply(self, now: float, desired: int, current: int) -> int:
        """The replica count to set, given the decider's ``desired`` and the current count."""
        x = max(desired, self.min_scale)
        if self.max_scale:
            x = min(x, self.max_scale)
        if x != 0:
            self.zero_wanted_since = None
            return x
        if current == 0:
            return 0
        if self.zero_wanted_since is None:
            self.zero_wanted_since = now
        return 0 if now - self.zero_wanted_since >= self.grace_s else current
