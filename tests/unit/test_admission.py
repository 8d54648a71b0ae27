"""Admission: the one bounded count of images, and the 503 it answers past the bound."""

from __future__ import annotations

import asyncio
import re

import pytest

from predictor.admission import Admission, ReservationMisuse, WaitCalibration
from predictor.errors import InvalidInput, Overloaded, PayloadTooLarge


def test_a_request_that_does_not_fit_is_refused_whole_and_admits_nothing() -> None:
    seen: list[int] = []
    a = Admission(4, seen.append)
    a.admit(3)
    with pytest.raises(Overloaded) as exc:
        a.admit(2)
    assert exc.value.status_code == 503 and exc.value.retry_after_seconds == 1  # nothing has drained yet
    assert "3 of 4 images waiting, 2 more asked for" in exc.value.message
    assert a.depth == 3, "a refused request admits none of its images"
    a.admit(1)
    assert a.depth == 4
    a.release(4)
    assert seen == [3, 4, 0], "the gauge follows every change"


def test_slots_are_given_back_when_the_block_fails() -> None:
    a = Admission(2)
    with pytest.raises(RuntimeError), a.slots(2):
        assert a.depth == 2
        raise RuntimeError("the request failed")
    assert a.depth == 0


def test_releasing_more_than_admitted_is_a_bug_not_a_negative_count() -> None:
    a = Admission(2)
    a.admit(1)
    with pytest.raises(ValueError, match="releasing 2 images but only 1"):
        a.release(2)
    with pytest.raises(ValueError, match="capacity"):
        Admission(0)


# ---------------------------------------------------------------- reservations (refuse before the body)


def test_slots_take_the_requests_reservation_first() -> None:
    a = Admission(4)
    with a.reserve(2) as reservation:
        assert a.depth == 2
        with a.slots(3, reservation):  # 2 from the reservation, 1 more
            assert a.depth == 3 and reservation.images == 0
        assert a.depth == 0
    assert a.depth == 0


def test_an_early_admitted_request_is_not_refused_later_for_the_same_images() -> None:
    a = Admission(2)
    with a.reserve(2) as reservation:
        with pytest.raises(Overloaded):  # another request, arriving while this one's body is read
            a.reserve(1)
        with a.slots(2, reservation):  # the pipeline's admission of the same two images succeeds
            assert a.depth == 2


def test_unused_reservations_are_given_back_whatever_happens() -> None:
    a = Admission(4)
    with pytest.raises(RuntimeError), a.reserve(3):
        raise RuntimeError("the body could not be parsed")
    assert a.depth == 0
    with a.reserve(3) as reservation:
        with a.slots(1, reservation):
            assert a.depth == 3
        assert a.depth == 2, "the two images the request did not have are still reserved for it"
    assert a.depth == 0


def test_images_beyond_the_reservation_may_be_refused_and_the_reservation_stays() -> None:
    a = Admission(3)
    with a.reserve(1) as reservation:
        a.admit(2)  # another request fills the queue
        with pytest.raises(Overloaded), a.slots(2, reservation):
            pass
        assert reservation.images == 1 and a.depth == 3
    assert a.depth == 2
    a.release(2)


def test_the_reservation_travels_with_the_request_to_any_task() -> None:
    """Handed over as an argument, it is taken wherever the work runs: a task that is not a child of the
    request's (here: one started by a worker that was running before the request came) takes it, and the
    request's images are counted once."""
    a = Admission(4)

    async def main() -> tuple[int, int]:
        jobs: asyncio.Queue = asyncio.Queue()
        depths: list[int] = []

        async def worker() -> None:  # started before the request: it does not inherit the request's context
            reservation, done = await jobs.get()
            with a.slots(2, reservation):
                depths.append(a.depth)
            done.set_result(None)

        task = asyncio.ensure_future(worker())
        with a.reserve(2) as reservation:
            done = asyncio.get_running_loop().create_future()
            await jobs.put((reservation, done))
            await done
        await task
        return depths[0], a.depth

    assert asyncio.run(main()) == (2, 0), "counted once, whichever task admits it"


