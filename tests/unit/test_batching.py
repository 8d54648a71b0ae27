"""DynamicBatcher with a fake model: ragged sizes, random order, deadline flush, error fan-out, cancellation.

Events are ordered with events (the model says when a batch entered it), not with sleeps."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from predictor.batching import BatcherClosed, BatchStats, DynamicBatcher, LatencyCap
from predictor.errors import DeadlineExceeded


class FakeModel:
    """Doubles each input; records batch sizes and the thread it ran on; can block (``gate``) or fail.

    ``entered`` is set when a batch has reached the model, so tests order events without sleeping.
    """

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on: int | None = None
        self.wrong_count = False
        self.run_for_s = 0.0

    def __call__(self, values: list[int]) -> list[int]:
        self.entered.set()
        self.gate.wait(5)
        time.sleep(self.run_for_s)
        self.threads.add(threading.get_ident())
        self.batches.append(list(values))
        if self.fail_on is not None and self.fail_on in values:
            raise RuntimeError(f"boom on {self.fail_on}")
        if self.wrong_count:
            return [v * 2 for v in values][:-1]
        return [v * 2 for v in values]


def far() -> float:
    return time.monotonic() + 30


async def entered(model: FakeModel) -> None:
    """Wait (off the loop) until a batch is inside the model."""
    assert await asyncio.to_thread(model.entered.wait, 5), "no batch reached the model"
    model.entered.clear()


async def make(model: FakeModel, **kw) -> DynamicBatcher[int, int]:
    opts = {"max_batch_size": 8, "max_batch_delay_ms": 20}
    opts.update(kw)
    b = DynamicBatcher(model, **opts)
    b.start()
    return b


async def test_ragged_requests_random_order_each_gets_its_own_results() -> None:
    model = FakeModel()
    b = await make(model)
    rng = random.Random(7)
    requests = [[rng.randrange(1000) for _ in range(rng.randint(1, 5))] for _ in range(40)]

    async def one(values: list[int]) -> list[int]:
        await asyncio.sleep(rng.random() * 0.02)
        return await b.submit(values, far())

    results = await asyncio.gather(*(one(r) for r in requests))
    assert results == [[v * 2 for v in r] for r in requests]
    assert max(len(x) for x in model.batches) > 1, "concurrent requests must coalesce"
    assert all(len(x) <= 8 for x in model.batches)
    assert sum(len(x) for x in model.batches) == sum(len(r) for r in requests)
    assert len(model.threads) == 1, "the handler runs on one dedicated thread"
    await b.close()


async def test_lone_item_is_flushed_after_the_delay() -> None:
    model = FakeModel()
    b = await make(model, max_batch_delay_ms=50)
    t0 = time.monotonic()
    assert await b.submit([3], far()) == [6]
    waited = time.monotonic() - t0
    assert 0.04 <= waited < 2.0
    assert model.batches == [[3]]
    await b.close()


async def test_full_batch_does_not_wait_for_the_delay() -> None:
    model = FakeModel()
    b = await make(model, max_batch_size=4, max_batch_delay_ms=5000)
    t0 = time.monotonic()
    assert await b.submit([1, 2, 3, 4], far()) == [2, 4, 6, 8]
    assert time.monotonic() - t0 < 2.0
    await b.close()


async def test_failing_batch_fails_only_its_own_requests() -> None:
    model = FakeModel()
    model.gate.clear()  # hold the first batch so the next requests queue behind it
    b = await make(model, max_batch_size=1, max_batch_delay_ms=1)  # one item per batch: requests take turns
    first = asyncio.ensure_future(b.submit([1, 2], far()))
    await entered(model)
    bad = asyncio.gather(*b.submit_many([666, 5], far()))  # enqueued now, in this order
    good = asyncio.gather(*b.submit_many([7, 8], far()))
    model.fail_on = 666
    model.gate.set()
    assert await first == [2, 4]
    with pytest.raises(RuntimeError, match="boom on 666"):
        await bad
    assert await good == [14, 16]
    await b.close()


async def test_wrong_result_count_is_an_error_not_a_silent_mismatch() -> None:
    model = FakeModel()
    model.wrong_count = True
    b = await make(model)
    with pytest.raises(ValueError, match="returned 1 results for 2 inputs"):
        await b.submit([1, 2], far())
    await b.close()


async def test_cancelled_items_never_reach_the_model() -> None:
    model = FakeModel()
    model.gate.clear()
    b = await make(model, max_batch_size=1, max_batch_delay_ms=0)
    running = asyncio.ensure_future(b.submit([1], far()))
    await entered(model)  # [1] is now inside the handler, blocked on the gate
    gone = asyncio.ensure_future(b.submit([99, 98], far()))
    await asyncio.sleep(0)  # let `gone` enqueue (one step of the loop, not a wait for time)
    gone.cancel()
    await asyncio.sleep(0)
    model.gate.set()
    assert await running == [2]
    assert await b.submit([5], far()) == [10]
    assert all(99 not in x and 98 not in x for x in model.batches)
    await b.close()


async def test_items_past_their_deadline_are_dropped_with_504() -> None:
    model = FakeModel()
    model.gate.clear()
    b = await make(model, max_batch_size=1, max_batch_delay_ms=0)
    running = asyncio.ensure_future(b.submit([1], far()))
    await entered(model)
    late = asyncio.gather(*b.submit_many([2], time.monotonic() + 0.01))
    await asyncio.to_thread(time.sleep, 0.05)  # its deadline passes while [1] holds the model
    model.gate.set()
    assert await running == [2]
    with pytest.raises(DeadlineExceeded):
        await late
    assert [2] not in model.batches
    await b.close()


async def test_batch_hook_reports_size_and_waits() -> None:
    stats: list[BatchStats] = []
    model = FakeModel()
    model.run_for_s = 0.05
    b = await make(model, max_batch_delay_ms=30, on_batch=stats.append)
    t0 = time.monotonic()
    await b.submit([1, 2, 3], far())
    elapsed = time.monotonic() - t0
    (s,) = stats
    assert s.size == 3 and len(s.queue_waits_s) == 3
    assert 0.05 <= s.run_s <= elapsed, "run_s is the handler's own time"
    assert all(0.03 <= w <= elapsed - s.run_s + 0.01 for w in s.queue_waits_s), "waits include the batch delay"
    await b.close()


async def test_close_finishes_admitted_work() -> None:
    model = FakeModel()
    b = await make(model, max_batch_delay_ms=100)
    pending = asyncio.ensure_future(b.submit([1, 2], far()))
    await asyncio.sleep(0)
    await b.close()
    assert await pending == [2, 4]


def test_bad_arguments_raise_precise_errors() -> None:
    with pytest.raises(TypeError):
        DynamicBatcher(42, max_batch_size=1, max_batch_delay_ms=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(FakeModel(), max_batch_size=0, max_batch_delay_ms=1)
    with pytest.raises(ValueError, match="max_batch_delay_ms"):
        DynamicBatcher(FakeModel(), max_batch_size=1, max_batch_delay_ms=-1)


async def test_a_closed_batcher_refuses_work_with_a_typed_error() -> None:
    b = await make(FakeModel())
    assert b.run_on_handler_thread(lambda: 41) + 1 == 42
    await b.close()
    with pytest.raises(BatcherClosed):
        b.submit_many([1], far())
    with pytest.raises(BatcherClosed):
        b.run_on_handler_thread(lambda: 1)


async def test_an_exception_result_fails_that_item_alone() -> None:
    """A handler may put an exception in an item's place (an image undecodable on the device)."""

    def handler(values: list[int]) -> list:
        return [ValueError(f"bad {v}") if v < 0 else v * 2 for v in values]

    b = DynamicBatcher(handler, max_batch_size=8, max_batch_delay_ms=20)
    b.start()
    mixed = await b.submit([1, -2, 3], far(), return_exceptions=True)
    assert mixed[0] == 2 and mixed[2] == 6
    assert isinstance(mixed[1], ValueError) and str(mixed[1]) == "bad -2"
    with pytest.raises(ValueError, match="bad -5"):
        await b.submit([4, -5], far())
    assert await b.submit([7], far()) == [14]
    await b.close()


