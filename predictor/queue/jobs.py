"""The Redis-level job model of queue mode: one job = one image in a Redis stream.

Layout in Redis (``S`` = ``settings.stream``):

* ``S``: the stream of jobs; each entry has the fields ``id`` (the job id), ``image`` (the encoded
  image bytes), ``top_k`` (empty = the model's default) and ``submitted_at`` (Unix seconds).
  Consumed through one consumer group (created from the stream's start by the first submission or the
  first worker, whichever comes first); an entry is acknowledged *and deleted* once its result is
  written, so ``XLEN S`` counts the jobs not finished yet (waiting plus in progress).
* ``S:job:<id>``: a hash per job with ``status`` (``pending``, ``done`` or ``error``) and, once
  finished, ``result`` (a JSON document); it expires ``result_ttl_seconds`` after the last write.
* ``settings.dead_letter_stream``: jobs that were delivered ``max_deliveries`` times without being
  acknowledged, with the reason; see ``docs/queue.md`` to replay them.

Results are written with a script that keeps the first final result: writing the same job's result
twice (a job reclaimed from a slow worker, a retried write) changes nothing, so each job id has
exactly one result.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from predictor.config import Settings
from predictor.errors import InvalidInput, NotReady, PredictorError
from predictor.limits import check_top_k

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
"""Job ids this module accepts (its own are 32 hex digits)."""

# KEYS[1] = job hash; ARGV = status, result JSON, TTL seconds. First final result wins.
_WRITE_RESULT = """
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'done' or s == 'error' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'result', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)
"""Exceptions meaning Redis cannot be reached right now (retry later)."""


class JobNotFound(PredictorError):
    """No job has this id (never submitted, or its result expired)."""

    status_code = 404
    reason = "job_not_found"


class QueueUnavailable(NotReady):
    """Redis cannot be reached; the client should retry after ``Retry-After`` seconds."""

    reason = "queue_unavailable"