def test_work_that_outlives_its_request_fails_loudly_instead_of_admitting_twice() -> None:
    a = Admission(4)

    async def main() -> None:
        with a.reserve(2) as reservation:
            pass  # the request ended (answered, or its client left) before the moved work ran
        with pytest.raises(ReservationMisuse, match="used after its request ended"), a.slots(2, reservation):
            pass
        assert a.depth == 0, "nothing admitted for it"

    asyncio.run(main())


def test_a_reservation_is_taken_once_and_by_its_own_admission() -> None:
    a, other = Admission(4), Admission(4)
    with a.reserve(2) as reservation:
        with a.slots(2, reservation):
            with pytest.raises(ReservationMisuse, match="taken twice"), a.slots(2, reservation):
                pass
            assert a.depth == 2, "the second use admitted nothing"
        with pytest.raises(ReservationMisuse, match="another Admission"), other.slots(1, reservation):
            pass
    assert a.depth == 0 and other.depth == 0


# ---------------------------------------------------------------- Retry-After from the drain rate


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drain(a: Admission, clock: FakeClock, images_per_s: float, seconds: float, chunk: int = 10) -> None:
    """Keep the queue busy and let ``chunk`` images leave every ``chunk / images_per_s`` seconds."""
    for _ in range(round(seconds * images_per_s / chunk)):
        a.admit(chunk)
        clock.now += chunk / images_per_s
        a.release(chunk)


def test_retry_after_is_the_queues_drain_time_and_grows_with_the_queue() -> None:
    clock = FakeClock()
    a = Admission(1000, clock=clock)
    with a.slots(1):  # one image stays queued throughout, so the pod is busy the whole time
        drain(a, clock, images_per_s=100.0, seconds=5.0)
    assert a.rate.images_per_s() == pytest.approx(100.0, rel=0.01)
    waits = {}
    for depth in (50, 200, 500, 999):
        a.admit(depth - a.depth)
        waits[depth] = a.retry_after_s()
    assert waits == {50: 1, 200: 2, 500: 5, 999: 10}  # ceil(depth / 100 images/s)
    with pytest.raises(Overloaded) as exc:
        a.admit(2)
    assert exc.value.retry_after_seconds == 10 and exc.value.headers() == {"Retry-After": "10"}
    assert "retry in 10 s" in exc.value.message


def test_a_faster_pod_asks_for_a_shorter_wait() -> None:
    waits = []
    for rate in (50.0, 200.0):
        clock = FakeClock()
        a = Admission(1000, clock=clock)
        with a.slots(1):
            drain(a, clock, images_per_s=rate, seconds=5.0)
        a.admit(400)
        waits.append(a.retry_after_s())
    assert waits == [8, 2]


def test_idle_time_does_not_dilute_the_rate() -> None:
    clock = FakeClock()
    a = Admission(1000, clock=clock)
    drain(a, clock, images_per_s=100.0, seconds=3.0)
    clock.now += 3600.0  # an idle hour: the queue was empty
    drain(a, clock, images_per_s=100.0, seconds=0.5)
    assert a.rate.images_per_s() == pytest.approx(100.0, rel=0.01)


def test_the_rate_follows_the_last_window_of_busy_time() -> None:
    clock = FakeClock()
    a = Admission(1000, clock=clock, window_s=2.0)
    drain(a, clock, images_per_s=400.0, seconds=5.0)
    drain(a, clock, images_per_s=50.0, seconds=4.0)  # the model slowed down (a GPU shared, a CPU throttled)
    assert a.rate.images_per_s() == pytest.approx(50.0, rel=0.1)


def test_retry_after_before_any_measurement_and_when_nothing_drains() -> None:
    clock = FakeClock()
    a = Admission(10, clock=clock, window_s=2.0)
    a.admit(10)
    assert a.retry_after_s() == 1, "nothing measured yet: the shortest wait"
    clock.now += 0.5
    a.release(1)
    a.admit(1)
    assert a.retry_after_s() == 5  # 1 image in 0.5 busy seconds: 10 images take 5 s
    clock.now += 100.0  # busy for 100 s and nothing left: the queue is stuck
    assert a.rate.images_per_s() == 0.0
    assert a.retry_after_s() == 60, "capped at a minute"


