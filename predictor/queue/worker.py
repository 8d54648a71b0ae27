"""The queue worker: classify jobs from a Redis stream through the same pipeline the server uses.

One loop, one batch at a time:

1. every ``visibility_timeout_ms / 4`` (at most every second), take over a job another worker (or this
   one) received and did not acknowledge within ``visibility_timeout_ms`` (``XAUTOCLAIM``, one entry
   at a time until the backlog is scanned). A job already delivered ``max_deliveries`` times moves to
   the dead-letter stream with an error result; any other runs alone, in a batch of its own, since it
   may be what killed its last worker;
2. otherwise read a batch of new jobs (``XREADGROUP``, blocking at most a second so SIGTERM is noticed);
3. classify the batch with :meth:`Pipeline.classify_each`. An undecodable image or a malformed entry
   gets an error result at once (never retried); a job that fails for another reason (the engine
   failed, a deadline) is tried once more on its own, then left unacknowledged so it is retried after
   the visibility timeout;
4. write the results, then acknowledge and delete the entries, in one transaction.

Redis errors (a restart, a network blip) never end the worker: it retries with exponential backoff,
and jobs it could not acknowledge stay pending for the next delivery. SIGTERM stops reading; the
current batch is finished and acknowledged, then the worker exits 0. An inference device that became
unusable (a broken CUDA context) ends it with exit code 1, leaving its jobs pending for other workers,
so the container restarts instead of failing every job it reads.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import BusyLoadingError, ResponseError

from predictor.config import Settings
from predictor.errors import InvalidInput, PredictorError
from predictor.limits import check_top_k
from predictor.queue.jobs import REDIS_UNAVAILABLE, Job, JobQueue, Outcome, done_result, error_result
from predictor.queue.metrics import WorkerMetrics

if TYPE_CHECKING:
    from predictor.pipeline import Pipeline

logger = logging.getLogger(__name__)


class WorkerStartError(Exception):
    """The worker cannot start (no Redis URL, no model, a taken metrics port); the message says how to fix it."""


T = TypeVar("T")

RETRYABLE = (*REDIS_UNAVAILABLE, BusyLoadingError)
"""Redis errors the worker waits out (reconnecting with backoff)."""
READ_BLOCK_MS = 1000
"""Longest XREADGROUP wait: bounds how late SIGTERM and the reclaim timer are noticed."""
MAX_REFUSALS = 5
"""Error replies (not outages) tolerated on one operation before it is abandoned."""
BACKLOG_REPORT_S = 2.0
"""How often the stream-length and pending gauges are refreshed."""


class Backoff:
    """Exponential backoff with full jitter: ``base * 2**n`` capped at ``cap`` seconds."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.base_s, self.cap_s, self.failures = base_s, cap_s, 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and count one more failure)."""
        delay = min(self.cap_s, self.base_s * 2**self.failures)
        self.failures += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        """Forget past failures (after a success)."""
        self.failures = 0


