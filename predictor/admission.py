"""Admission: the one count of images in the pod, and the one place that refuses with 503.

An image is counted from the moment its request is admitted until its forward pass is over; the count
is the queue-depth gauge the autoscaler reads. A request that would take the count over
``max_queue_images`` is refused at once with :class:`~predictor.errors.Overloaded` (503 +
``Retry-After``), so latency never grows past what the queue allows.

Two steps, one count:

* :meth:`Admission.reserve`: the HTTP middleware checks the images a request *declares* (its
  headers, the v2 binary header) before its body is read, so a request that cannot fit is refused
  without receiving or parsing it; it counts them in when the body has arrived (``on_arrival``), so a
  body still on its way, or stalled, holds no capacity (slow clients cannot hold the queue). The
  reservation belongs to the current request (a context variable: the route, and KServe's v1 route,
  run in the task the middleware runs in, or a child task of it).
* :meth:`Admission.slots`: the pipeline counts in the images the request really has; it takes them from
  the request's reservation first, so a request admitted early is not refused again for the same
  images. Whatever of a reservation was not taken is given back when the request ends.

``Retry-After`` is the time the queue ahead needs to drain at the measured drain rate (images leaving
the queue per second of busy time, over the last ``window_s`` busy seconds), so it grows with the queue
and shrinks with a faster model; 1 s until a rate has been measured, 60 s at most.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from predictor.errors import InvalidInput, Overloaded

RETRY_AFTER_MIN_S = 1
"""Shortest ``Retry-After`` (the header counts whole seconds)."""
RETRY_AFTER_MAX_S = 60
"""Longest ``Retry-After``: past a minute, the client had better try another pod."""
RATE_WINDOW_S = 10.0
"""How far back the drain rate looks."""
_SAMPLE_EVERY_S = 0.1


class Reservation:
    """Images counted in for one request before its body was read (:meth:`Admission.reserve`).

    Used as a context manager around the request: inside it, :meth:`Admission.slots` takes the reserved
    images first; on exit, whatever was not taken is given back.
    """

    def __init__(self, admission: Admission, images: int, due: int = 0) -> None:
        self.admission = admission
        self.images = images
        self.due = due
        """Declared images not counted in yet: :meth:`arrived` counts them in."""
        self._token: Token[Reservation | None] | None = None

    def arrived(self) -> None:
        """The request's body has arrived: count its declared images in now (all or none).

        Raises:
            Overloaded: they do not fit any more (the queue filled while the body was on its way).
        """
        if self.due:
            self.admission.admit(self.due)
            self.images, self.due = self.images + self.due, 0

    def __enter__(self) -> Reservation:
        self._token = self.admission._reservation.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            self.admission._reservation.reset(self._token)
            self._token = None
        unused, self.images = self.images, 0
        if unused:
            self.admission._give_back(unused)


class DrainRate:
    """Images leaving the queue per second of *busy* time (depth > 0), over the last ``window_s`` busy seconds.

    Idle time is left out, so a spike that starts after a quiet hour is measured at the rate the pod
    drained when it last had work, not diluted by the quiet.
    """

    def __init__(self, window_s: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._busy_s = 0.0
        self._busy_from: float | None = None
        self._drained = 0
        self._last_sample_at = clock()
        self._samples: deque[tuple[int, float]] = deque([(0, 0.0)])  # (images drained, busy seconds)

    def depth_changed(self, old: int, new: int) -> None:
        """Account busy time: called with the depth before and after every change."""
        now = self._clock()
        if old > 0 and self._busy_from is not None:
            self._busy_s += now - self._busy_from
        self._busy_from = now if new > 0 else None

    def drained(self, n: int) -> None:
        """``n`` admitted images left the queue (answered, failed or cancelled)."""
        self._drained += n
        now = self._clock()
        if now - self._last_sample_at >= _SAMPLE_EVERY_S:
            self._last_sample_at = now
            self._samples.append((self._drained, self._busy_now(now)))
            self._prune(self._busy_now(now))

    def images_per_s(self) -> float | None:
        """The drain rate; None before anything drained, 0 when the queue was busy a whole window
        without draining anything."""
        if self._drained == 0:
            return None
        busy = self._busy_now(self._clock())
        self._prune(busy)
        drained0, busy0 = self._samples[0]
        if busy <= busy0:
            return None
        return (self._drained - drained0) / (busy - busy0)

    def _busy_now(self, now: float) -> float:
        return self._busy_s + (now - self._busy_from if self._busy_from is not None else 0.0)

    def _prune(self, busy: float) -> None:
        # Keep the newest sample at or before the window's start as its boundary.
        while len(self._samples) > 1 and self._samples[1][1] <= busy - self.window_s:
            self._samples.popleft()


class Admission:
    """Bounded count of admitted images.

    Args:
        capacity: Most images admitted at once (``max_queue_images``).
        on_change: Called with the new depth after every change (the queue-depth gauge).
        clock: Monotonic seconds (tests pass a fake one).
        window_s: How far back the drain rate behind ``Retry-After`` looks.
    """

    def __init__(
        self,
        capacity: int,
        on_change: Callable[[int], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = RATE_WINDOW_S,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._depth = 0
        self._on_change = on_change
        self.rate = DrainRate(window_s, clock)
        self._reservation: ContextVar[Reservation | None] = ContextVar(f"admission-{id(self)}", default=None)

    @property
    def depth(self) -> int:
        """Images admitted (or reserved) and not yet answered."""
        return self._depth

    def retry_after_s(self) -> int:
        """Seconds until the images queued now have drained at the measured rate, in whole seconds."""
        rate = self.rate.images_per_s()
        if rate is None:
            return RETRY_AFTER_MIN_S
        if rate <= 0:
            return RETRY_AFTER_MAX_S
        return max(RETRY_AFTER_MIN_S, min(RETRY_AFTER_MAX_S, math.ceil(self._depth / rate)))

    def admit(self, n: int) -> None:
        """Count ``n`` images in, all or none.

        Raises:
            InvalidInput: more images than the queue ever holds: retrying cannot help.
            Overloaded: they would not fit now; nothing is counted.
        """
        self._check_fits(n)
        if self._depth + n > self.capacity:
            raise self._overloaded(n)
        self._change(n)

    def _overloaded(self, n: int) -> Overloaded:
        wait = self.retry_after_s()
        return Overloaded(
            f"inference queue is full ({self._depth} of {self.capacity} images waiting, {n} more asked "
            f"for); retry in {wait} s (Retry-After)",
            retry_after_seconds=wait,
        )

    def release(self, n: int) -> None:
        """Count ``n`` admitted images out: they left the queue (answered, failed or cancelled)."""
        self._check_release(n)
        self._change(-n)
        self.rate.drained(n)

    def reserve(self, n: int, *, on_arrival: bool = False) -> Reservation:
        """Count in the ``n`` images the current request declares, before its body is read.

        Enter the returned reservation around the request: :meth:`slots` in its context (or in a task
        started from it) takes these images; what it did not take is given back on exit.

        Args:
            n: The images declared.
            on_arrival: Check now that they fit, but count them in only when :meth:`Reservation.arrived`
                is called (the body has arrived): a body on its way holds no capacity.

        Raises:
            Overloaded: they would not fit; nothing is counted.
        """
        self._check_fits(n)
        if on_arrival:
            if self._depth + n > self.capacity:
                raise self._overloaded(n)
            return Reservation(self, 0, due=n)
        self.admit(n)
        return Reservation(self, n)

    @contextmanager
    def slots(self, n: int) -> Iterator[None]:
        """Admit ``n`` images for the duration of the block, taking the request's reservation first.

        Raises:
            InvalidInput: more images than the queue ever holds.
            Overloaded: the images beyond the reservation would not fit; the reservation is kept.
        """
        self._check_fits(n)
        reservation = self._reservation.get()
        taken = min(n, reservation.images) if reservation is not None else 0
        if n > taken:
            self.admit(n - taken)
        if reservation is not None:
            reservation.images -= taken
        try:
            yield
        finally:
            self.release(n)

    def _check_fits(self, n: int) -> None:
        if n > self.capacity:
            raise InvalidInput(
                f"{n} images in one request, more than this server ever queues ({self.capacity}, "
                f"max_queue_images): send at most {self.capacity} per request"
            )

    def _give_back(self, n: int) -> None:
        """Reserved images that never entered the queue: out of the count, not part of the drain rate."""
        self._check_release(n)
        self._change(-n)

    def _check_release(self, n: int) -> None:
        if n > self._depth:
            raise ValueError(f"releasing {n} images but only {self._depth} are admitted")

    def _change(self, delta: int) -> None:
        old = self._depth
        self._depth += delta
        self.rate.depth_changed(old, self._depth)
        if self._on_change is not None:
            self._on_change(self._depth)