def test_more_images_than_the_queue_ever_holds_is_the_clients_error_not_a_retry() -> None:
    a = Admission(4)
    for admit in (a.admit, a.reserve):
        with pytest.raises(InvalidInput, match=r"5 images in one request, more than this server ever queues \(4"):
            admit(5)
    with a.reserve(1) as r, pytest.raises(InvalidInput, match="send at most 4 per request"), a.slots(5, r):
        pass
    assert a.depth == 0


def test_a_reservation_on_arrival_refuses_at_once_but_counts_in_only_when_the_body_came() -> None:
    a = Admission(4)
    a.admit(3)
    with pytest.raises(Overloaded):
        a.reserve(2, on_arrival=True)  # does not fit now: refused before the body is read
    a.release(3)
    with a.reserve(4, on_arrival=True) as reservation:
        assert a.depth == 0, "a body on its way holds no capacity"
        a.admit(1)  # another request takes a slot meanwhile
        with pytest.raises(Overloaded):
            reservation.arrived()  # the queue filled while the body came: all or none
        assert a.depth == 1 and reservation.images == 0
        a.release(1)
        reservation.arrived()
        assert a.depth == 4 and reservation.images == 4
        with a.slots(4, reservation):
            assert a.depth == 4, "the pipeline takes the reservation, not four more"
    assert a.depth == 0


def test_a_reservation_whose_body_never_came_gives_nothing_back() -> None:
    a = Admission(4)
    with a.reserve(4, on_arrival=True):
        pass
    assert a.depth == 0
    a.admit(4)  # nothing was counted twice or given back twice


def test_a_reservation_knows_how_long_its_images_were_counted_in_the_queue() -> None:
    """From being counted in (the body came) to the end of the pipeline's block: what the budget bounds."""
    now = [100.0]
    a = Admission(4, clock=lambda: now[0])
    with a.reserve(2, on_arrival=True) as reservation:
        now[0] += 5.0  # the body on its way: not in the queue
        reservation.arrived()
        now[0] += 0.25
        with a.slots(2, reservation):
            assert reservation.queue_s is None, "still in the queue"
            now[0] += 0.5
        now[0] += 9.0  # answering: out of the queue
    assert reservation.queue_s == pytest.approx(0.75)
    with a.reserve(1) as counted_at_once:  # counted in when reserved
        now[0] += 0.1
        with a.slots(1, counted_at_once):
            now[0] += 0.2
    assert counted_at_once.queue_s == pytest.approx(0.3)
    with a.reserve(1, on_arrival=True) as never_came:
        pass
    assert never_came.queue_s is None


# ---------------------------------------------------------------- latency-bounded admission


def _measured(images_per_s: float, max_wait_s: float, capacity: int = 1000) -> tuple[Admission, FakeClock]:
    clock = FakeClock()
    a = Admission(capacity, clock=clock, cold_start_images=8)
    with a.slots(1):
        drain(a, clock, images_per_s=images_per_s, seconds=5.0)
    a.max_wait_s = max_wait_s  # measured without a budget, then bounded
    assert a.rate.images_per_s() == pytest.approx(images_per_s, rel=0.05)
    return a, clock


def test_a_request_is_admitted_while_its_expected_wait_fits_the_budget() -> None:
    a, _ = _measured(images_per_s=100.0, max_wait_s=1.0)  # the budget holds 100 images
    held = [a.reserve(1) for _ in range(99)]  # 99 one-image requests waiting
    last = a.reserve(1)  # its image leaves the queue 1.0 s from now
    assert a.depth == 100 and a.expected_wait_s(1) == pytest.approx(1.01, rel=0.01)
    for r in [*held, last]:
        r.end()


def test_a_request_that_would_wait_past_the_budget_is_refused_at_once_with_retry_after() -> None:
    a, _ = _measured(images_per_s=100.0, max_wait_s=1.0)
    held = [a.reserve(2) for _ in range(48)]  # 96 images in 48 requests
    with pytest.raises(Overloaded) as exc:
        a.reserve(5)  # waits for 2 of each of 48 requests and its own 5: 1.01 s, though the queue (1000) has room
    assert exc.value.status_code == 503 and exc.value.retry_after_seconds == 1
    assert re.search(
        r"96 images ahead of its 5 would take about 10\d\d ms at the measured 10\d\.\d images/s", exc.value.message
    ), exc.value.message
    assert "over the queue-wait budget of 1000 ms (max_queue_wait_ms)" in exc.value.message
    assert a.depth == 96, "nothing admitted"
    a.reserve(3).end()  # what fits is still admitted
    with a.reserve(1) as r, pytest.raises(Overloaded), a.slots(5, r):  # the pipeline's admission, the same budget
        pass
    for r in held:
        r.end()
    assert a.depth == 0


