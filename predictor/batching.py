"""Dynamic batching: items from concurrent requests coalesce into one call of a batch handler.

The handler is synchronous and runs on one dedicated thread (a GPU or a pinned CPU pool wants exactly
one caller). The collector runs on the event loop: it waits for the first item, then for more until
``max_batch_size`` items are there or ``max_batch_delay_ms`` has passed since the first arrived, and
hands the batch to the thread. While a batch runs, new items keep queueing, so under load the next
batch is ready the moment the thread is free.

Guarantees:
* a submitter of N items gets exactly its N results back, in order;
* a handler that raises, or returns the wrong number of results, fails only that batch's futures; a
  handler may return an exception in an item's place, which fails that item alone;
* items whose future was cancelled (a client that went away) or whose deadline passed before their
  batch formed are dropped and never reach the handler;
* submitters take turns: each :meth:`DynamicBatcher.submit_many` call (one request) is a queue of its own,
  and batches take one item of each in turn, so a request's items wait behind at most as many of another
  request's as it has itself, not behind a large request's whole backlog.

How many items may wait is not the batcher's decision: the caller admits requests before they reach it
(:class:`predictor.admission.Admission`, counted from arrival, decoding included).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from predictor.errors import DeadlineExceeded, PredictorError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Item(Generic[T, R]):
    value: T
    future: asyncio.Future[R]
    deadline: float  # time.monotonic() seconds
    enqueued_at: float = field(default_factory=time.monotonic)
    released: bool = False


@dataclass(frozen=True)
class BatchStats:
    """What the batch hook reports about one handler call."""

    size: int
    queue_waits_s: list[float]
    run_s: float


BATCH_SHARE_OF_BUDGET = 0.125
"""The longest a forward pass may take, as a share of the queue-wait budget (:class:`LatencyCap`)."""


class LatencyCap:
    """The most images per forward pass such that one pass takes at most ``share`` of the queue-wait budget.

    Images leave the queue a batch at a time: an image that just misses a batch waits for a whole pass more,
    so a pass that takes half the budget (32 images at 67 images/s on one CPU core: 0.48 s of a 1-s budget)
    makes the budget a coin toss. The time per image is the median over the last ``samples`` passes
    (``run_s / size``); on a fast device the cap stays at ``max_batch_size``.

    Args:
        max_batch_size: The configured most images per forward pass.
        budget_s: The queue-wait budget; None: no cap.
        share: The share of it one pass may take.
        samples: How many recent passes the time per image is the median of.
    """

    def __init__(
        self, max_batch_size: int, budget_s: float | None, share: float = BATCH_SHARE_OF_BUDGET, samples: int = 9
    ) -> None:
        self.max_batch_size = max_batch_size
        self.budget_s = budget_s
        self.share = share
        self._per_image_s: deque[float] = deque(maxlen=samples)
        self.value = max_batch_size

    def observe(self, size: int, run_s: float) -> bool:
        """One forward pass of ``size`` images took ``run_s``; True when the cap changed."""
        if self.budget_s is None or size < 1 or run_s <= 0:
            return False
        self._per_image_s.append(run_s / size)
        per_image = statistics.median(self._per_image_s)
        new = max(1, min(self.max_batch_size, int(self.budget_s * self.share / per_image)))
        changed, self.value = new != self.value, new
        return changed


class BatcherClosed(RuntimeError):
    """The batcher is closed: no new items, and no more calls on its handler thread."""


class DynamicBatcher(Generic[T, R]):
    """Coalesce single items into batches for a synchronous batch handler.

    Args:
        handler: ``list[T] -> list[R]``, same length and order; run on one dedicated thread.
        max_batch_size: most items per handler call (:meth:`set_batch_cap` may lower it for a while).
        max_batch_delay_ms: longest wait for more items after the first of a batch arrived.
        on_batch: optional hook called (on the loop) after each handler call, for metrics.
        thread_name: name of the dedicated handler thread.
        on_depth: optional hook called (on the loop) with the depth before and after every change.
    """

    def __init__(
        self,
        handler: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int,
        max_batch_delay_ms: float,
        on_batch: Callable[[BatchStats], None] | None = None,
        thread_name: str = "batch-handler",
        on_depth: Callable[[int, int], None] | None = None,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_batch_delay_ms < 0:
            raise ValueError(f"max_batch_delay_ms must be >= 0, got {max_batch_delay_ms}")
        self._handler = handler
        self.max_batch_size = max_batch_size
        self._batch_cap = max_batch_size
        self.max_batch_delay_s = max_batch_delay_ms / 1000.0
        self._on_batch = on_batch
        # One queue per submitter (request), served round-robin: a request's images wait for at most as many
        # of each other request's as it has itself, not for another's whole backlog.
        self._flows: collections.deque[collections.deque[_Item[T, R]]] = collections.deque()
        self._queued = 0
        self._depth = 0  # queued + running
        self._on_depth = on_depth
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._executor_shut = False
        self._closed = False

    @property
    def batch_cap(self) -> int:
        """The most items the next batch may hold: ``max_batch_size``, or less while capped."""
        return self._batch_cap

    def set_batch_cap(self, n: int) -> None:
        """Form batches of at most ``n`` items from now on (e.g. after the device ran out of memory).

        Safe to call from any thread: the collector reads the cap when it forms the next batch.

        Raises:
            ValueError: ``n`` is not between 1 and ``max_batch_size``.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"batch cap must be an int, got {type(n).__name__}")
        if not 1 <= n <= self.max_batch_size:
            raise ValueError(f"batch cap must be between 1 and max_batch_size ({self.max_batch_size}), got {n}")
        self._batch_cap = n
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None and not loop.is_closed():
            # a lower cap may complete the batch being formed now
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wakeup.set)

    def start(self) -> None:
        """Start the collector on the running event loop."""
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._collect(), name="batch-collector")

    def submit_many(self, values: Sequence[T], deadline: float) -> list[asyncio.Future[R]]:
        """Enqueue all ``values`` at once; return one future per value.

        Raises:
            BatcherClosed: the batcher is not started or is closed.
        """
        if self._task is None or self._closed:
            raise BatcherClosed("batcher is not running")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        flow: collections.deque[_Item[T, R]] = collections.deque()
        self._set_depth(self._depth + len(values))
        for v in values:
            fut: asyncio.Future[R] = loop.create_future()
            # Create the future before enqueueing, so a fast batch can never miss it.
            item: _Item[T, R] = _Item(v, fut, deadline)
            # A cancelled item (its client went away) is counted out at once.
            fut.add_done_callback(lambda f, it=item: f.cancelled() and self._release(it))
            flow.append(item)
            futures.append(fut)
        if flow:
            self._flows.append(flow)
            self._queued += len(flow)
        assert self._wakeup is not None
        self._wakeup.set()
        return futures

    async def submit(self, values: Sequence[T], deadline: float, return_exceptions: bool = False) -> list:
        """Admit ``values`` and wait for their results (cancelling them if this task is cancelled).

        With ``return_exceptions``, an item that failed alone (its handler result was an exception)
        has that exception in its place; otherwise the first such failure is raised.
        """
        futures = self.submit_many(values, deadline)
        try:
            return list(await asyncio.gather(*futures, return_exceptions=return_exceptions))
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    async def _collect(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queued:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            first_at = min(flow[0].enqueued_at for flow in self._flows)
            while self._queued < self._batch_cap and not self._closed:
                remaining = first_at + self.max_batch_delay_s - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take_batch()
            if batch:
                await self._run(loop, batch)

    def _take_batch(self) -> list[_Item[T, R]]:
        batch: list[_Item[T, R]] = []
        now = time.monotonic()
        cap = self._batch_cap
        while self._flows and len(batch) < cap:
            flow = self._flows.popleft()  # round-robin: one item of each request in turn
            item = flow.popleft()
            self._queued -= 1
            if flow:
                self._flows.append(flow)
            if item.future.done():  # cancelled by a client that went away: already released
                continue
            if item.deadline <= now:
                item.future.set_exception(DeadlineExceeded("request deadline passed while queued"))
                self._release(item)
                continue
            batch.append(item)
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Item[T, R]]) -> None:
        started = time.monotonic()
        waits = [started - it.enqueued_at for it in batch]
        try:
            results = await loop.run_in_executor(self._executor, self._handler, [it.value for it in batch])
            if len(results) != len(batch):
                raise ValueError(f"batch handler returned {len(results)} results for {len(batch)} inputs")
        except Exception as e:  # fail exactly this batch's futures
            if isinstance(e, PredictorError):  # the handler's answer to the clients (it logged the cause)
                logger.debug("batch of %d failed: %s", len(batch), e)
            else:
                logger.exception("batch of %d failed", len(batch))
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(e)
        else:
            for it, res in zip(batch, results, strict=True):
                if it.future.done():
                    continue
                if isinstance(res, BaseException):  # this item alone failed (e.g. undecodable on the device)
                    it.future.set_exception(res)
                else:
                    it.future.set_result(res)
        finally:
            for it in batch:
                self._release(it)
        if self._on_batch is not None:
            self._on_batch(BatchStats(len(batch), waits, time.monotonic() - started))

    def _release(self, item: _Item[T, R]) -> None:
        if item.released:
            return
        item.released = True
        self._set_depth(self._depth - 1)

    def _set_depth(self, new: int) -> None:
        old, self._depth = self._depth, new
        if self._on_depth is not None:
            self._on_depth(old, new)

    def run_on_handler_thread(self, fn: Callable[[], R]) -> R:
        """Run ``fn`` on the dedicated handler thread and wait (engine load, precision check, warm-up).

        Raises:
            BatcherClosed: the batcher was closed and its thread stopped.
        """
        if self._executor_shut:
            raise BatcherClosed("the handler thread has stopped")
        try:
            future = self._executor.submit(fn)
        except RuntimeError:  # shut down between the check and the submit
            if self._executor_shut:
                raise BatcherClosed("the handler thread has stopped") from None
            raise
        return future.result()

    async def close(self) -> None:
        """Stop after the queued items are done; fail nothing that was admitted."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor_shut = True
        self._executor.shutdown(wait=True)
