"""Admission: the one count of images in the pod, and the one place that refuses with 503.

An image is counted from the moment its request is admitted until its forward pass is over; the count
is the queue-depth gauge the autoscaler reads. A request is refused at once with
:class:`~predictor.errors.Overloaded` (503 + ``Retry-After``) when

* its images would take the count over ``max_queue_images`` (the memory bound), or
* its *expected wait* would exceed the queue-wait budget (``max_queue_wait_ms``, capped at
  ``request_timeout_ms``): the images ahead of it plus its own, divided by the measured drain rate, is the
  time until its last image has left the queue, corrected by how much longer than that recent requests near
  the budget took until their answer (:class:`WaitCalibration`: images leave a batch at a time, decoding
  shares the cores, the answer is built after the queue). Decoding and batching take turns by request, so
  each request ahead counts for at most as many images as the newcomer has (:meth:`Admission.ahead_of`): a
  small request is not refused for a huge one's backlog. So accepted latency stays near the budget however
  fast or slow the model is, and the queue holds only what the pod drains in that time (the pipeline also
  keeps each forward pass within an eighth of the budget: :class:`~predictor.batching.LatencyCap`). A
  request that finds the queue empty is always admitted (waiting cannot make it fit better). Cold start
  (nothing drained since start): the rate is the start's estimate (:meth:`DrainRate.estimate`, which the
  pipeline takes from a pass timed after the warm-up, batch delay included), corrected by the calibration's
  largest factor (the pass leaves out decoding and answering), so a wake's held requests are admitted by
  what the pod can drain; without an estimate at most ``cold_start_images`` (one batch) are
  admitted until the first images have drained.
* its images' decoded pixels (:func:`~predictor.preprocess.decode_cost_pixels`) would take the pixels
  admitted over ``max_queue_pixels``: decoding costs by pixels, not by image count, so a few huge
  images cannot fill the pod with work that the image count does not see. A request that alone decodes
  to more than that is refused with 413 (retrying cannot help).

Two steps, one count:

* :meth:`Admission.reserve`: the HTTP middleware counts in the images a request *declares* (its
  headers, the v2 binary header) before its body is read, so a request that cannot fit is refused
  without receiving or parsing it; it counts them in when the body has arrived (``on_arrival``,
  :meth:`Reservation.arrived`), so a body still on its way, or stalled, holds no capacity (slow clients
  cannot hold the queue). The :class:`Reservation` is handed to the pipeline explicitly, with the request
  (the middleware puts it in the request's state, the route passes it as an argument).
* :meth:`Admission.slots`: the pipeline counts in the images the request really has; it takes them from
  the request's reservation first, so a request admitted early is not refused again for the same
  images. Whatever of a reservation was not taken is given back when the request ends. A reservation is
  taken once and only while its request lasts: work moved somewhere that outlives its request, or
  admitted twice with one reservation, fails with an error instead of counting images twice.

``Retry-After`` is the time the queue ahead needs to drain at the measured drain rate (images leaving
the queue per second of busy time, over the last ``window_s`` busy seconds; the pipeline counts as busy
the time its batcher has images, see ``busy_from_depth``), so it grows with the queue
and shrinks with a faster model; 1 s until a rate has been measured or estimated, 60 s at most.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from predictor.errors import InvalidInput, Overloaded, PayloadTooLarge

RETRY_AFTER_MIN_S = 1
"""Shortest ``Retry-After`` (the header counts whole seconds)."""
RETRY_AFTER_MAX_S = 60
"""Longest ``Retry-After``: past a minute, the client had better try another pod."""
RATE_WINDOW_S = 10.0
"""How far back the drain rate looks."""
_SAMPLE_EVERY_S = 0.1


class ReservationMisuse(RuntimeError):
    """A reservation was used where it cannot be: after its request ended, twice, or with another admission.

    A programming error (a route that moved its work to a task outliving the request, or admitted the same
    request twice), raised instead of silently counting the request's images twice.
    """


class Reservation:
    """Images counted in for one request before its body was read (:meth:`Admission.reserve`).

    Used as a context manager around the request; passed to :meth:`Admission.slots` (through
    :meth:`Pipeline.classify <predictor.pipeline.Pipeline.classify>`), which takes the reserved images
    first; on exit, whatever was not taken is given back.
    """

    def __init__(self, admission: Admission, images: int, due: int = 0, expected_s: float | None = None) -> None:
        self.admission = admission
        self.declared = images + due
        """Images the request declared (what was reserved)."""
        self._images = images
        self.due = due
        """Declared images not counted in yet (the body is on its way): :meth:`arrived` counts them in."""
        self._taken = False
        self._ended = False
        self._counted_at: float | None = None if due else admission.clock()
        self._expected_s = expected_s  # the expected wait when counted in (the calibration's denominator)
        self.queue_s: float | None = None
        """Seconds its images were counted in the queue (from being counted in to the end of their forward
        pass: the time the queue-wait budget bounds); None until they have left it."""

    def arrived(self) -> None:
        """The request's body has arrived: count its declared images in now (all or none).

        Raises:
            Overloaded: they do not fit any more (the queue filled while the body was on its way).
        """
        if self.due:
            expected = self.admission.admit(self.due)
            self.admission.count_request(self.declared)
            self._images, self.due = self._images + self.due, 0
            self._counted_at, self._expected_s = self.admission.clock(), expected

    def left(self) -> None:
        """The request's images have left the queue (:meth:`Admission.slots` ends): :attr:`queue_s` is set."""
        if self._counted_at is not None and self.queue_s is None:
            self.queue_s = self.admission.clock() - self._counted_at

    def answering(self) -> None:
        """The answer starts: how long it took since its images were counted in, against the wait expected
        then, calibrates the admission's estimate (:class:`WaitCalibration`)."""
        if self.queue_s is None or self._counted_at is None:
            return
        self.admission.calibrate(self.admission.clock() - self._counted_at, self._expected_s)

    @property
    def images(self) -> int:
        """Reserved images not taken (yet)."""
        return self._images

    def check(self, admission: Admission) -> None:
        """Raise :class:`ReservationMisuse` unless :meth:`take` may be called for ``admission`` now."""
        if admission is not self.admission:
            raise ReservationMisuse("reservation handed to another Admission than the one that made it")
        if self._ended:
            raise ReservationMisuse(
                "reservation used after its request ended: the work outlived the request that admitted it "
                "(moved to a task that runs on after the answer?)"
            )
        if self._taken:
            raise ReservationMisuse("reservation taken twice: one request admitted to the pipeline twice")

    def take(self, n: int) -> int:
        """Hand up to ``n`` reserved images to the pipeline (once); returns how many it got."""
        self.check(self.admission)
        self._taken = True
        taken = min(n, self._images)
        self._images -= taken
        return taken

    def end(self) -> None:
        """The request is over: give back what was not taken; the reservation cannot be taken any more."""
        if self._ended:
            return
        self._ended = True
        if self.due:  # the body never arrived: nothing was counted in
            return
        unused, self._images = self._images, 0
        self.admission.reservation_ended(self.declared, unused, taken=self._taken)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


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
        self._estimate: float | None = None

    def estimate(self, images: int, busy_s: float) -> None:
        """Until the first images drain, the rate is ``images`` per ``busy_s`` (e.g. a warm-up pass): a pod
        that has just started admits a burst (a wake's held requests) by what it can drain, not one batch.
        The first drained images replace it (it is never mixed with what was measured)."""
        if images < 1 or busy_s <= 0:
            raise ValueError(f"an estimate needs images >= 1 and busy_s > 0, got {images}, {busy_s}")
        self._estimate = images / busy_s

    @property
    def measured(self) -> bool:
        """Whether images have drained (the rate is measured, not the start's estimate)."""
        return self._drained > 0

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
        """The drain rate; before anything drained, the start's estimate (None without one); 0 when the queue
        was busy a whole window without draining anything."""
        if self._drained == 0:
            return self._estimate
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