class Worker:
    """Consume, classify, store, acknowledge.

    Args:
        settings: the predictor settings.
        pipeline: a loaded and started pipeline.
        queue: the job queue (its client's socket timeout must exceed ``READ_BLOCK_MS``).
        metrics: where to record the worker metrics.
    """

    def __init__(self, settings: Settings, pipeline: Pipeline, queue: JobQueue, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.queue = queue
        self.metrics = metrics
        self.consumer = settings.consumer_name
        self.batch_size = min(settings.max_batch_size, settings.max_images_per_request, settings.max_queue_images)
        self.claim_interval_s = min(1.0, settings.visibility_timeout_ms / 4000)
        self._stop = asyncio.Event()
        self._stop_at: float | None = None
        self._backoff = Backoff()
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self.exit_code = 0
        """1 once the worker stopped because the inference device is unusable (restart the process)."""

    def stop(self) -> None:
        """Stop reading new jobs; the current batch is finished and acknowledged first."""
        if not self._stop.is_set():
            logger.info("stopping: finishing the current batch, reading no more jobs")
            self._stop_at = time.monotonic()
            self._stop.set()

    async def run(self) -> None:
        """Run until :meth:`stop`; Redis outages are waited out, never raised."""
        reporter = asyncio.create_task(self._report_backlog())
        try:
            await self._retrying(self.queue.ensure_group, until_stopped=True)
            while not self._stop.is_set():
                try:
                    await self.step()
                    self._backoff.reset()
                    if self.pipeline.broken is not None:
                        self._stop_for_broken_device()
                except RETRYABLE as e:
                    await self._wait_out(e)
                except ResponseError as e:
                    if "NOGROUP" in str(e):
                        # Redis came back without our group (no persistence): create it again.
                        logger.warning("consumer group %s is gone; creating it again", self.queue.group)
                        await self._retrying(self.queue.ensure_group, until_stopped=True)
                    else:  # e.g. OOM (maxmemory reached): wait it out rather than crash-loop
                        await self._wait_out(e)
        finally:
            reporter.cancel()

    def _stop_for_broken_device(self) -> None:
        logger.critical(
            "the inference device is unusable (%s): stopping with exit code 1 so the container restarts; the "
            "jobs not acknowledged are reclaimed by other workers after the visibility timeout",
            self.pipeline.broken,
        )
        self.exit_code = 1
        self.stop()

    async def step(self) -> int:
        """One batch: reclaim stale jobs, read new ones, classify, store and acknowledge.

        Returns:
            Jobs finished in this step (results written and acknowledged).
        """
        if self._claim_cursor != "0-0" or time.monotonic() >= self._next_claim:
            stale = await self._reclaim()
            if stale:
                # A job delivered before and never acknowledged may be what killed its last worker: it
                # runs alone (one per step, nothing read beside it), so if it kills this one too, no other
                # job's delivery count goes up with it, and only the culprit reaches the dead letters.
                return await self._complete(await self._classify(stale))
        if self._stop.is_set():
            return 0
        batch = await self.queue.read(self.consumer, self.batch_size, READ_BLOCK_MS)
        if not batch:
            return 0
        outcomes = await self._classify(batch)
        return await self._complete(outcomes)

    async def _reclaim(self) -> list[Job]:
        # One entry per claim: claiming marks a delivery, and only the job that runs should be charged one.
        cursor, claimed = await self.queue.claim_stale(
            self.consumer, self.settings.visibility_timeout_ms, 1, self._claim_cursor
        )
        self._claim_cursor = cursor
        if cursor == "0-0":
            self._next_claim = time.monotonic() + self.claim_interval_s
        batch = []
        for job, deliveries in claimed:
            # `deliveries` counts this claim: above max_deliveries means it was delivered
            # max_deliveries times already and never acknowledged (a crash or a failure each time).
            if deliveries > self.settings.max_deliveries:
                reason = (
                    f"delivered {deliveries - 1} times without being acknowledged "
                    f"(max_deliveries={self.settings.max_deliveries})"
                )
                logger.warning(
                    "job %s (entry %s): %s; moving it to %s",
                    job.job_id,
                    job.entry_id,
                    reason,
                    self.settings.dead_letter_stream,
                )
                await self.queue.dead_letter(job, deliveries - 1, reason, self.consumer)
                self._count("dead_letter", job)
            else:
                batch.append(job)
        if claimed:
            logger.info("reclaimed %d stale jobs", len(claimed))
        return batch

    async def _classify(self, batch: list[Job]) -> list[Outcome]:
        """Outcomes of the jobs that are finished (done or error); the others are left for a retry."""
        outcomes: list[Outcome] = []
        runnable: list[tuple[Job, int]] = []
        for job in batch:
            if job.problem:
                outcomes.append(error_result(job, f"malformed job: {job.problem}"))
                continue
            try:
                runnable.append((job, check_top_k(job.top_k, self.settings.default_top_k, self.settings.max_top_k)))
            except InvalidInput as e:
                outcomes.append(error_result(job, e.message))
        if not runnable:
            return outcomes
        results = await self._classify_each([job.image for job, _ in runnable], max(k for _, k in runnable))
        failed = [i for i, r in enumerate(results) if _transient(r)]
        if failed and len(runnable) > 1:
            # Isolate: a job that broke its whole batch must not fail the jobs batched with it.
            for i in failed:
                results[i] = (await self._classify_each([runnable[i][0].image], runnable[i][1]))[0]
        model, version = self.pipeline.model_name, self.pipeline.model_version
        for (job, k), result in zip(runnable, results, strict=True):
            if isinstance(result, list):
                outcomes.append(done_result(job, [p.as_dict() for p in result[:k]], model, version))
            elif _transient(result):
                logger.warning("job %s failed (%s); it is retried after the visibility timeout", job.job_id, result)
            else:
                outcomes.append(error_result(job, str(result)))
        return outcomes

    async def _classify_each(self, images: list[bytes], top_k: int) -> list[Any]:
        try:
            return list(await self.pipeline.classify_each(images, top_k=top_k))
        except Exception as e:
            logger.exception("classifying a batch of %d images failed", len(images))
            return [e] * len(images)

    async def _complete(self, outcomes: list[Outcome]) -> int:
        """Write results and acknowledge; on a Redis outage keep retrying (until the grace period ends
        after SIGTERM, after which the jobs stay pending and another worker reclaims them)."""
        if not outcomes:
            return 0
        new = await self._retrying(lambda: self.queue.complete(outcomes), until_stopped=False)
        if new is None:
            logger.warning("could not store %d results; the jobs stay pending and are retried", len(outcomes))
            return 0
        for outcome, is_new in zip(outcomes, new, strict=True):
            if is_new:
                self._count("ok" if outcome.status == "done" else "error", outcome.job)
        return len(outcomes)

    def _count(self, outcome: str, job: Job) -> None:
        self.metrics.jobs.labels(outcome).inc()
        if job.submitted_at is not None:
            self.metrics.job_duration.observe(max(0.0, time.time() - job.submitted_at))

    async def _retrying(self, op: Callable[[], Awaitable[T]], *, until_stopped: bool) -> T | None:
        """Run ``op`` until it succeeds; None if it gave up (stopping, or Redis keeps refusing it).

        ``until_stopped``: give up as soon as stop is requested; otherwise keep trying for the grace
        period after it (the batch in hand is worth finishing).
        """
        refusals = 0
        while True:
            try:
                result = await op()
                self._backoff.reset()
                return result
            except RETRYABLE as e:
                if self._giving_up(until_stopped):
                    return None
                await self._wait_out(e, interruptible=until_stopped)
            except ResponseError as e:
                # Refused by Redis (OOM, ...): retry a few times, then leave the jobs pending.
                refusals += 1
                if refusals > MAX_REFUSALS or self._giving_up(until_stopped):
                    logger.error("Redis keeps refusing (%s); giving up this operation", e)
                    return None
                await self._wait_out(e, interruptible=until_stopped)

    def _giving_up(self, until_stopped: bool) -> bool:
        if self._stop_at is None:
            return False
        return until_stopped or time.monotonic() - self._stop_at > self.settings.grace_period_seconds

    async def _wait_out(self, error: BaseException, *, interruptible: bool = True) -> None:
        """Sleep the backoff delay; SIGTERM cuts it short unless a batch in hand is being finished."""
        delay = self._backoff.next_delay()
        what = "refused the command" if isinstance(error, ResponseError) else "unavailable"
        logger.warning("Redis %s (%s: %s); retrying in %.2fs", what, type(error).__name__, error, delay)
        if not interruptible:
            await asyncio.sleep(delay)
            return
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except TimeoutError:
            pass

    async def _report_backlog(self) -> None:
        labels = (self.queue.stream, self.queue.group)
        while True:
            try:
                length, pending = await self.queue.backlog()
                self.metrics.stream_length.labels(self.queue.stream).set(length)
                self.metrics.pending.labels(*labels).set(pending)
            except (*RETRYABLE, ResponseError):
                pass  # the main loop logs outages; the gauges keep their last value
            await asyncio.sleep(BACKLOG_REPORT_S)


def _transient(result: object) -> bool:
    """A failure that is not the job's fault (retry it), as opposed to an invalid image (don't)."""
    if isinstance(result, PredictorError):
        return result.status_code >= 500
    return isinstance(result, BaseException)


async def run_worker(settings: Settings, pipeline: Pipeline | None = None) -> int:
    """Run the worker until SIGTERM or SIGINT (then return 0), or until the device breaks (return 1).

    Args:
        settings: the predictor settings (``redis_url`` required).
        pipeline: a loaded pipeline to use; by default one is built from ``settings`` and loaded.
    """
    if not settings.redis_url:
        raise WorkerStartError("the worker needs --redis-url (env PREDICTOR_REDIS_URL), e.g. redis://localhost:6379")
    loop = asyncio.get_running_loop()
    if settings.metrics_port:  # before the model loads: a taken port fails in a second, not after a minute
        _serve_metrics(settings.metrics_port)
    queue = JobQueue(settings, socket_timeout_s=READ_BLOCK_MS / 1000 + 10)
    metrics = WorkerMetrics()
    own_pipeline = pipeline is None
    if pipeline is None:
        from predictor.metrics import PredictorMetrics
        from predictor.pipeline import Pipeline

        pipeline = Pipeline(settings, PredictorMetrics())
        try:
            await asyncio.to_thread(pipeline.load)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise WorkerStartError(f"cannot load the model from {settings.model_dir}: {e}") from None
        from predictor.lifecycle import freeze_startup_heap

        freeze_startup_heap()
    await pipeline.start()
    worker = Worker(settings, pipeline, queue, metrics)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    info = pipeline.engine_info
    logger.info(
        "worker started: model=%s version=%s backend=%s device=%s dtype=%s stream=%s group=%s consumer=%s "
        "max_batch_size=%d visibility_timeout_ms=%d max_deliveries=%d dead_letter_stream=%s metrics_port=%d",
        pipeline.model_name,
        pipeline.model_version,
        info.backend,
        info.device,
        info.dtype,
        settings.stream,
        settings.consumer_group,
        settings.consumer_name,
        worker.batch_size,
        settings.visibility_timeout_ms,
        settings.max_deliveries,
        settings.dead_letter_stream,
        settings.metrics_port,
    )
    try:
        await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if own_pipeline:
            await pipeline.close()
        await queue.close()
    logger.info("worker stopped")
    return worker.exit_code


def _serve_metrics(port: int) -> None:
    from prometheus_client import start_http_server

    from predictor.gpu_metrics import register_gpu_metrics

    try:
        start_http_server(port)
    except OSError as e:
        raise WorkerStartError(
            f"cannot serve metrics on --metrics-port {port}: {e.strerror or e}; pass a free port, or 0 for none"
        ) from None
    register_gpu_metrics(container="worker")  # the chart's worker container name


def main(settings: Settings) -> None:
    """Entry point of ``python -m predictor worker``: configure logging, run until SIGTERM and exit 0 (exit 1
    when the inference device became unusable or the worker cannot start: one line says why)."""
    from predictor.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    try:
        code = asyncio.run(run_worker(settings))
    except WorkerStartError as e:
        logger.error("%s", e)
        raise SystemExit(1) from None
    if code:
        raise SystemExit(code)
