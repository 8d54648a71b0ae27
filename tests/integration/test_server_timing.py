"""``Server-Timing: total;dur=<ms>`` on every answer: the server's own time, which the try-it page shows; an
inference answer also says how long its images were counted in the queue (``queue``: admitted to inferred,
what the queue-wait budget bounds)."""

from __future__ import annotations

import re
import time

from tests.support.servers import ServerProcess

TIMING = re.compile(r'^(?:queue;desc="admitted to inferred";dur=(\d+\.\d{2}), )?total;dur=(\d+\.\d{2})$')


def server_ms(headers) -> float:
    m = TIMING.match(headers["server-timing"])
    assert m, headers["server-timing"]
    return float(m.group(2))


def queue_ms(headers) -> float | None:
    m = TIMING.match(headers["server-timing"])
    assert m, headers["server-timing"]
    return None if m.group(1) is None else float(m.group(1))


def test_classify_answers_carry_the_server_time(default_server: ServerProcess, cat_jpeg: bytes):
    started = time.perf_counter()
    r = default_server.client.post("/classify", files={"image": ("cat.jpg", cat_jpeg, "image/jpeg")})
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert r.status_code == 200
    assert 0 < server_ms(r.headers) <= elapsed_ms
    queued = queue_ms(r.headers)
    assert queued is not None and 0 < queued <= server_ms(r.headers), r.headers["server-timing"]


def test_errors_and_other_routes_carry_it_too(default_server: ServerProcess):
    bad = default_server.client.post("/classify", files={"image": ("x.jpg", b"not an image", "image/jpeg")})
    assert bad.status_code == 400 and server_ms(bad.headers) > 0
    ready = default_server.client.get("/v2/health/ready").headers
    assert server_ms(ready) >= 0 and queue_ms(ready) is None, "nothing was queued"