def test_the_expected_wait_is_corrected_by_how_much_longer_recent_requests_took() -> None:
    """Requests expected to wait at least a quarter of the budget report how long they took, from being
    counted in to their answer; the p90 of took / expected (1 to 2) multiplies the expected wait."""
    a, _ = _measured(images_per_s=100.0, max_wait_s=1.0)
    held = [a.reserve(1) for _ in range(79)]
    a.reserve(1).end()  # 80 images would leave the queue in 0.8 s: within the budget, uncorrected
    for _ in range(40):  # requests expected to wait 0.5 s took 0.75 s until their answer
        a.calibrate(0.75, 0.5)
    assert a.calibration.factor() == pytest.approx(1.5)
    with pytest.raises(Overloaded) as exc:
        a.reserve(1)  # 0.8 s x 1.5: over 1 s
    message = exc.value.message
    assert re.search(
        r"would take about 1[12]\d\d ms at the measured 10\d\.\d images/s \(x 1\.50: recent requests", message
    )
    assert "over the queue-wait budget of 1000 ms (max_queue_wait_ms)" in message, message
    for r in held[60:]:
        r.end()
    a.reserve(1).end()  # 0.6 s x 1.5 fits
    for r in held[:60]:
        r.end()
    assert a.depth == 0


def test_only_requests_near_the_budget_calibrate_and_the_correction_is_bounded() -> None:
    a, _ = _measured(images_per_s=100.0, max_wait_s=1.0)
    for _ in range(200):  # a request expected to wait 0.1 s waits for its batch, not the queue: ignored
        a.calibrate(1.0, 0.1)
    a.calibrate(1.0, None)  # nothing was expected (no rate yet): ignored
    assert a.calibration.factor() == 1.0
    for _ in range(200):
        a.calibrate(5.0, 0.5)  # ten times as long: the queue still keeps half the budget
    assert a.calibration.factor() == 2.0
    for _ in range(300):
        a.calibrate(0.3, 0.5)  # faster than expected: never below the estimate
    assert a.calibration.factor() == 1.0


def test_the_calibration_waits_for_enough_requests_and_takes_their_p90() -> None:
    cal = WaitCalibration(window=64, quantile=0.9, least=32)
    for _ in range(31):
        cal.observe(1.8)
    assert cal.factor() == 1.0, "31 requests are too few"
    cal.observe(1.8)
    assert cal.factor() == pytest.approx(1.8)
    for _ in range(64):  # the window (64) holds only these now (the quantile is taken again every 16)
        cal.observe(1.2)
    assert cal.factor() == pytest.approx(1.2)
    cal.observe(float("nan"))
    cal.observe(-1.0)
    assert cal.factor() == pytest.approx(1.2)


def test_a_reservation_reports_its_time_to_the_answer_against_the_wait_expected_when_counted_in() -> None:
    now = [0.0]
    a = Admission(100, clock=lambda: now[0], max_wait_s=1.0)
    seen: list[tuple[float, float | None]] = []
    a.calibrate = lambda took, expected: seen.append((took, expected))  # type: ignore[method-assign]
    with a.reserve(1) as first:  # nothing ahead: nothing expected yet (no rate)
        with a.slots(1, first):
            now[0] += 0.5
        now[0] += 0.1
        first.answering()
    assert seen == [(pytest.approx(0.6), None)]
    with a.reserve(1, on_arrival=True) as r:
        now[0] += 3.0  # the body on its way: not counted
        r.arrived()
        with a.slots(1, r):
            now[0] += 0.2
        r.answering()
    assert seen[1][0] == pytest.approx(0.2)
    with a.reserve(1, on_arrival=True) as never_came:
        never_came.answering()  # never counted in: reports nothing
    assert len(seen) == 2


