"""Whether the autoscaler can see an overload at all, given what one pod admits.

A pod admits a request only while what is ahead of it drains within the queue-wait budget
(:meth:`SimSetup.queue_limit_images <classifier_plan.setup.SimSetup.queue_limit_images>`) and answers the
rest 503 at once, so the signals that count admitted work (the KPA's concurrency, ``classifier_queue_depth``,
``classifier_inflight_requests``, the HTTP add-on's concurrency at the interceptor; refused requests last
milliseconds and hardly count) never exceed what the pod admits. When the per-pod target of the autoscaler
is at or above that ceiling, an overloaded pod reads "at or under target": the service refuses the excess
instead of scaling out. Signals that grow with the offered load itself (requests per second, CPU or GPU
utilisation) are not capped this way. For the HPA, with several metrics, the largest proposal wins, so the
run is blind only when every metric is.
"""

from __future__ import annotations

from dataclasses import dataclass

from classifier_plan.kpa import revision_target
from classifier_plan.setup import SimSetup


@dataclass(frozen=True)
class BlindTarget:
    """One autoscaling target a pod's admission keeps out of reach."""

    signal: str  # kpa concurrency | queue_depth | inflight | http_concurrency
    target: float  # per pod
    ceiling: float  # the most one pod shows of it


def ceiling(setup: SimSetup, signal: str, mean_images: float) -> float | None:
    """The most one pod shows of ``signal`` (None: not capped by admission)."""
    images = setup.queue_limit_images(mean_images)
    if signal == "queue_depth":
        return images
    if signal in ("inflight", "concurrency", "http_concurrency"):
        return images / max(1.0, mean_images)
    return None


def blind_targets(setup: SimSetup, mean_images: float) -> list[BlindTarget]:
    """The targets out of reach; empty when the autoscaler can see an overload (or there is none)."""
    plan = setup.plan
    if plan.max_replicas <= max(1, plan.min_replicas):
        return []  # nothing to scale out to
    if plan.autoscaler == "kpa" and plan.knative is not None:
        kn = plan.knative
        if kn.metric == "rps":
            return []
        target = revision_target(kn, setup.assumptions)
        top = ceiling(setup, "concurrency", mean_images)
        return [BlindTarget("kpa concurrency", target, top)] if top is not None and top <= target else []
    if plan.autoscaler in ("hpa", "keda", "httpAddon") and plan.hpa_metrics:
        found = []
        for m in plan.hpa_metrics:
            top = ceiling(setup, m.signal, mean_images)
            if top is None or top > m.target:
                return []  # this metric can ask for more pods
            found.append(BlindTarget(m.signal, m.target, top))
        return found
    return []
