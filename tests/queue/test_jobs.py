"""JobQueue against a real Redis: submit, read states, idempotent results, dead letters, outages."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.exceptions import ResponseError

from predictor.config import Settings
from predictor.errors import InvalidInput
from predictor.queue.jobs import Job, JobQueue, QueueUnavailable, done_result, error_result

from .conftest import RedisServer, free_port


def make_queue(url: str, **overrides: object) -> JobQueue:
    return JobQueue(Settings(redis_url=url, **overrides))


async def test_submit_then_pending_then_done_with_ttl(redis_server: RedisServer) -> None:
    queue = make_queue(redis_server.url, result_ttl_seconds=120)
    await queue.ensure_group()
    await queue.ensure_group()  # idempotent
    ids = await queue.submit([b"a", b"b"], top_k=3)
    assert len(set(ids)) == 2
    assert [s["status"] for s in await queue.get_many(ids)] == ["pending", "pending"]
    assert (await queue.get("0" * 32))["status"] == "unknown"
    jobs = await queue.read("c1", count=10, block_ms=100)
    assert [j.job_id for j in jobs] == ids
    assert jobs[0].image == b"a" and jobs[0].top_k == 3 and jobs[0].problem is None

    written = await queue.complete(
        [
            done_result(jobs[0], [{"label": "x", "score": 1.0, "class_id": 0}], "m", "v1"),
            error_result(jobs[1], "bad image"),
        ]
    )
    assert written == [True, True]
    first, second = await queue.get_many(ids)
    assert first["status"] == "done" and first["predictions"][0]["label"] == "x" and first["model_version"] == "v1"
    assert second == {**second, "status": "error", "error": "bad image"}
    r = redis_server.client()
    assert 0 < r.ttl(queue.job_key(ids[0])) <= 120
    # acknowledged and deleted: nothing pending, nothing left in the stream
    assert r.xlen(queue.stream) == 0
    assert r.xpending(queue.stream, queue.group)["pending"] == 0
    await queue.close()


async def test_result_writes_are_idempotent_first_result_wins(redis_server: RedisServer) -> None:
    queue = make_queue(redis_server.url)
    await queue.ensure_group()
    (job_id,) = await queue.submit([b"img"])
    (job,) = await queue.read("c1", 1, 100)
    first = done_result(job, [{"label": "cat", "score": 0.9, "class_id": 1}], "m", "v")
    assert await queue.complete([first]) == [True]
    assert await queue.complete([first]) == [False]
    assert await queue.complete([error_result(job, "late duplicate")]) == [False]
    state = await queue.get(job_id)
    assert state["status"] == "done" and state["predictions"][0]["label"] == "cat"
    await queue.close()


async def test_submit_rejects_bad_input(redis_server: RedisServer) -> None:
    queue = make_queue(redis_server.url)
    with pytest.raises(InvalidInput, match="no images"):
        await queue.submit([])
    with pytest.raises(InvalidInput, match="image 1 is empty"):
        await queue.submit([b"x", b""])
    with pytest.raises(InvalidInput, match="top_k"):
        await queue.submit([b"x"], top_k=0)
    assert redis_server.client().exists(queue.stream) == 0
    await queue.close()


async def test_the_group_exists_from_the_first_submission(redis_server: RedisServer) -> None:
    """XPENDING / XINFO CONSUMERS answer (instead of NOGROUP) before any worker ran; workers still get
    every job submitted before they started, and later submissions tolerate the existing group."""
    queue = make_queue(redis_server.url)
    r = redis_server.client()
    first = await queue.submit([b"a", b"b"])
    assert r.xpending(queue.stream, queue.group)["pending"] == 0
    assert r.xinfo_consumers(queue.stream, queue.group) == []
    (group,) = r.xinfo_groups(queue.stream)
    assert group["name"] == queue.group.encode() and group["lag"] == 2
    second = await queue.submit([b"c"])  # BUSYGROUP is tolerated
    await queue.ensure_group()  # what a worker does at start: nothing changes
    jobs = await queue.read("c1", count=10, block_ms=100)
    assert [j.job_id for j in jobs] == first + second
    await queue.close()


async def test_submit_raises_other_errors_of_the_transaction(redis_server: RedisServer) -> None:
    queue = make_queue(redis_server.url)
    redis_server.client().set(queue.stream, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await queue.submit([b"a"])
    await queue.close()


def test_malformed_entries_are_parsed_with_a_problem() -> None:
    job = Job.from_entry(b"1-0", {b"id": b"bad id!", b"top_k": b"many"})
    assert job.job_id == "1-0"  # falls back to the entry id, so the error result can be read
    assert "no image" in job.problem and "top_k" in job.problem and "job id" in job.problem
    ok = Job.from_entry(b"2-0", {b"id": b"abc", b"image": b"\x89PNG", b"submitted_at": b"12.5"})
    assert ok.problem is None and ok.submitted_at == 12.5 and ok.top_k is None


async def test_unreachable_redis_raises_queue_unavailable() -> None:
    queue = make_queue(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(QueueUnavailable) as info:
        await queue.submit([b"x"])
    assert info.value.status_code == 503 and info.value.headers() == {"Retry-After": "1"}
    with pytest.raises(QueueUnavailable):
        await queue.get("0" * 32)
    await queue.close()


async def test_dead_letter_moves_the_entry_with_its_reason(redis_server: RedisServer) -> None:
    queue = make_queue(redis_server.url, dead_letter_stream="dlq")
    await queue.ensure_group()
    (job_id,) = await queue.submit([b"poison"], top_k=2)
    (job,) = await queue.read("c1", 1, 100)
    await queue.dead_letter(job, 5, "delivered 5 times", "c1")
    r = redis_server.client()
    ((_, fields),) = r.xrange("dlq")
    assert fields[b"id"] == job_id.encode() and fields[b"image"] == b"poison" and fields[b"top_k"] == b"2"
    assert fields[b"reason"] == b"delivered 5 times" and fields[b"source_entry_id"] == job.entry_id.encode()
    assert r.xlen(queue.stream) == 0 and r.xpending(queue.stream, queue.group)["pending"] == 0
    state = await queue.get(job_id)
    assert state["status"] == "error" and "dead-letter" in state["error"]
    await queue.close()


async def test_documented_replay_puts_dead_letters_back_as_pending_jobs(redis_server: RedisServer) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "queue.md").read_text()
    snippet = doc.split("python - <<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    queue = make_queue(redis_server.url)

    await queue.ensure_group()
    (job_id,) = await queue.submit([b"img"], top_k=4)
    (job,) = await queue.read("c1", 1, 100)
    await queue.dead_letter(job, 5, "test", "c1")
    exec(snippet.replace("redis://localhost:6379/0", redis_server.url), {})
    r = redis_server.client()
    assert r.xlen(queue.settings.dead_letter_stream) == 0
    ((_, fields),) = r.xrange(queue.stream)
    assert fields[b"id"] == job_id.encode() and fields[b"image"] == b"img" and fields[b"top_k"] == b"4"
    assert (await queue.get(job_id))["status"] == "pending"
    await queue.close()