def test_a_small_request_waits_for_its_share_of_a_big_one_not_for_all_of_it() -> None:
    a, _ = _measured(images_per_s=10.0, max_wait_s=1.0)
    with a.reserve(1) as big, a.slots(64, big):  # 6.4 s of work (alone in the queue: admitted)
        small = a.reserve(1)  # batching and decoding take turns: it waits for about one of the 64
        assert a.expected_wait_s(1) == pytest.approx(0.3, rel=0.1)
        small.end()
        with pytest.raises(Overloaded, match="64 images ahead of its 64"):
            a.reserve(64)  # another big one would wait for all 64: 12.8 s


def test_the_budget_follows_the_measured_rate() -> None:
    slow, _ = _measured(images_per_s=10.0, max_wait_s=1.0)
    held = [slow.reserve(1) for _ in range(9)]
    with pytest.raises(Overloaded):
        slow.reserve(2)
    fast, _ = _measured(images_per_s=500.0, max_wait_s=1.0)
    held += [fast.reserve(2) for _ in range(200)]
    assert fast.depth == 400


def test_a_request_finding_the_queue_empty_is_admitted_whatever_its_size() -> None:
    a, _ = _measured(images_per_s=10.0, max_wait_s=1.0)
    a.reserve(64)  # 6.4 s of work alone: waiting would not make it fit better
    assert a.depth == 64


def test_cold_start_admits_one_batch_until_a_rate_is_measured() -> None:
    clock = FakeClock()
    a = Admission(1000, clock=clock, max_wait_s=1.0, cold_start_images=8)
    assert a.rate.images_per_s() is None
    first, second = a.reserve(5), a.reserve(3)  # 8: one batch
    with pytest.raises(Overloaded) as exc:
        a.reserve(1)
    assert "no drain rate measured yet" in exc.value.message and exc.value.retry_after_seconds == 1
    with first, second, a.slots(5, first), a.slots(3, second):
        clock.now += 0.1  # the first batch is answered: 8 images in 0.1 busy seconds, 80 images/s
    held = [a.reserve(1) for _ in range(78)]  # 78 images: 0.98 s at 80 images/s
    with pytest.raises(Overloaded, match="over the queue-wait budget"):
        a.reserve(2)
    assert len(held) == 78


def test_with_an_estimate_a_pod_that_has_drained_nothing_admits_what_it_can_drain() -> None:
    """The start's estimate (a warm pass) stands in for the rate until images drain, then is dropped."""
    clock = FakeClock()
    a = Admission(1000, clock=clock, max_wait_s=1.0, cold_start_images=8)
    a.rate.estimate(32, 0.5)  # 64 images/s
    assert not a.rate.measured and a.rate.images_per_s() == 64.0
    # A wake's burst: the estimate counts double (the calibration's most) until images drain: 32 images
    # of 1 s at 64 images/s, not one batch of 8.
    held = [a.reserve(1) for _ in range(32)]
    with pytest.raises(Overloaded) as exc:
        a.reserve(1)
    assert (
        "32 images ahead of its 1 would take about 1031 ms at the estimated (nothing has drained since start) "
        "64.0 images/s (x 2.00, the most, until it has)" in exc.value.message
    )
    assert exc.value.retry_after_seconds == 1  # 32 images at 64 images/s
    with held[0], held[1], a.slots(1, held[0]), a.slots(1, held[1]):
        clock.now += 0.5  # the first answers: 2 images in 0.5 busy seconds, 4 images/s measured
    assert a.rate.measured and a.rate.images_per_s() == pytest.approx(4.0)
    assert a.retry_after_s() == 8  # 30 images at the measured 4 a second


@pytest.mark.parametrize(("images", "busy_s"), [(0, 1.0), (8, 0.0), (8, -1.0)])
def test_an_estimate_needs_images_and_time(images: int, busy_s: float) -> None:
    with pytest.raises(ValueError, match="an estimate needs"):
        Admission(10).rate.estimate(images, busy_s)