class WaitCalibration:
    """How much longer than expected recent requests waited: the estimate's correction.

    The expected wait is the images ahead at the measured drain rate, a straight line; images leave a batch
    at a time, their decoding shares the cores with the forward pass, and the answer is built after the
    queue, so a request near the budget waits longer, by a share that depends on the model, the device and
    the load. Each answered request whose expected wait was at least a quarter of the budget (below that,
    the batch a request joins, not the queue, decides its time) reports its time from being counted in to
    its answer's start, divided by its expected wait; the ``quantile`` of the last ``window`` of those
    ratios (1 until ``least`` were seen, at most ``most``: the queue keeps at least half the budget) is the
    factor the expected wait is multiplied by before it is compared with the budget.

    Args:
        window: How many recent ratios.
        quantile: Which quantile of them.
        least: Ratios seen before any correction.
        most: The largest correction.
    """

    def __init__(self, window: int = 256, quantile: float = 0.95, least: int = 32, most: float = 2.0) -> None:
        self._ratios: deque[float] = deque(maxlen=window)
        self._quantile = quantile
        self._least = least
        self._most = most
        self._since = 0
        self._factor = 1.0

    def observe(self, ratio: float) -> None:
        """One request took ``ratio`` times its expected wait."""
        if not math.isfinite(ratio) or ratio <= 0:
            return
        self._ratios.append(ratio)
        self._since += 1
        if len(self._ratios) >= self._least and self._since >= 16:  # sorted again every 16 requests
            self._since = 0
            ordered = sorted(self._ratios)
            self._factor = min(self._most, max(1.0, ordered[int(self._quantile * (len(ordered) - 1))]))

    def factor(self) -> float:
        """What the expected wait is multiplied by: 1 to ``most``."""
        return self._factor

    @property
    def most(self) -> float:
        """The largest correction (what an estimated rate is corrected by: nothing has been seen yet)."""
        return self._most


