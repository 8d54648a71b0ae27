"""predictor.upload: a body must arrive within body_timeout_s and, after upload_grace_s, at
min_upload_bytes_per_s on average; one that does not is refused (408) when it breaks the limit, not later."""

from __future__ import annotations

import asyncio
import time

import pytest

from predictor.errors import UploadTooSlow
from predictor.upload import TimedBody, UploadLimits


class Client:
    """The server's side of one upload: ``receive`` waits for what the test sends."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue()

    async def receive(self) -> dict:
        return await self.queue.get()

    def send(self, body: bytes, more: bool = True) -> None:
        self.queue.put_nowait({"type": "http.request", "body": body, "more_body": more})


def test_the_deadline_is_the_grace_then_the_time_the_rate_allows_within_the_total() -> None:
    limits = UploadLimits(body_timeout_s=60, min_bytes_per_s=1000, grace_s=5)
    assert limits.deadline(100.0, 0) == 105.0, "nothing came: the grace"
    assert limits.deadline(100.0, 20_000) == 120.0, "20 kB buy 20 s at 1 kB/s"
    assert limits.deadline(100.0, 10**9) == 160.0, "never past the body deadline"
    assert UploadLimits(60, 0, 5).deadline(100.0, 0) == 160.0, "no minimum rate: the body deadline alone"


async def test_a_stalled_body_is_refused_when_the_grace_ends() -> None:
    client = Client()
    body = TimedBody(client.receive, UploadLimits(body_timeout_s=30, min_bytes_per_s=1000, grace_s=0.3))
    client.send(b"x" * 100)
    assert (await body())["body"] == b"x" * 100
    started = time.monotonic()
    with pytest.raises(UploadTooSlow, match=r"under the minimum of 1000 bytes/s \(min_upload_bytes_per_s\)") as e:
        await body()  # nothing more comes
    assert 0.1 <= time.monotonic() - started < 2
    assert e.value.status_code == 408 and "after 0.3 s (upload_grace_s)" in e.value.message


async def test_a_body_past_the_body_deadline_is_refused_whatever_its_rate() -> None:
    client = Client()
    body = TimedBody(client.receive, UploadLimits(body_timeout_s=0.5, min_bytes_per_s=0, grace_s=0))
    with pytest.raises(UploadTooSlow, match=r"not received within 0.5 s \(body_timeout_s\)"):
        while True:
            client.send(b"x" * 10)
            await body()
            await asyncio.sleep(0.05)


async def test_a_body_at_the_minimum_rate_is_read_whole_and_reported_arrived() -> None:
    client = Client()
    body = TimedBody(client.receive, UploadLimits(body_timeout_s=30, min_bytes_per_s=1000, grace_s=0.2))
    arrived: list[int] = []
    body.when_arrived(lambda: arrived.append(body.received))
    for _ in range(6):
        client.send(b"x" * 200)  # 200 bytes every 0.1 s: 2000 bytes/s
        await body()
        await asyncio.sleep(0.1)
    client.send(b"end", more=False)
    assert (await body())["more_body"] is False
    assert arrived == [1203] and body.arrived
    later: list[bool] = []
    body.when_arrived(lambda: later.append(True))
    assert later == [True], "a callback given after the body came runs at once"


async def test_after_the_body_the_wait_for_the_disconnect_has_no_deadline() -> None:
    client = Client()
    body = TimedBody(client.receive, UploadLimits(body_timeout_s=0.2, min_bytes_per_s=1000, grace_s=0))
    client.send(b"whole", more=False)
    await body()
    await asyncio.sleep(0.3)  # past every limit
    client.queue.put_nowait({"type": "http.disconnect"})
    assert (await body())["type"] == "http.disconnect"
