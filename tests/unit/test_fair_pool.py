"""The fair decode pool: requests take turns by cost, so none waits behind another's whole backlog."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from predictor.fair_pool import FairPool, PoolClosed

HUGE = 40_000_000  # pixels of one image at the default max_image_pixels
SMALL = 300_000  # a 640x480 photo


STARTED = threading.Event()


def _recorder(order: list[str], gate: threading.Event | None = None):
    """Jobs that record their turn; ``huge-0`` says it started, then holds its thread until ``gate`` opens."""
    STARTED.clear()

    def job(name: str):
        def run() -> str:
            if gate is not None and name == "huge-0":
                STARTED.set()
                assert gate.wait(10), "the test never opened the gate"
            order.append(name)
            return name

        return run

    return job


def test_a_small_request_runs_right_after_the_job_in_progress_not_after_the_backlog() -> None:
    pool = FairPool(1, "test")
    order: list[str] = []
    gate = threading.Event()
    job = _recorder(order, gate)
    try:
        huge = pool.submit_flow([job(f"huge-{i}") for i in range(64)], [HUGE] * 64)
        assert STARTED.wait(10)
        small = pool.submit_flow([job("small")], [SMALL])  # arrives while huge-0 runs
        gate.set()
        assert small[0].result(10) == "small"
        assert [f.result(10) for f in huge] == [f"huge-{i}" for i in range(64)], "the huge request is served too"
        assert order.index("small") == 1, order[:4]
    finally:
        pool.shutdown()


def test_requests_share_the_threads_by_cost_and_the_big_one_still_advances() -> None:
    """One small request always waiting beside a huge one: each job runs only when the test hands out a
    permit, and a new small request arrives before each, so every choice the pool makes is between the
    huge request's next image and a small request."""
    pool = FairPool(1, "test")
    order: list[str] = []
    permits = threading.Semaphore(0)
    ran = threading.Condition()

    def job(name: str):
        def run() -> str:
            assert permits.acquire(timeout=10), "no permit"
            with ran:
                order.append(name)
                ran.notify_all()
            return name

        return run

    try:
        big = pool.submit_flow([job(f"huge-{i}") for i in range(4)], [HUGE] * 4)
        for k in range(400):
            pool.submit_flow([job(f"small-{k}")], [SMALL])
            permits.release()
            with ran:
                assert ran.wait_for(lambda k=k: len(order) == k + 1, timeout=10)
        for _ in range(10):
            permits.release()
        assert [f.result(10) for f in big] == [f"huge-{i}" for i in range(4)]
        # Equal shares by pixels: after its first image the huge request's next one (40 M) comes after about
        # 40 M pixels of small requests (0.35 M each with the per-job overhead), not after all 400.
        huge_at = [order.index(f"huge-{i}") for i in range(4)]
        gaps = [b - a - 1 for a, b in itertools.pairwise(huge_at)]
        # (the pool may pick its next job a moment before the test's next small request arrives: bounds, not
        # exact counts)
        assert huge_at[0] <= 1 and all(50 <= g <= 250 for g in gaps), (huge_at, gaps)
    finally:
        pool.shutdown()


def test_cancelled_jobs_are_dropped_without_running() -> None:
    pool = FairPool(1, "test")
    order: list[str] = []
    gate = threading.Event()
    job = _recorder(order, gate)
    try:
        first = pool.submit_flow([job("huge-0")], [HUGE])
        assert STARTED.wait(10)
        gone = pool.submit_flow([job(f"gone-{i}") for i in range(3)], [SMALL] * 3)
        for f in gone:
            f.cancel()
        after = pool.submit_flow([job("after")], [SMALL])
        gate.set()
        assert after[0].result(10) == "after" and first[0].result(10) == "huge-0"
        assert order == ["huge-0", "after"], "a request that left has its decodes dropped"
    finally:
        pool.shutdown()


def test_run_flow_returns_each_jobs_outcome_and_cancelling_drops_the_rest() -> None:
    pool = FairPool(2, "test")

    def boom() -> int:
        raise ValueError("bad image")

    async def main() -> list:
        return await pool.run_flow([lambda: 1, boom, lambda: 3], [0, 0, 0])

    try:
        out = asyncio.run(main())
        assert out[0] == 1 and out[2] == 3 and isinstance(out[1], ValueError)
    finally:
        pool.shutdown()
    with pytest.raises(PoolClosed):
        pool.submit(lambda: None)
    with pytest.raises(ValueError, match="threads"):
        FairPool(0)
