"""A thread pool that shares its threads fairly between requests: no request's decoding waits behind
another's whole backlog.

A plain :class:`~concurrent.futures.ThreadPoolExecutor` runs jobs first in, first out: one request with
64 huge PNGs queues 64 long decodes, and a one-image request that arrives a moment later waits for all of
them. Here every :meth:`FairPool.map` call is a *flow* (one request), and its jobs carry a cost (the
pixels they decode). The next job to run is the one with the smallest virtual finish time (self-clocked
fair queueing): a flow's first job finishes at the pool's virtual time plus its cost, each next one
after the previous, and the virtual time is the finish time of the job last started. Every flow active
at once gets an equal share of the decoded pixels, whatever the size of its backlog: a small request
behind a huge one waits for at most the jobs already running, and the huge one still advances while
small ones keep arriving.

Jobs of a flow whose futures were cancelled (a request that timed out or whose client left) are dropped
when their turn comes, without running.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

JOB_OVERHEAD_COST = 50_000
"""Cost added to every job (in pixels): decoding has a fixed cost per image, so tiny images are not free."""


class PoolClosed(RuntimeError):
    """The pool is shut down: no new jobs."""


class FairPool:
    """Worker threads running jobs from many flows, each flow getting an equal share by cost.

    Args:
        threads: Worker threads.
        thread_name_prefix: Name of the worker threads (``decode-0``, ...).
    """

    def __init__(self, threads: int, thread_name_prefix: str = "fair") -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Future[Any], Callable[[], Any]]] = []
        self._seq = itertools.count()
        self._virtual = 0.0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{thread_name_prefix}-{i}", daemon=True) for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., T], *args: Any, cost: float = 0.0) -> Future[T]:
        """Run ``fn(*args)`` as a flow of its own (one job)."""
        return self.submit_flow([lambda: fn(*args)], [cost])[0]

    def submit_flow(self, jobs: Sequence[Callable[[], T]], costs: Sequence[float]) -> list[Future[T]]:
        """Queue the jobs of one flow (one request); returns one future per job, in order.

        Raises:
            PoolClosed: the pool is shut down.
        """
        if len(jobs) != len(costs):
            raise ValueError(f"{len(jobs)} jobs but {len(costs)} costs")
        futures: list[Future[T]] = []
        with self._cond:
            if self._closed:
                raise PoolClosed("the pool is shut down")
            finish = self._virtual
            for job, cost in zip(jobs, costs, strict=True):
                finish += max(0.0, cost) + JOB_OVERHEAD_COST
                fut: Future[T] = Future()
                heapq.heappush(self._heap, (finish, next(self._seq), fut, job))
                futures.append(fut)
            self._cond.notify(len(futures))
        return futures

    async def run_flow(self, jobs: Sequence[Callable[[], T]], costs: Sequence[float]) -> list[T | BaseException]:
        """:meth:`submit_flow` from the event loop, waiting for every job; a job's exception is returned
        in its place. Cancelling the caller drops the jobs that have not started."""
        futures = [asyncio.wrap_future(f) for f in self.submit_flow(jobs, costs)]
        try:
            return list(await asyncio.gather(*futures, return_exceptions=True))
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    @property
    def pending(self) -> int:
        """Jobs queued and not started (cancelled ones included until their turn)."""
        with self._cond:
            return len(self._heap)

    def shutdown(self, wait: bool = True) -> None:
        """Run what is queued, then stop the threads (``wait``: join them)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for t in self._threads:
                t.join()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if not self._heap:
                    return  # closed and drained
                finish, _, fut, job = heapq.heappop(self._heap)
                if not fut.set_running_or_notify_cancel():
                    continue  # cancelled: its request is gone
                self._virtual = max(self._virtual, finish)
            try:
                result = job()
            except BaseException as e:  # handed to the waiting request
                fut.set_exception(e)
            else:
                fut.set_result(result)