class RefusalRate:
    """Refusals a second over the last ``window_s`` seconds (what stretches ``Retry-After`` under pressure)."""

    def __init__(self, window_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._at: deque[float] = deque()

    def record(self) -> None:
        """One request refused now."""
        now = self._clock()
        self._at.append(now)
        self._prune(now)

    def per_s(self) -> float:
        """Refusals a second over the window."""
        self._prune(self._clock())
        return len(self._at) / self.window_s

    def _prune(self, now: float) -> None:
        while self._at and self._at[0] <= now - self.window_s:
            self._at.popleft()


class Admission:
    """Bounded count of admitted images (and of their decoded pixels), refusing what would wait too long.

    Args:
        capacity: Most images admitted at once (``max_queue_images``).
        on_change: Called with the new depth after every change (the queue-depth gauge).
        max_wait_s: Queue-wait budget: the longest expected wait admitted; None = no latency bound.
        cold_start_images: Most images admitted before any drain rate was measured (with ``max_wait_s``).
        pixel_capacity: Most decoded pixels admitted at once (``max_queue_pixels``); None = no bound.
        clock: Monotonic seconds (tests pass a fake one).
        window_s: How far back the drain rate behind ``Retry-After`` looks.
        busy_from_depth: Whether the drain rate's busy time is the time this count is above zero (True), or
            told by the caller through ``rate.depth_changed`` (the pipeline: the time the batcher has images
            to infer, so that a request whose images take long to decode, alone, does not read as a slow pod).
        refusals_per_s: The refusal rate above which ``Retry-After`` is stretched in proportion (None: never):
            clients that honour it then come back spread over a longer time, so that the refusals they cause
            stay near this rate instead of all coming back within the queue's drain time.
    """

    def __init__(
        self,
        capacity: int,
        on_change: Callable[[int], None] | None = None,
        *,
        max_wait_s: float | None = None,
        cold_start_images: int = 1,
        pixel_capacity: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = RATE_WINDOW_S,
        busy_from_depth: bool = True,
        refusals_per_s: float | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if max_wait_s is not None and max_wait_s <= 0:
            raise ValueError(f"max_wait_s must be > 0, got {max_wait_s}")
        if cold_start_images < 1 or (pixel_capacity is not None and pixel_capacity < 1):
            raise ValueError("cold_start_images and pixel_capacity must be >= 1")
        self.capacity = capacity
        self.max_wait_s = max_wait_s
        self.cold_start_images = cold_start_images
        self.pixel_capacity = pixel_capacity
        self._depth = 0
        self._pixels = 0
        self._requests: Counter[int] = Counter()  # requests admitted, by size (images)
        self._on_change = on_change
        self._busy_from_depth = busy_from_depth
        self.clock = clock
        self.rate = DrainRate(window_s, clock)
        self.calibration = WaitCalibration()
        self.refusals = RefusalRate(clock=clock)
        self.refusals_per_s = refusals_per_s

    @property
    def depth(self) -> int:
        """Images admitted (or reserved) and not yet answered."""
        return self._depth

    @property
    def pixels(self) -> int:
        """Decoded pixels of the images admitted by the pipeline and not yet answered."""
        return self._pixels

    def retry_after_s(self) -> int:
        """Seconds until the images queued now have drained at the measured rate, in whole seconds; stretched
        by how far the refusals of the last seconds exceed ``refusals_per_s`` (the queue holds at most the
        budget's worth, so without that every refused client would come back within a second or two)."""
        rate = self.rate.images_per_s()
        if rate is None:
            wait = float(RETRY_AFTER_MIN_S)
        elif rate <= 0:
            return RETRY_AFTER_MAX_S
        else:
            wait = self._depth / rate
        if self.refusals_per_s:
            wait *= max(1.0, self.refusals.per_s() / self.refusals_per_s)
        return max(RETRY_AFTER_MIN_S, min(RETRY_AFTER_MAX_S, math.ceil(wait)))

    def ahead_of(self, size: int, own: int = 0) -> int:
        """Images a request of ``size`` images waits for: each request admitted counts up to ``size`` of its
        images (decoding and batching take turns by request, so a request waits for at most its own size
        of each other's, not for another's whole backlog); ``own``: the request's own reservation, left out."""
        ahead = sum(count * min(s, size) for s, count in self._requests.items())
        return ahead - (min(own, size) if own else 0)

    def expected_wait_s(self, n: int, own: int = 0) -> float | None:
        """Seconds until a request of ``n`` images (``own`` of them reserved already) would have left the queue,
        at the measured drain rate; None before a rate was measured, infinity when nothing drains."""
        rate = self.rate.images_per_s()
        if rate is None:
            return None
        return (self.ahead_of(n, own) + n) / rate if rate > 0 else math.inf

    def admit(self, n: int, *, own: int = 0) -> float | None:
        """Count ``n`` images in, all or none; ``own``: images of the same request admitted already (its
        reservation), which are not "ahead" of it. Returns the expected wait they were admitted with (None
        before a rate was measured).

        Raises:
            InvalidInput: more images than the queue ever holds: retrying cannot help.
            Overloaded: they would not fit now (the queue is full, or they would wait past the budget);
                nothing is counted.
        """
        self._check_fits(n)
        if self._depth + n > self.capacity:
            raise self._overloaded(n)
        expected = self._check_wait(n, own)
        self._change(n)
        return expected

    def _overloaded(self, n: int) -> Overloaded:
        self.refusals.record()
        wait = self.retry_after_s()
        return Overloaded(
            f"inference queue is full ({self._depth} of {self.capacity} images waiting, {n} more asked "
            f"for); retry in {wait} s (Retry-After)",
            retry_after_seconds=wait,
        )

    def _check_wait(self, n: int, own: int) -> float | None:
        """The expected wait of ``n`` more images (``own`` admitted already), if it fits the budget."""
        size = n + own
        ahead = self.ahead_of(size, own)
        rate = self.rate.images_per_s()
        expected = None if rate is None else (ahead + size) / rate if rate > 0 else math.inf
        if self.max_wait_s is None or ahead <= 0:
            return expected  # nothing ahead: admitted whatever its own size
        budget_ms = round(self.max_wait_s * 1000)
        if expected is None:
            if self._depth + n <= self.cold_start_images:
                return None
            why = (
                f"no drain rate measured yet, and {self._depth} images are already waiting (at most "
                f"{self.cold_start_images} are admitted until the first have been answered)"
            )
        elif expected * self._factor() <= self.max_wait_s:
            return expected
        else:
            factor = self._factor()
            if not self.rate.measured:
                how, longer = (
                    "estimated (nothing has drained since start)",
                    f" (x {factor:.2f}, the most, until it has)",
                )
            else:
                how = "measured"
                longer = (
                    f" (x {factor:.2f}: recent requests waited that much longer than expected)" if factor > 1 else ""
                )
            why = (
                f"{ahead} images ahead of its {size} would take about {expected * factor * 1000:.0f} ms at the "
                f"{how} {rate:.1f} images/s{longer}, over the queue-wait budget of "
                f"{budget_ms} ms (max_queue_wait_ms)"
            )
        self.refusals.record()
        wait = self.retry_after_s()
        raise Overloaded(f"inference queue is busy: {why}; retry in {wait} s (Retry-After)", retry_after_seconds=wait)

    def _factor(self) -> float:
        """The expected wait's correction: the calibration's, or its largest while the rate is only the start's
        estimate (a warm pass leaves out decoding, parsing and answering, which share the pod's cores)."""
        return self.calibration.factor() if self.rate.measured else self.calibration.most

    def release(self, n: int) -> None:
        """Count ``n`` admitted images out: they left the queue (answered, failed or cancelled)."""
        self._check_release(n)
        self._change(-n)
        self.rate.drained(n)

    def reserve(self, n: int, *, on_arrival: bool = False) -> Reservation:
        """Count in the ``n`` images the current request declares, before its body is read.

        Enter the returned reservation around the request and pass it to :meth:`slots` (with the
        request); what :meth:`slots` did not take is given back when it ends.

        Args:
            n: The images declared.
            on_arrival: Check now that they fit (queue and wait budget), but count them in only when
                :meth:`Reservation.arrived` is called (the body has arrived): a body on its way holds no
                capacity.

        Raises:
            Overloaded: they would not fit; nothing is counted.
        """
        if on_arrival:
            self._check_fits(n)
            if self._depth + n > self.capacity:
                raise self._overloaded(n)
            self._check_wait(n, 0)
            return Reservation(self, 0, due=n)
        expected = self.admit(n)
        self.count_request(n)
        return Reservation(self, n, expected_s=expected)

    def calibrate(self, took_s: float, expected_s: float | None) -> None:
        """A request took ``took_s`` from being counted in to its answer, where ``expected_s`` was expected:
        requests expected to wait at least a quarter of the budget correct the estimate
        (:class:`WaitCalibration`)."""
        if self.max_wait_s is None or expected_s is None or not expected_s >= self.max_wait_s / 4:
            return
        self.calibration.observe(took_s / expected_s)

    def count_request(self, size: int) -> None:
        """A request of ``size`` declared images entered the queue (what :meth:`ahead_of` weighs)."""
        self._requests[size] += 1

    def reservation_ended(self, declared: int, unused: int, *, taken: bool) -> None:
        """A reservation's request ended: ``unused`` reserved images never entered the queue (out of the count,
        not part of the drain rate); one not ``taken`` by :meth:`slots` leaves the requests counted here."""
        self._check_release(unused)
        if unused:
            self._change(-unused)
        if not taken:
            self._leave(declared)

    @contextmanager
    def slots(self, n: int, reservation: Reservation | None = None, pixels: int = 0) -> Iterator[None]:
        """Admit ``n`` images (decoding to ``pixels`` pixels) for the block, taking ``reservation`` first.

        Raises:
            InvalidInput: more images than the queue ever holds.
            PayloadTooLarge: more decoded pixels than the queue ever holds.
            Overloaded: the images beyond the reservation, or the pixels, would not fit; the reservation
                is kept.
            ReservationMisuse: the reservation's request has ended, or it was taken already.
        """
        self._check_fits(n)
        self._check_pixels(pixels)
        if reservation is not None:
            reservation.check(self)
        own = reservation.images if reservation is not None else 0
        extra = n - min(n, own)
        if extra:
            self.admit(extra, own=own)
        if reservation is not None:
            reservation.take(n)
            self._leave(reservation.declared)  # the request is counted by its real size from now on
        self._requests[n] += 1
        self._pixels += pixels
        try:
            yield
        finally:
            self._pixels -= pixels
            self._leave(n)
            self.release(n)
            if reservation is not None:
                reservation.left()

    def _leave(self, size: int) -> None:
        self._requests[size] -= 1
        if self._requests[size] <= 0:
            del self._requests[size]

    def _check_pixels(self, pixels: int) -> None:
        cap = self.pixel_capacity
        if cap is None or pixels == 0:
            return
        if pixels > cap:
            raise PayloadTooLarge(
                f"the request's images decode to {pixels} pixels, more than this server ever queues ({cap}, "
                "max_queue_pixels): send fewer or smaller images"
            )
        if self._pixels + pixels > cap and self._pixels > 0:
            wait = self.retry_after_s()
            raise Overloaded(
                f"decoding queue is full ({self._pixels} of {cap} pixels admitted, {pixels} more asked for); "
                f"retry in {wait} s (Retry-After)",
                retry_after_seconds=wait,
            )

    def _check_fits(self, n: int) -> None:
        if n > self.capacity:
            raise InvalidInput(
                f"{n} images in one request, more than this server ever queues ({self.capacity}, "
                f"max_queue_images): send at most {self.capacity} per request"
            )

    def _check_release(self, n: int) -> None:
        if n > self._depth:
            raise ValueError(f"releasing {n} images but only {self._depth} are admitted")

    def _change(self, delta: int) -> None:
        old = self._depth
        self._depth += delta
        if self._busy_from_depth:
            self.rate.depth_changed(old, self._depth)
        if self._on_change is not None:
            self._on_change(self._depth)
