"""Admission: the one bounded count of images, and the 503 it answers past the bound."""

from __future__ import annotations

import asyncio

import pytest

from predictor.admission import Admission
from predictor.errors import InvalidInput, Overloaded


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
        with a.slots(3):  # 2 from the reservation, 1 more
            assert a.depth == 3 and reservation.images == 0
        assert a.depth == 0
    assert a.depth == 0


def test_an_early_admitted_request_is_not_refused_later_for_the_same_images() -> None:
    a = Admission(2)
    with a.reserve(2):
        with pytest.raises(Overloaded):  # another request, arriving while this one's body is read
            a.reserve(1)
        with a.slots(2):  # the pipeline's admission of the same two images succeeds
            assert a.depth == 2


def test_unused_reservations_are_given_back_whatever_happens() -> None:
    a = Admission(4)
    with pytest.raises(RuntimeError), a.reserve(3):
        raise RuntimeError("the body could not be parsed")
    assert a.depth == 0
    with a.reserve(3):
        with a.slots(1):
            assert a.depth == 3
        assert a.depth == 2, "the two images the request did not have are still reserved for it"
    assert a.depth == 0


def test_images_beyond_the_reservation_may_be_refused_and_the_reservation_stays() -> None:
    a = Admission(3)
    with a.reserve(1) as reservation:
        a.admit(2)  # another request fills the queue
        with pytest.raises(Overloaded), a.slots(2):
            pass
        assert reservation.images == 1 and a.depth == 3
    assert a.depth == 2
    a.release(2)


def test_the_reservation_belongs_to_the_request_and_reaches_its_child_tasks() -> None:
    a = Admission(4)

    async def pipeline(n: int) -> int:
        with a.slots(n):
            return a.depth

    async def request() -> tuple[int, int]:
        with a.reserve(2):
            inside = await asyncio.ensure_future(pipeline(2))  # as routes.until_disconnect runs it
        return inside, a.depth

    async def other_request() -> int:
        return await pipeline(1)  # no reservation of its own: admitted fresh

    assert asyncio.run(request()) == (2, 0)
    assert asyncio.run(other_request()) == 1 and a.depth == 0


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
    with a.reserve(1), pytest.raises(InvalidInput, match="send at most 4 per request"), a.slots(5):
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
        with a.slots(4):
            assert a.depth == 4, "the pipeline takes the reservation, not four more"
    assert a.depth == 0


def test_a_reservation_whose_body_never_came_gives_nothing_back() -> None:
    a = Admission(4)
    with a.reserve(4, on_arrival=True):
        pass
    assert a.depth == 0
    a.admit(4)  # nothing was counted twice or given back twice
