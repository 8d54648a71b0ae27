"""Worker processes (``python -m predictor worker``) against a real Redis: hundreds of jobs, a worker
killed with SIGKILL mid-batch, Redis killed and restarted, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import redis

from predictor.config import Settings
from predictor.queue.jobs import JobQueue

from .conftest import RedisServer, WorkerProcess, wait_for

STREAM, GROUP = "image_processing_queue", "classifiers"


def submit(url: str, images: list[bytes]) -> list[str]:
    async def go() -> list[str]:
        queue = JobQueue(Settings(redis_url=url))
        try:
            await queue.ensure_group()
            return await queue.submit(images, top_k=2)
        finally:
            await queue.close()

    return asyncio.run(go())


def states(url: str, ids: list[str]) -> list[dict]:
    async def go() -> list[dict]:
        queue = JobQueue(Settings(redis_url=url))
        try:
            return await queue.get_many(ids)
        finally:
            await queue.close()

    return asyncio.run(go())


def finished(r: redis.Redis, total: int = 300) -> int:
    try:
        return total - r.xlen(STREAM)
    except redis.RedisError:
        return 0


def owned_by(r: redis.Redis, consumer: str) -> list[bytes]:
    return [p["message_id"] for p in r.xpending_range(STREAM, GROUP, "-", "+", 1000, consumername=consumer)]


def assert_exactly_one_result_each(r: redis.Redis, url: str, ids: list[str]) -> None:
    got = states(url, ids)
    assert [s["status"] for s in got] == ["done"] * len(ids)
    assert all(len(s["predictions"]) == 2 for s in got)
    assert len(list(r.scan_iter(f"{STREAM}:job:*", count=1000))) == len(ids)  # no stray results
    assert r.xlen(STREAM) == 0 and r.xpending(STREAM, GROUP)["pending"] == 0


def test_jobs_survive_sigkill_of_a_worker_mid_batch(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess], png_images: list[bytes]
) -> None:
    ids = submit(redis_server.url, png_images)
    r = redis_server.client()
    w1 = start_worker(redis_server.url, "w1")
    wait_for(lambda: finished(r) >= 30 or not w1.alive(), 60, "the first worker to finish 30 jobs")
    assert w1.alive(), w1.log()

    def frozen_mid_batch() -> bool:  # stop it while it holds delivered, unacknowledged jobs
        w1.proc.send_signal(signal.SIGSTOP)
        if owned_by(r, "w1"):
            return True
        w1.proc.send_signal(signal.SIGCONT)
        return False

    wait_for(frozen_mid_batch, 20, "the first worker to hold a batch", interval_s=0.01)
    stranded = owned_by(r, "w1")
    w1.stop(signal.SIGKILL)
    done_before = finished(r)
    assert done_before < 300

    w2 = start_worker(redis_server.url, "w2")
    wait_for(lambda: finished(r) == 300 or not w2.alive(), 90, "the second worker to finish every job")
    assert w2.alive(), w2.log()
    assert_exactly_one_result_each(r, redis_server.url, ids)
    assert not owned_by(r, "w1") and stranded  # what the dead worker held was reclaimed
    assert "reclaimed" in w2.log()
    wait_for(
        lambda: w2.metric("classifier_worker_jobs_total", outcome="ok") == 300 - done_before,
        10,
        "the ok counter to count exactly the second worker's jobs",
    )
    assert w2.stop(signal.SIGTERM) == 0
    assert "worker stopped" in w2.log()


def test_worker_recovers_when_redis_restarts(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess], png_images: list[bytes]
) -> None:
    ids = submit(redis_server.url, png_images)
    r = redis_server.client()
    w1 = start_worker(redis_server.url, "w1", max_batch_size=8)
    wait_for(lambda: finished(r) >= 20 or not w1.alive(), 60, "the worker to finish 20 jobs")
    redis_server.kill()  # a crash: nothing but the append-only file survives
    wait_for(lambda: "Redis unavailable" in w1.log() or not w1.alive(), 20, "the worker to notice the outage")
    assert w1.alive(), w1.log()
    redis_server.start()  # same port, same data directory
    r = redis_server.client()
    assert len(list(r.scan_iter(f"{STREAM}:job:*", count=1000))) == 300  # every job survived the crash
    ids += submit(redis_server.url, png_images[:50])  # and work arrives after the restart
    wait_for(lambda: finished(r, 350) == 350 or not w1.alive(), 90, "the worker to finish every job")
    assert w1.alive(), w1.log()
    assert_exactly_one_result_each(r, redis_server.url, ids)
    wait_for(
        lambda: w1.metric("classifier_worker_stream_length", stream=STREAM) == 0,
        10,
        "the stream-length gauge to reach 0",
    )
    assert w1.metric("classifier_worker_pending_jobs", stream=STREAM, group=GROUP) == 0
    assert w1.stop(signal.SIGTERM) == 0