async def test_a_lowered_cap_bounds_every_later_batch_and_can_be_raised_again() -> None:
    model = FakeModel()
    model.gate.clear()  # hold the first batch so the rest queue behind it
    b = await make(model, max_batch_size=8, max_batch_delay_ms=1)
    first = asyncio.ensure_future(b.submit([0], far()))
    await entered(model)
    b.set_batch_cap(3)  # from another thread, as the inference thread does after running out of memory
    queued = asyncio.gather(*b.submit_many(list(range(1, 11)), far()))
    model.gate.set()
    assert await first == [0]
    assert await queued == [v * 2 for v in range(1, 11)]
    assert [len(x) for x in model.batches[1:]] == [3, 3, 3, 1]
    assert b.batch_cap == 3 and b.max_batch_size == 8
    b.set_batch_cap(8)
    model.gate.clear()
    model.entered.clear()  # set by the batches above
    first = asyncio.ensure_future(b.submit([0], far()))
    await entered(model)
    queued = asyncio.gather(*b.submit_many(list(range(1, 11)), far()))
    model.gate.set()
    await first
    await queued
    assert [len(x) for x in model.batches[6:]] == [8, 2]
    await b.close()


async def test_lowering_the_cap_sends_a_batch_that_now_is_full_without_waiting_for_the_delay() -> None:
    model = FakeModel()
    b = await make(model, max_batch_size=8, max_batch_delay_ms=60_000)
    pending = asyncio.gather(*b.submit_many([1, 2, 3, 4, 5], far()))  # 5 of 8: the batch waits for more
    await asyncio.sleep(0)  # the collector is waiting for more items now
    assert not model.entered.is_set()
    await asyncio.to_thread(b.set_batch_cap, 5)  # from another thread, as the pipeline does
    assert await asyncio.wait_for(pending, 5) == [2, 4, 6, 8, 10]
    assert model.batches == [[1, 2, 3, 4, 5]]
    await b.close()