@dataclass(frozen=True)
class Job:
    """One stream entry as the worker sees it.

    A malformed entry (no image, a bad ``top_k``) is still a :class:`Job`, with ``problem`` set: it
    gets an error result at once instead of being retried.
    """

    entry_id: str
    job_id: str
    image: bytes
    top_k: int | None
    submitted_at: float | None
    problem: str | None = None
    fields: dict[bytes, bytes] | None = None

    @classmethod
    def from_entry(cls, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Job:
        """Parse a stream entry; never raises (problems are recorded in ``problem``)."""
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        raw_id = fields.get(b"id", b"").decode("utf-8", "replace")
        job_id = raw_id if JOB_ID_PATTERN.match(raw_id) else eid
        problems = []
        if raw_id != job_id:
            problems.append(f"job id {raw_id!r} is missing or not of the form {JOB_ID_PATTERN.pattern}")
        image = fields.get(b"image", b"")
        if not image:
            problems.append("the job has no image bytes (field 'image')")
        top_k: int | None = None
        raw_top_k = fields.get(b"top_k", b"").decode("utf-8", "replace")
        if raw_top_k:
            try:
                top_k = int(raw_top_k)
            except ValueError:
                problems.append(f"top_k {raw_top_k!r} is not an integer")
        try:
            submitted_at: float | None = float(fields[b"submitted_at"])
        except (KeyError, ValueError):
            submitted_at = None
        return cls(eid, job_id, image, top_k, submitted_at, "; ".join(problems) or None, fields)


@dataclass(frozen=True)
class Outcome:
    """A finished job: its result document and whether it is an error."""

    job: Job
    result: dict[str, Any]

    @property
    def status(self) -> str:
        """``done`` or ``error``."""
        return str(self.result["status"])


def done_result(job: Job, predictions: list[dict[str, Any]], model: str, model_version: str) -> Outcome:
    """The result of a classified job."""
    return Outcome(
        job,
        {
            "id": job.job_id,
            "status": "done",
            "model": model,
            "model_version": model_version,
            "predictions": predictions,
            "submitted_at": job.submitted_at,
            "finished_at": time.time(),
        },
    )


def error_result(job: Job, message: str) -> Outcome:
    """The result of a job that cannot be classified (it will not be retried)."""
    return Outcome(
        job,
        {
            "id": job.job_id,
            "status": "error",
            "error": message,
            "submitted_at": job.submitted_at,
            "finished_at": time.time(),
        },
    )


def _entries(response: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Entries of an XREADGROUP reply (RESP2: ``[[stream, [(id, fields), ...]], ...]``)."""
    return [(eid, fields) for _stream, entries in response or [] for eid, fields in entries if fields]


class JobQueue:
    """Submit jobs, read results, and the stream operations the worker needs.

    Args:
        settings: the predictor settings (redis_url, stream, group, dead-letter stream, TTL, top-k).
        client: a ``redis.asyncio`` client with ``decode_responses=False``; by default one on
            ``settings.redis_url`` that connects lazily, on the first command.
        socket_timeout_s: read timeout of the default client (must exceed any XREADGROUP block).
    """

    def __init__(
        self, settings: Settings, client: aioredis.Redis | None = None, *, socket_timeout_s: float = 5.0
    ) -> None:
        if client is None:
            if not settings.redis_url:
                raise ValueError("redis_url is empty: set --redis_url (PREDICTOR_REDIS_URL) for queue mode")
            client = aioredis.Redis.from_url(
                settings.redis_url,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=2.0,
                health_check_interval=30,
                # Few, short retries: an unreachable Redis should answer 503 quickly, and the
                # worker has its own reconnect loop with a longer backoff.
                retry=Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.02), retries=2),
            )
        self.redis = client
        self.settings = settings
        self.stream = settings.stream
        self.group = settings.consumer_group
        self._write_result = client.register_script(_WRITE_RESULT)

    async def close(self) -> None:
        """Close the connections."""
        await self.redis.aclose()

    def job_key(self, job_id: str) -> str:
        """Key of a job's status hash."""
        return f"{self.stream}:job:{job_id}"

    async def ensure_group(self) -> None:
        """Create the stream and the consumer group (from the start of the stream) unless they exist."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    # --- producer side ---------------------------------------------------------------------------

    async def submit(self, images: Sequence[bytes], top_k: int | None = None) -> list[str]:
        """Enqueue one job per image, atomically; returns the job ids in order.

        Raises:
            InvalidInput: no images, an empty image, or ``top_k`` out of range.
            QueueUnavailable: Redis cannot be reached.
        """
        if not images:
            raise InvalidInput("no images to submit: send at least one")
        for i, img in enumerate(images):
            if not isinstance(img, bytes | bytearray | memoryview) or len(img) == 0:
                raise InvalidInput(f"image {i} is empty: send the encoded image bytes (JPEG, PNG, ...)")
        if top_k is not None:
            check_top_k(top_k, self.settings.default_top_k, self.settings.max_top_k)
        ids = [uuid.uuid4().hex for _ in images]
        now = time.time()
        ttl = self.settings.result_ttl_seconds
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                # The group exists from the first submission, so XPENDING / XINFO CONSUMERS answer (not
                # NOGROUP) before any worker ran; it starts at 0, so its workers still get these jobs.
                pipe.xgroup_create(self.stream, self.group, id="0", mkstream=True)
                for job_id, img in zip(ids, images, strict=True):
                    key = self.job_key(job_id)
                    pipe.hset(key, mapping={"status": "pending", "submitted_at": repr(now)})
                    pipe.expire(key, ttl)
                    pipe.xadd(
                        self.stream,
                        {
                            "id": job_id,
                            "image": bytes(img),
                            "top_k": "" if top_k is None else str(top_k),
                            "submitted_at": repr(now),
                        },
                    )
                replies = await pipe.execute(raise_on_error=False)
        except REDIS_UNAVAILABLE as e:
            raise QueueUnavailable(f"job queue unavailable (Redis: {e}); retry later") from e
        _raise_first_error(replies, tolerated="BUSYGROUP")
        return ids

    async def get(self, job_id: str) -> dict[str, Any]:
        """A job's state: ``{"id", "status": "done"|"error"|"pending"|"unknown", ...}``.

        Raises:
            QueueUnavailable: Redis cannot be reached.
        """
        return (await self.get_many([job_id]))[0]

    async def get_many(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The states of several jobs in one round trip (see :meth:`get`)."""
        valid = [j for j in job_ids if JOB_ID_PATTERN.match(j)]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in valid:
                    pipe.hgetall(self.job_key(job_id))
                rows = dict(zip(valid, await pipe.execute(), strict=True))
        except REDIS_UNAVAILABLE as e:
            raise QueueUnavailable(f"job queue unavailable (Redis: {e}); retry later") from e
        return [_state(job_id, rows.get(job_id) or {}) for job_id in job_ids]

    # --- worker side -----------------------------------------------------------------------------

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        """New jobs for ``consumer`` (XREADGROUP ``>``), waiting up to ``block_ms`` for the first."""
        response = await self.redis.xreadgroup(self.group, consumer, {self.stream: ">"}, count=count, block=block_ms)
        return [Job.from_entry(eid, fields) for eid, fields in _entries(response)]

    async def claim_stale(
        self, consumer: str, min_idle_ms: int, count: int, cursor: str = "0-0"
    ) -> tuple[str, list[tuple[Job, int]]]:
        """Take over jobs delivered at least ``min_idle_ms`` ago and not acknowledged (XAUTOCLAIM).

        Returns:
            The cursor to continue from (``0-0`` once the whole backlog was scanned), and each claimed
            job with its delivery count *including this delivery*.
        """
        reply = await self.redis.xautoclaim(
            self.stream, self.group, consumer, min_idle_ms, start_id=cursor, count=count
        )
        next_cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        jobs = [Job.from_entry(eid, fields) for eid, fields in reply[1] if eid is not None and fields]
        if not jobs:
            return next_cursor, []
        pending = await self.redis.xpending_range(
            self.stream,
            self.group,
            min=jobs[0].entry_id,
            max=jobs[-1].entry_id,
            count=len(jobs) + 1000,
            consumername=consumer,
        )
        counts = {_str(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return next_cursor, [(job, counts.get(job.entry_id, 1)) for job in jobs]

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Write results, then acknowledge and delete the entries, in one transaction.

        Returns:
            For each outcome, whether its result was new (False: the job already had a result).
        """
        if not outcomes:
            return []
        ttl = self.settings.result_ttl_seconds
        async with self.redis.pipeline(transaction=True) as pipe:
            for o in outcomes:
                await self._write_result(
                    keys=[self.job_key(o.job.job_id)], args=[o.status, json.dumps(o.result), ttl], client=pipe
                )
            ids = [o.job.entry_id for o in outcomes]
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            replies = await pipe.execute()
        return [bool(r) for r in replies[: len(outcomes)]]

    async def dead_letter(self, job: Job, deliveries: int, reason: str, consumer: str) -> Outcome:
        """Move a job to the dead-letter stream with an error result, atomically."""
        outcome = error_result(job, f"moved to the dead-letter stream: {reason}")
        fields: dict[bytes | str, bytes | str] = dict(job.fields or {})
        fields.update(
            {
                "source_stream": self.stream,
                "source_entry_id": job.entry_id,
                "reason": reason,
                "deliveries": str(deliveries),
                "consumer": consumer,
                "dead_at": repr(time.time()),
            }
        )
        ttl = self.settings.result_ttl_seconds
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.settings.dead_letter_stream, fields)
            await self._write_result(
                keys=[self.job_key(job.job_id)], args=["error", json.dumps(outcome.result), ttl], client=pipe
            )
            pipe.xack(self.stream, self.group, job.entry_id)
            pipe.xdel(self.stream, job.entry_id)
            await pipe.execute()
        return outcome

    async def backlog(self) -> tuple[int, int]:
        """``(XLEN of the stream, entries delivered and not acknowledged in the group)``."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.xpending(self.stream, self.group)
            length, pending = await pipe.execute()
        return int(length), int(pending["pending"] if isinstance(pending, dict) else pending[0])


def _raise_first_error(replies: Sequence[Any], tolerated: str) -> None:
    """Raise the first error reply of a transaction, except those starting with ``tolerated``."""
    for reply in replies:
        if isinstance(reply, Exception) and not str(reply).startswith(tolerated):
            raise reply


def _str(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _state(job_id: str, row: dict[bytes, bytes]) -> dict[str, Any]:
    status = _str(row.get(b"status", b"unknown"))
    if status in ("done", "error") and b"result" in row:
        return json.loads(row[b"result"])
    if status == "pending":
        submitted = row.get(b"submitted_at")
        return {"id": job_id, "status": "pending", "submitted_at": float(submitted) if submitted else None}
    return {"id": job_id, "status": "unknown"}
