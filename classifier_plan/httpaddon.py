"""What the KEDA HTTP add-on's scaler reports for one ``HTTPScaledObject`` (kedacore/http-add-on
``scaler/handlers.go``): the requests in flight at the interceptor, those it holds included
(``concurrency``), or their arrival rate over ``window`` rounded up (``requestRate``). KEDA reads it for
activation (above 0 wakes the Deployment at once: the trigger is ``external-push``) and cooldown, and its HPA
for ``targetValue`` per pod (:class:`~classifier_plan.control.Controller`)."""

from __future__ import annotations

import math
from collections import deque

from classifier_plan.chart import HttpAddonScaling


class InterceptorCounts:
    """The interceptor's counts, sampled on each control step."""

    def __init__(self, addon: HttpAddonScaling) -> None:
        self.addon = addon
        self.window: deque[tuple[float, float]] = deque()  # (step end, requests that arrived in the step)
        self.total = 0.0
        self.last = 0.0
        self.concurrency = 0.0

    def record(self, now: float, arrivals_per_s: float, concurrency: float) -> None:
        """The arrival rate over the step that ends at ``now`` and the requests in flight (held ones included)."""
        arrived = arrivals_per_s * max(0.0, now - self.last)
        self.last = now
        self.window.append((now, arrived))
        self.total += arrived
        while self.window and self.window[0][0] <= now - self.addon.window_s:
            self.total -= self.window.popleft()[1]
        self.concurrency = concurrency

    def value(self) -> float:
        """The scaler's metric now."""
        if self.addon.metric == "requestRate":
            rate = max(0.0, self.total) / max(1.0, self.addon.window_s)
            return float(math.ceil(rate - 1e-9))
        # The average over the step: above 0 whenever a request was in flight in it, as the scaler's frequent
        # samples of the interceptor's count would see.
        return float(self.concurrency)
