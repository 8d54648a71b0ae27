"""RejectionLog: a flood of rejections is a line per kind and one summary per interval, not a line each."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from predictor.logs import RejectionLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "test.rejections"]


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> tuple[RejectionLog, FakeClock]:
    caplog.set_level(logging.INFO, logger="test.rejections")
    clock = FakeClock()
    return RejectionLog(logging.getLogger("test.rejections"), interval_s=10.0, clock=clock), clock


def test_a_flood_is_one_line_per_kind_and_one_summary(log, caplog) -> None:
    rejections, clock = log
    for i in range(500):
        rejections.record(503, "queue_full", f"POST /classify -> 503: inference queue is full (#{i})")
        clock.now += 0.01
    for i in range(30):
        rejections.record(400, "invalid_input", f"POST /classify -> 400: image {i} is not a decodable image")
    assert lines(caplog) == [
        ("WARNING", "POST /classify -> 503: inference queue is full (#0)"),
        ("WARNING", "POST /classify -> 400: image 0 is not a decodable image"),
    ]
    clock.now += 5.5  # the interval (10 s from the first rejection) is over: the next one ends it
    rejections.record(503, "queue_full", "POST /classify -> 503: inference queue is full (#500)")
    summary = lines(caplog)[2]
    assert summary[0] == "WARNING"
    assert summary[1].startswith(
        "refused 528 more requests in the last 10 s (29 x 400 invalid_input, 499 x 503 queue_full)"
    )
    assert lines(caplog)[3] == ("WARNING", "POST /classify -> 503: inference queue is full (#500)"), "a new interval"
    assert len(lines(caplog)) == 4


def test_only_queue_full_is_shed_and_server_faults_are_errors(log, caplog) -> None:
    rejections, _ = log
    for _ in range(3):
        rejections.record(503, "queue_full", "POST /classify -> 503: full")
    rejections.flush()
    assert lines(caplog)[-1][1].startswith("shed 2 more requests in the last 0 s (2 x 503 queue_full)")
    for _ in range(2):
        rejections.record(504, "deadline", "POST /classify -> 504: deadline")
    rejections.flush()
    assert [level for level, _ in lines(caplog)[-2:]] == ["ERROR", "ERROR"]


def test_a_lone_rejection_is_logged_in_full_and_needs_no_summary(log, caplog) -> None:
    rejections, clock = log
    rejections.record(415, "unsupported_media_type", "POST /classify -> 415: content type 'text/plain' ...")
    clock.now += 60.0
    rejections.flush()
    assert lines(caplog) == [("WARNING", "POST /classify -> 415: content type 'text/plain' ...")]


def test_at_debug_every_rejection_is_logged(log, caplog) -> None:
    rejections, _ = log
    caplog.set_level(logging.DEBUG, logger="test.rejections")
    for i in range(3):
        rejections.record(400, "invalid_input", f"bad {i}")
    assert lines(caplog) == [("WARNING", "bad 0"), ("DEBUG", "bad 1"), ("DEBUG", "bad 2")]


def test_the_summary_comes_at_the_intervals_end_without_another_rejection(caplog) -> None:
    caplog.set_level(logging.INFO, logger="test.rejections")
    rejections = RejectionLog(logging.getLogger("test.rejections"), interval_s=0.2)

    async def flood() -> None:
        for _ in range(5):
            rejections.record(503, "queue_full", "full")
        deadline = time.monotonic() + 5.0
        while len(lines(caplog)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    asyncio.run(flood())
    assert lines(caplog)[1][1].startswith("shed 4 more requests in the last 0 s")


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        RejectionLog(logging.getLogger("x"), interval_s=0)
