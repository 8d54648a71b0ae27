"""The cluster's lifecycle events: callbacks at simulated times."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator

Callback = Callable[[float], None]
"""Called with the time the event was due."""


class EventQueue:
    """Callbacks in time order; events due at the same time run in the order they were added."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callback]] = []
        self._seq = itertools.count()

    def at(self, t: float, fn: Callback) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn))

    def due(self, now: float) -> Iterator[tuple[float, Callback]]:
        """Pop every event due by ``now``, including those added while the caller runs the earlier ones."""
        while self._heap and self._heap[0][0] <= now:
            t, _, fn = heapq.heappop(self._heap)
            yield t, fn
