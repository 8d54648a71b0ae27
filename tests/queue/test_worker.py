"""The worker loop in-process, on a real Redis and a real (tiny) model: error results, poison jobs,
dead letters and stopping mid-batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from predictor.config import Settings
from predictor.errors import InferenceFailed
from predictor.pipeline import Pipeline
from predictor.queue.jobs import JobQueue
from predictor.queue.metrics import WorkerMetrics
from predictor.queue.worker import Worker

from .conftest import RedisServer

POISON = b"poison: the engine fails on every batch holding this image"


async def until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``predicate`` (sync or async) until truthy, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


def settings_for(redis_server: RedisServer, model_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_server.url,
        "model_dir": model_dir,
        "consumer_name": "w1",
        "max_batch_size": 8,
        "max_batch_delay_ms": 2,
        "visibility_timeout_ms": 1000,
        "max_deliveries": 2,
        "cpu_threads": 1,
        "device": "cpu",
        "dead_letter_stream": "jobs:dead",
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
async def pipeline(tiny_model_dir: Path) -> AsyncIterator[Pipeline]:
    p = Pipeline(Settings(model_dir=tiny_model_dir, max_batch_size=8, cpu_threads=1, device="cpu"))
    p.load()
    await p.start()
    yield p
    await p.close()


class FlakyPipeline:
    """The real pipeline, except that any batch holding ``POISON`` fails as an engine crash would."""

    def __init__(self, real: Pipeline) -> None:
        self.real = real
        self.model_name, self.model_version = real.model_name, real.model_version
        self.seen: list[bytes] = []

    @property
    def broken(self) -> str | None:
        return self.real.broken

    async def classify_each(self, images: list[bytes], top_k: int | None = None, timeout_s: float | None = None):
        self.seen.extend(images)
        if POISON in images:
            raise InferenceFailed("forward pass failed")
        return await self.real.classify_each(images, top_k=top_k, timeout_s=timeout_s)


class Running:
    """A worker task plus the queue and metrics it uses."""

    def __init__(self, settings: Settings, pipeline: Any) -> None:
        self.queue = JobQueue(settings)
        self.registry = CollectorRegistry()
        self.worker = Worker(settings, pipeline, self.queue, WorkerMetrics(self.registry))
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.worker.run())

    def jobs_total(self, outcome: str) -> float:
        return self.registry.get_sample_value("classifier_worker_jobs_total", {"outcome": outcome}) or 0.0

    async def finished(self, ids: list[str]) -> bool:
        return all(s["status"] in ("done", "error") for s in await self.queue.get_many(ids))

    async def stop(self) -> None:
        self.worker.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)
        await self.queue.close()


async def test_bad_jobs_get_error_results_and_the_rest_is_classified(
    redis_server: RedisServer, tiny_model_dir: Path, pipeline: Pipeline, png_images: list[bytes]
) -> None:
    settings = settings_for(redis_server, tiny_model_dir)
    run = Running(settings, pipeline)
    await run.queue.ensure_group()
    good = await run.queue.submit(png_images[:20], top_k=3)
    (junk,) = await run.queue.submit([b"these bytes are not an image"])
    r = redis_server.client()
    r.xadd(settings.stream, {"id": "no-image-here", "top_k": "many"})
    r.xadd(settings.stream, {"id": "too-many-classes", "image": png_images[0], "top_k": "1000"})
    ids = [*good, junk, "no-image-here", "too-many-classes"]
    run.start()
    await until(lambda: run.finished(ids), 30, "every job to finish")
    states = {s["id"]: s for s in await run.queue.get_many(ids)}
    for job_id in good:
        assert states[job_id]["status"] == "done" and len(states[job_id]["predictions"]) == 3
        assert states[job_id]["model_version"] == pipeline.model_version
    assert states[junk]["status"] == "error" and "decodable image" in states[junk]["error"]
    assert states["no-image-here"]["status"] == "error" and "no image" in states["no-image-here"]["error"]
    assert "top_k" in states["too-many-classes"]["error"]
    assert run.jobs_total("ok") == 20 and run.jobs_total("error") == 3
    await run.stop()
    assert r.xlen(settings.stream) == 0 and r.xpending(settings.stream, settings.consumer_group)["pending"] == 0
    assert r.xlen(settings.dead_letter_stream) == 0  # an invalid image is answered, never retried


async def test_job_failing_every_delivery_goes_to_dead_letter_and_spares_its_batch(
    redis_server: RedisServer, tiny_model_dir: Path, pipeline: Pipeline, png_images: list[bytes]
) -> None:
    settings = settings_for(redis_server, tiny_model_dir, max_deliveries=2)
    flaky = FlakyPipeline(pipeline)
    run = Running(settings, flaky)
    await run.queue.ensure_group()
    ids = await run.queue.submit([*png_images[:3], POISON, *png_images[3:6]])
    poison_id = ids[3]
    run.start()
    await until(lambda: run.finished(ids), 30, "the poison job to be dead-lettered")
    states = {s["id"]: s for s in await run.queue.get_many(ids)}
    assert all(states[i]["status"] == "done" for i in ids if i != poison_id)  # isolated from the poison
    assert states[poison_id]["status"] == "error" and "dead-letter" in states[poison_id]["error"]
    r = redis_server.client()
    ((_, fields),) = r.xrange(settings.dead_letter_stream)
    assert fields[b"id"] == poison_id.encode() and fields[b"image"] == POISON
    assert fields[b"deliveries"] == b"2" and b"max_deliveries=2" in fields[b"reason"]
    assert run.jobs_total("dead_letter") == 1 and run.jobs_total("ok") == 6
    await run.stop()
    assert r.xlen(settings.stream) == 0 and r.xpending(settings.stream, settings.consumer_group)["pending"] == 0


async def test_job_that_crashed_other_workers_is_dead_lettered_without_running(
    redis_server: RedisServer, tiny_model_dir: Path, pipeline: Pipeline, png_images: list[bytes]
) -> None:
    settings = settings_for(redis_server, tiny_model_dir, max_deliveries=3)
    flaky = FlakyPipeline(pipeline)
    run = Running(settings, flaky)
    await run.queue.ensure_group()
    (job_id,) = await run.queue.submit([png_images[0]])
    # What workers dying on this job leave in Redis: delivered 3 times, never acknowledged.
    r = redis_server.client()
    ((_, ((entry_id, _),)),) = r.xreadgroup(settings.consumer_group, "crashed-pod", {settings.stream: ">"})
    r.xclaim(settings.stream, settings.consumer_group, "crashed-pod", 0, [entry_id], idle=60_000, retrycount=3)
    run.start()
    await until(lambda: run.finished([job_id]), 20, "the job to be dead-lettered")
    assert (await run.queue.get(job_id))["status"] == "error"
    assert r.xlen(settings.dead_letter_stream) == 1 and flaky.seen == []
    await run.stop()


class WorkerKilled(BaseException):
    """What a job that kills its process looks like from inside: nothing after it runs, nothing is acked."""


class KillingPipeline(FlakyPipeline):
    """Any batch holding ``POISON`` takes the worker down with it (a segfault, an OOM kill)."""

    async def classify_each(self, images: list[bytes], top_k: int | None = None, timeout_s: float | None = None):
        self.seen.extend(images)
        if POISON in images:
            raise WorkerKilled
        return await self.real.classify_each(images, top_k=top_k, timeout_s=timeout_s)


async def test_a_job_that_kills_its_workers_goes_to_dead_letter_alone(
    redis_server: RedisServer, tiny_model_dir: Path, pipeline: Pipeline, png_images: list[bytes]
) -> None:
    """The poison kills the worker holding its batch; its batch-mates are then retried one by one, each
    in a batch of its own, so they are done after one extra delivery and only the poison is dead-lettered."""
    killing = KillingPipeline(pipeline)
    ids: list[str] = []
    r = redis_server.client()
    for attempt in range(8):  # a fresh worker (a restarted pod) each time the last one died
        settings = settings_for(redis_server, tiny_model_dir, max_deliveries=3, consumer_name=f"pod-{attempt}")
        run = Running(settings, killing)
        await run.queue.ensure_group()
        if not ids:
            ids = await run.queue.submit([*png_images[:3], POISON, *png_images[3:6]])
        run.start()
        assert run.task is not None
        done, _ = await asyncio.wait({run.task}, timeout=15)
        if not done:  # still alive: everything was resolved
            break
        assert isinstance(run.task.exception(), WorkerKilled)
        await run.queue.close()
    await until(lambda: run.finished(ids), 20, "every job to be resolved")
    states = {s["id"]: s for s in await run.queue.get_many(ids)}
    poison_id = ids[3]
    assert states[poison_id]["status"] == "error" and "dead-letter" in states[poison_id]["error"]
    assert all(states[i]["status"] == "done" for i in ids if i != poison_id), states
    ((_, fields),) = r.xrange(settings.dead_letter_stream)
    assert fields[b"id"] == poison_id.encode() and fields[b"deliveries"] == b"3"
    assert killing.seen.count(POISON) == 3  # the first batch, then alone twice
    await run.stop()


async def test_stop_finishes_and_acknowledges_the_current_batch_then_reads_no_more(
    redis_server: RedisServer, tiny_model_dir: Path, pipeline: Pipeline, png_images: list[bytes]
) -> None:
    settings = settings_for(redis_server, tiny_model_dir, max_batch_size=4)
    started, release = asyncio.Event(), asyncio.Event()

    class SlowPipeline(FlakyPipeline):
        async def classify_each(self, images, top_k=None, timeout_s=None):
            started.set()
            await release.wait()
            return await super().classify_each(images, top_k, timeout_s)

    run = Running(settings, SlowPipeline(pipeline))
    await run.queue.ensure_group()
    ids = await run.queue.submit(png_images[:10])
    run.start()
    await until(started.is_set, 20, "the first batch to start")
    run.worker.stop()
    release.set()
    assert run.task is not None
    await asyncio.wait_for(run.task, 20)
    states = await run.queue.get_many(ids)
    assert [s["status"] for s in states] == ["done"] * 4 + ["pending"] * 6
    r = redis_server.client()
    assert r.xpending(settings.stream, settings.consumer_group)["pending"] == 0  # nothing held
    assert r.xlen(settings.stream) == 6  # the rest stays queued for other workers
    await run.queue.close()


async def test_redis_refusing_writes_is_waited_out_not_fatal(
    redis_server: RedisServer,
    tiny_model_dir: Path,
    pipeline: Pipeline,
    png_images: list[bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(redis_server, tiny_model_dir)
    run = Running(settings, pipeline)
    await run.queue.ensure_group()
    ids = await run.queue.submit(png_images[:5])
    r = redis_server.client()
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "1")  # every write that may grow memory is refused with OOM
    run.start()
    await until(lambda: "refused the command" in caplog.text, 20, "the worker to hit the OOM refusal")
    assert not run.task.done()
    assert [s["status"] for s in await run.queue.get_many(ids)] == ["pending"] * 5
    r.config_set("maxmemory", "0")
    await until(lambda: run.finished(ids), 30, "every job to finish once Redis accepts writes")
    assert [s["status"] for s in await run.queue.get_many(ids)] == ["done"] * 5
    await run.stop()


async def test_a_broken_inference_device_stops_the_worker_with_exit_code_1_and_leaves_its_jobs_pending(
    redis_server: RedisServer, tiny_model_dir: Path, png_images: list[bytes]
) -> None:
    """After a CUDA illegal address every forward pass fails: the worker must not burn the jobs' deliveries
    (and dead-letter good jobs) but exit, so its container restarts; another worker takes the jobs."""
    from predictor.preprocess import PreprocessSpec
    from tests.support.faulty_engine import MemoryLimitedEngine

    settings = settings_for(redis_server, tiny_model_dir, max_deliveries=2)
    engine = MemoryLimitedEngine(
        PreprocessSpec.from_model_dir(tiny_model_dir), tiny_model_dir, "cpu", "fp32", threads=1
    )
    broken = Pipeline(settings, engine=engine)
    broken.load()
    await broken.start()
    engine.broken = True  # the next forward pass hits an illegal memory access
    run = Running(settings, broken)
    await run.queue.ensure_group()
    ids = await run.queue.submit(png_images[:4])
    run.start()
    assert run.task is not None
    await asyncio.wait_for(run.task, 30)  # it stops by itself
    assert run.worker.exit_code == 1 and broken.broken is not None
    r = redis_server.client()
    assert r.xpending(settings.stream, settings.consumer_group)["pending"] == 4  # for other workers
    assert r.xlen(settings.dead_letter_stream) == 0
    assert all(s["status"] == "pending" for s in await run.queue.get_many(ids))
    assert run.jobs_total("ok") == run.jobs_total("error") == 0
    await run.queue.close()
    await broken.close()