def test_the_cap_is_checked() -> None:
    b = DynamicBatcher(FakeModel(), max_batch_size=4, max_batch_delay_ms=1)
    for bad in (0, 5, -1):
        with pytest.raises(ValueError, match=r"batch cap must be between 1 and max_batch_size \(4\), got"):
            b.set_batch_cap(bad)
    for bad in (2.0, True, "3"):
        with pytest.raises(TypeError, match="batch cap must be an int"):
            b.set_batch_cap(bad)  # type: ignore[arg-type]
    b.set_batch_cap(1)  # before start: just stored
    assert b.batch_cap == 1


async def test_requests_take_turns_in_batches_instead_of_waiting_behind_a_backlog() -> None:
    model = FakeModel()
    model.gate.clear()  # hold the first batch so the next requests queue behind it
    b = await make(model, max_batch_size=4, max_batch_delay_ms=1)
    first = asyncio.ensure_future(b.submit([1], far()))
    await entered(model)
    big = asyncio.gather(*b.submit_many(list(range(100, 112)), far()))  # 12 items: three batches of its own
    small = asyncio.gather(*b.submit_many([7], far()))  # arrives after the big one
    model.gate.set()
    assert await first == [2] and await small == [14]
    assert await big == [2 * v for v in range(100, 112)]
    batches = [sorted(batch) for batch in model.batches[1:]]
    assert 7 in batches[0], f"the small request rides in the next batch, not after the backlog: {batches}"
    await b.close()


# ---------------------------------------------------------------- latency cap


def test_a_pass_is_kept_within_an_eighth_of_the_budget() -> None:
    cap = LatencyCap(32, budget_s=1.0)
    assert cap.value == 32, "nothing measured yet"
    assert cap.observe(32, 0.48)  # 15 ms an image: 0.125 s holds 8
    assert cap.value == 8
    assert not cap.observe(8, 0.12)
    fast = LatencyCap(32, budget_s=1.0)
    assert not fast.observe(32, 0.01) and fast.value == 32, "a fast device keeps max_batch_size"
    slow = LatencyCap(32, budget_s=1.0)
    slow.observe(1, 0.5)
    assert slow.value == 1, "never below one image"


def test_the_cap_follows_the_median_pass_not_one_slow_one() -> None:
    cap = LatencyCap(32, budget_s=1.0, samples=5)
    for _ in range(4):
        cap.observe(8, 0.04)  # 5 ms an image: 25 images
    assert cap.value == 25
    cap.observe(8, 4.0)  # one pass 100 times as slow (a pause, a neighbour)
    assert cap.value == 25
    for _ in range(3):
        cap.observe(8, 0.16)  # the model really got slower: 20 ms an image
    assert cap.value == 6


def test_without_a_budget_there_is_no_latency_cap() -> None:
    cap = LatencyCap(16, budget_s=None)
    assert not cap.observe(16, 10.0) and cap.value == 16
    assert not LatencyCap(16, 1.0).observe(0, 1.0), "an empty pass says nothing"
