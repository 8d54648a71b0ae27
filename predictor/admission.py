"""Admission: the one count of images in the pod, and the one place that refuses with 503.

An image is counted from the moment its request is admitted (before decoding) until its forward pass
is over; the count is the queue-depth gauge the autoscaler reads. A request that would take the count
over ``max_queue_images`` is refused at once with :class:`~predictor.errors.Overloaded` (503 +
``Retry-After``), so latency never grows past what the queue allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from predictor.errors import Overloaded


class Admission:
    """Bounded count of admitted images.

    Args:
        capacity: Most images admitted at once (``max_queue_images``).
        on_change: Called with the new depth after every change (the queue-depth gauge).
    """

    def __init__(self, capacity: int, on_change: Callable[[int], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._depth = 0
        self._on_change = on_change

    @property
    def depth(self) -> int:
        """Images admitted and not yet answered."""
        return self._depth

    def admit(self, n: int) -> None:
        """Count ``n`` images in, all or none.

        Raises:
            Overloaded: they would not fit; nothing is counted.
        """
        if self._depth + n > self.capacity:
            raise Overloaded(
                f"inference queue is full ({self._depth} of {self.capacity} images waiting, {n} more asked "
                "for); retry after the Retry-After interval"
            )
        self._change(n)

    def release(self, n: int) -> None:
        """Count ``n`` images out."""
        if n > self._depth:
            raise ValueError(f"releasing {n} images but only {self._depth} are admitted")
        self._change(-n)

    @contextmanager
    def slots(self, n: int) -> Iterator[None]:
        """Admit ``n`` images for the duration of the block."""
        self.admit(n)
        try:
            yield
        finally:
            self.release(n)

    def _change(self, delta: int) -> None:
        self._depth += delta
        if self._on_change is not None:
            self._on_change(self._depth)
