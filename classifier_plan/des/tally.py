"""Requests and what became of them: totals by outcome, the current second's counts and latencies, and the
time integral of the requests in flight (the concurrency Knative's autoscaler reads)."""

from __future__ import annotations

import math

import simpy

OUTCOMES = ("served", "refused", "timed_out", "failed")


class Request:
    """One request: when it arrived, its images, those not through the forward pass yet, its deadline."""

    __slots__ = ("deadline", "images", "left", "outcome", "t0")

    def __init__(self, t0: float, images: int) -> None:
        self.t0, self.images, self.left = t0, images, images
        self.outcome: str | None = None
        self.deadline = math.inf


class Tally:
    """Counts every request once: on arrival, and on its one outcome."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.inflight = 0
        self.area = 0.0  # request-seconds in flight since the last second's signals
        self.last_change = 0.0
        self.sec = [0, 0, 0, 0]  # offered, served, refused, timed out (or failed) in the current second
        self.sec_lat: list[float] = []  # served latencies (ms) in the current second
        self.arrived_sec = 0
        self.keep_latencies: list[float] | None = None  # every served latency (ms), for fixed-pod runs
        self.keep_after = 0.0  # ... of requests that arrived from then on

    def arrived(self) -> None:
        self.sec[0] += 1
        self.arrived_sec += 1
        self._inflight(+1)

    def outcome(self, req: Request, kind: str, latency_s: float | None = None) -> None:
        """``req`` is served (after ``latency_s``), refused, timed out or failed: exactly once."""
        assert req.outcome is None, f"request already {req.outcome}, now {kind}"
        req.outcome = kind
        self.outcomes[kind] += 1
        self._inflight(-1)
        if kind == "served":
            self.sec[1] += 1
            self.sec_lat.append(1000.0 * latency_s)  # type: ignore[operator]
            if self.keep_latencies is not None and req.t0 >= self.keep_after:
                self.keep_latencies.append(1000.0 * latency_s)  # type: ignore[operator]
        elif kind == "refused":
            self.sec[2] += 1
        else:
            self.sec[3] += 1

    def _inflight(self, delta: int) -> None:
        now = self.env.now
        self.area += self.inflight * (now - self.last_change)
        self.last_change = now
        self.inflight += delta

    def take_signals(self) -> tuple[float, int]:
        """The in-flight integral and the arrivals since the last call (the last second's); both restart."""
        self._inflight(0)
        concurrency, self.area = self.area, 0.0
        arrivals, self.arrived_sec = self.arrived_sec, 0
        return concurrency, arrivals

    def take_second(self) -> tuple[tuple[int, int, int, int], list[float]]:
        """The current second's counts and served latencies (ms); a new second starts."""
        counts, latencies = (self.sec[0], self.sec[1], self.sec[2], self.sec[3]), self.sec_lat
        self.sec, self.sec_lat = [0, 0, 0, 0], []
        return counts, latencies
