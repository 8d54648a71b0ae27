"""What holds requests while the predictor has no ready pod, for both engines.

Two parts of a cluster do: Knative's activator (Knative mode) and the KEDA HTTP add-on's interceptor (Standard
mode with an ``HTTPScaledObject``). Elsewhere nothing does, and a request that finds no ready pod is refused.

* **Activator** (knative/serving ``pkg/activator/net/throttler.go``, ``handler/handler.go``): a request waits
  in the revision's breaker until a pod has a free slot; with ``containerConcurrency`` > 0 each pod takes at
  most that many requests at once (round-robin over pods with room, the first with room when it is 3 or
  less), so a wake from zero hands the first pod ``containerConcurrency`` requests and the rest follow as
  slots free or more pods become ready; with ``containerConcurrency`` 0 every held request goes at once. Past
  the revision timeout a waiting request gets 503 (its context's deadline); beyond ``breakerQueueDepth``
  (10,000) waiting requests, 503 at once. While it still holds requests the activator stays in the path
  (the autoscaler keeps it there while the burst exceeds the pods' capacity), so newcomers queue behind.
* **Interceptor** (kedacore/http-add-on ``interceptor/middleware/endpoint_resolver.go``): each request waits
  for a ready endpoint up to the readiness timeout (the ``HTTPScaledObject``'s ``timeouts.conditionWait``,
  then 504), then goes straight to the Service; the interceptor has no per-pod limit, so every held request
  reaches the first ready pod's queue at once (what does not fit is refused there, 503).

A request the activator passed on is still bound by the revision timeout from its arrival (it covers the
whole request); one the interceptor passed on has only the predictor's own deadline.

The engines apply this: ``des/engine.py`` request by request, ``fluid.py`` as flows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from classifier_plan.chart import ChartPlan

ACTIVATOR_QUEUE_DEPTH = 10_000
"""Requests an activator queues for one revision before it answers 503 at once (``breakerQueueDepth``)."""


@dataclass(frozen=True)
class Holder:
    """One holder's rules."""

    name: str  # activator | interceptor
    timeout_s: float  # how long a request may wait for a pod (from its arrival)
    per_pod: int  # most requests in one pod at once, sent by the holder (0: no limit)
    queue_depth: float  # most requests waiting; beyond it, 503 at once
    first_available: bool = False  # load balancing: the first pod with room (else round-robin)
    bounds_answer: bool = False  # the timeout counts to the answer too (Knative's revision timeout), not only
    # to the pod (the interceptor's conditionWait)


def holder_of(plan: ChartPlan) -> Holder | None:
    """The holder of the chart's requests, or None where nothing holds them (they are refused at zero)."""
    if plan.mode == "knative" and plan.knative is not None:
        cc = plan.knative.container_concurrency
        return Holder("activator", plan.knative.revision_timeout_s, cc, ACTIVATOR_QUEUE_DEPTH, 0 < cc <= 3, True)
    if plan.http_addon is not None:
        return Holder("interceptor", plan.http_addon.condition_wait_s, 0, math.inf)
    return None