def test_without_a_budget_only_the_image_bound_applies() -> None:
    a, _ = _measured(images_per_s=10.0, max_wait_s=1.0)
    unbounded = Admission(1000)
    unbounded.rate = a.rate
    unbounded.admit(10)
    unbounded.admit(500)
    assert unbounded.depth == 510


# ---------------------------------------------------------------- admitted by decoded pixels


def test_pixels_are_admitted_with_the_images_and_bounded() -> None:
    a = Admission(100, pixel_capacity=1_000)
    with a.slots(1, pixels=600):
        assert a.pixels == 600
        with pytest.raises(Overloaded, match=r"decoding queue is full \(600 of 1000 pixels admitted, 500 more"):
            with a.slots(1, pixels=500):
                pass
        assert a.depth == 1 and a.pixels == 600, "the refused request counted nothing"
        with a.slots(1, pixels=400):
            assert a.pixels == 1_000
    assert a.pixels == 0 and a.depth == 0


def test_a_request_decoding_to_more_pixels_than_the_queue_holds_is_413_not_a_retry() -> None:
    a = Admission(100, pixel_capacity=1_000)
    with pytest.raises(PayloadTooLarge) as exc, a.slots(2, pixels=1_001):
        pass
    assert exc.value.status_code == 413 and exc.value.retry_after_seconds is None
    assert "decode to 1001 pixels, more than this server ever queues (1000, max_queue_pixels)" in exc.value.message
    assert a.depth == 0 and a.pixels == 0
    with a.slots(1, pixels=1_000):  # alone, a request up to the bound is admitted
        assert a.pixels == 1_000


def test_a_request_alone_is_admitted_whole_even_after_its_first_image_was_reserved() -> None:
    a, _ = _measured(images_per_s=10.0, max_wait_s=1.0)
    with a.reserve(1) as reservation, a.slots(64, reservation):  # 63 beyond the reservation; nothing ahead
        assert a.depth == 64
    other = a.reserve(64)  # another request is ahead now
    with a.reserve(1) as reservation, pytest.raises(Overloaded, match="queue-wait budget"), a.slots(64, reservation):
        pass
    other.end()
    assert a.depth == 0


def test_busy_time_may_come_from_the_batcher_instead_of_the_count() -> None:
    """The pipeline counts as busy only the time its batcher has images to infer: a request whose images are
    slow to decode (alone in the batcher's eyes) does not lower the rate others are admitted by."""
    clock = FakeClock()
    a = Admission(100, clock=clock, busy_from_depth=False)
    with a.slots(32):
        clock.now += 30.0  # 30 s of decoding, the batcher idle
        a.rate.depth_changed(0, 32)
        clock.now += 0.5  # then half a second of forward passes
        a.rate.depth_changed(32, 0)
    assert a.rate.images_per_s() == pytest.approx(64.0)


def test_retry_after_stretches_with_the_refusals_past_their_rate() -> None:
    """20 images at 40 images/s drain in 0.5 s: Retry-After 1. Refusals past 10 a second (over the last 2 s)
    stretch the drain time in proportion, so that clients honouring it come back spread out instead of all
    within the second: 100 refusals in 0.1 s are 50 a second, 5x: 2.5 s, Retry-After 3."""
    a, clock = _measured(images_per_s=40.0, max_wait_s=0.5)
    a.refusals_per_s = 10.0
    held = [a.reserve(1) for _ in range(20)]
    assert a.retry_after_s() == 1
    answers = []
    for _ in range(100):
        with pytest.raises(Overloaded) as exc:
            a.reserve(1)
        answers.append(exc.value.retry_after_seconds)
        clock.now += 0.001
    assert answers[0] == 1 and answers[-1] == 3 and answers == sorted(answers)
    clock.now += 2.0  # the window has passed with no refusal: back to the drain time
    assert a.retry_after_s() == 1
    assert len(held) == 20


def test_without_a_refusal_rate_retry_after_is_the_drain_time_whatever_the_refusals() -> None:
    a, clock = _measured(images_per_s=40.0, max_wait_s=0.5)
    held = [a.reserve(1) for _ in range(20)]
    for _ in range(100):
        with pytest.raises(Overloaded) as exc:
            a.reserve(1)
        clock.now += 0.001
    assert exc.value.retry_after_seconds == 1 and len(held) == 20
