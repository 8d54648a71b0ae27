"""The online client against a real HTTP server on loopback whose answers each test scripts: retries
honouring Retry-After with jitter, bounded retries, connection errors, error rows, folder walking and the output
formats. (Against the real predictor: tests/queue/test_api_and_client.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from predictor.client import Row, RowWriter, classify_paths, collect_paths, retry_after_seconds, retry_delay

PREDICTION = {"label": "tabby", "score": 0.9, "class_id": 281}


@dataclass(frozen=True)
class Arrival:
    """One request as the server saw it."""

    time_s: float  # time.monotonic() once the request's headers were read
    path: str
    query: dict[str, list[str]]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """What the server answers; a script returns None instead to close the connection unanswered."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def ok(arrival: Arrival) -> Reply:
    """The default script: every image is a tabby."""
    return Reply(200, {"model": "m", "model_version": "v", "predictions": [[PREDICTION]]})


class ScriptedServer:
    """A threaded HTTP/1.1 server on a free loopback port that records every request and answers
    each with ``script(arrival)``; the script runs under a lock, so it may read ``arrivals``."""

    def __init__(self) -> None:
        self.script: Callable[[Arrival], Reply | None] = ok
        self.arrivals: list[Arrival] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
            timeout = 10  # a stuck connection must not hang the test run
            disable_nagle_algorithm = True  # headers and body go out in two writes; no delayed-ACK stall

            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                url = urlsplit(self.path)
                arrival = Arrival(arrived, url.path, parse_qs(url.query), body)
                with server.lock:
                    server.arrivals.append(arrival)
                    reply = server.script(arrival)
                if reply is None:
                    self.close_connection = True  # the socket closes with no status line sent
                    return
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    """A scripted server, listening before the test starts (the socket is bound and listening on creation)."""
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        thread.join(timeout=5)


def run(files: list[Path], url: str, **kwargs: Any) -> list[Row]:
    rows: list[Row] = []
    asyncio.run(classify_paths(files, url, rows.append, **{"timeout_s": 5.0, **kwargs}))
    return rows


def test_503_is_retried_after_retry_after(tmp_path: Path, server: ScriptedServer) -> None:
    img = tmp_path / "cat.png"
    img.write_bytes(b"png bytes")

    def script(arrival: Arrival) -> Reply:
        if len(server.arrivals) < 3:
            return Reply(503, {"error": "queue full"}, {"Retry-After": "0.3"})
        return ok(arrival)

    server.script = script
    (row,) = run([img], server.url, top_k=1)
    assert row.status == "ok" and row.predictions == [PREDICTION]
    calls = server.arrivals
    assert len(calls) == 3
    for call in calls:
        assert call.path == "/classify" and call.query["top_k"] == ["1"]
        assert b"png bytes" in call.body and b'name="image"' in call.body
    assert calls[1].time_s - calls[0].time_s >= 0.28 and calls[2].time_s - calls[1].time_s >= 0.28


def test_clients_refused_together_come_back_apart_and_never_early(tmp_path: Path, server: ScriptedServer) -> None:
    """20 clients refused at once with Retry-After: 1 each retry at least 1 s after their refusal, and the
    retries are spread over the jitter window instead of arriving together."""
    files = []
    for i in range(20):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(f"image {i}.".encode())
    refused_at: dict[bytes, float] = {}
    retried_at: dict[bytes, float] = {}

    def script(arrival: Arrival) -> Reply:
        key = arrival.body[arrival.body.index(b"image ") :][:9]
        if key not in refused_at:
            refused_at[key] = time.monotonic()  # the 503 leaves right after this
            return Reply(503, {"error": "queue full"}, {"Retry-After": "1"})
        retried_at[key] = arrival.time_s
        return ok(arrival)

    server.script = script
    rows = run(files, server.url, concurrency=20)
    assert [r.status for r in rows] == ["ok"] * 20 and len(server.arrivals) == 40
    assert len(retried_at) == 20
    waits = [retried_at[key] - refused_at[key] for key in refused_at]
    assert min(waits) >= 1.0, "a retry came before Retry-After"
    assert max(waits) < 1.5 + 0.5, "jitter adds at most half of Retry-After (plus scheduling slack)"
    assert max(waits) - min(waits) >= 0.15, f"retries came back together: {sorted(waits)}"


def test_retry_delay_never_undercuts_retry_after_and_spreads() -> None:
    rng = random.Random(7)
    delays = [retry_delay(2.0, 0, rng) for _ in range(2000)]
    assert min(delays) >= 2.0 and max(delays) < 3.0
    assert statistics.pstdev(delays) == pytest.approx(1.0 / math.sqrt(12), rel=0.1)  # uniform over [2, 3)
    # Retry-After: 0 still spreads, over half the backoff; without Retry-After, backoff grows with jitter.
    assert 0.0 <= min(retry_delay(0.0, 0, rng) for _ in range(100)) < max(retry_delay(0.0, 0, rng) for _ in range(100))
    assert all(0.2 <= retry_delay(None, 0, rng) < 0.3 for _ in range(100))
    assert all(1.6 <= retry_delay(None, 3, rng) < 2.4 for _ in range(100))
    assert all(10.0 <= retry_delay(None, 20, rng) < 15.0 for _ in range(100))


def test_errors_become_rows_and_retries_are_bounded(tmp_path: Path, server: ScriptedServer) -> None:
    files = [tmp_path / "busy.png", tmp_path / "bad.png", tmp_path / "missing.png"]
    files[0].write_bytes(b"busy")
    files[1].write_bytes(b"bad")

    def script(arrival: Arrival) -> Reply:
        if b"busy" in arrival.body:
            return Reply(503, {"error": "queue full"}, {"Retry-After": "0"})
        return Reply(400, {"error": "bytes are not a decodable image"})

    server.script = script
    rows = {Path(r.path).name: r for r in run(files, server.url, retries=2, concurrency=2)}
    assert sum(b"busy" in a.body for a in server.arrivals) == 3
    assert rows["busy.png"].error == "HTTP 503: queue full"
    assert rows["bad.png"].error == "HTTP 400: bytes are not a decodable image"
    assert "cannot read file" in rows["missing.png"].error
    assert all(r.status == "error" for r in rows.values())


def test_connection_errors_are_retried(tmp_path: Path, server: ScriptedServer) -> None:
    """The server reads the first request and hangs up without answering (httpx: RemoteProtocolError,
    a TransportError); the client sends the image again on a new connection."""
    img = tmp_path / "x.png"
    img.write_bytes(b"x image")
    server.script = lambda arrival: None if len(server.arrivals) == 1 else ok(arrival)
    (row,) = run([img], server.url)
    assert row.status == "ok" and row.predictions == [PREDICTION]
    assert len(server.arrivals) == 2 and all(b"x image" in a.body for a in server.arrivals)


def test_hang_up_without_retries_left_is_an_error_row(tmp_path: Path, server: ScriptedServer) -> None:
    img = tmp_path / "x.png"
    img.write_bytes(b"x image")
    server.script = lambda arrival: None
    (row,) = run([img], server.url, retries=0)
    assert row.status == "error" and row.error.startswith("request failed: RemoteProtocolError")
    assert len(server.arrivals) == 1


def test_refused_connections_are_retried_then_reported(tmp_path: Path) -> None:
    img = tmp_path / "x.png"
    img.write_bytes(b"x")
    with socket.socket() as placeholder:  # bound but not listening: the port refuses, and stays ours
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        started = time.monotonic()
        (row,) = run([img], f"http://127.0.0.1:{port}", retries=1)
        elapsed_s = time.monotonic() - started
    assert row.status == "error" and row.error.startswith("request failed: ConnectError")
    assert elapsed_s >= 0.18  # the one retry came after its 0.2 s backoff


def test_every_file_is_sent_once_under_concurrency(tmp_path: Path, server: ScriptedServer) -> None:
    files = []
    for i in range(25):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(f"image {i}.".encode())
    rows = run(files, server.url, concurrency=4)
    assert sorted(r.path for r in rows) == sorted(map(str, files)) and len(server.arrivals) == 25
    for i in range(25):
        assert sum(f"image {i}.".encode() in a.body for a in server.arrivals) == 1


def test_collect_paths_walks_folders_for_images_and_keeps_explicit_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.JPG", "a/b/2.webp", "a/readme.txt", "a/b/3.png"):
        (tmp_path / name).write_bytes(b"x")
    explicit = tmp_path / "scan.tiff"
    got = collect_paths([str(tmp_path / "a"), str(explicit)])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a/1.JPG", "a/b/2.webp", "a/b/3.png", "scan.tiff"]


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("100000") == 60.0  # capped
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now


def test_writers_jsonl_and_csv() -> None:
    rows = [
        Row("a.png", "ok", [PREDICTION, {**PREDICTION, "label": "tiger", "class_id": 282}]),
        Row("b.png", "error", error="HTTP 400: bad"),
    ]
    out = io.StringIO()
    writer = RowWriter(out, "jsonl", 2, progress=False)
    for row in rows:
        writer.write(row)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {"path": "a.png", "status": "ok", "predictions": rows[0].predictions},
        {"path": "b.png", "status": "error", "error": "HTTP 400: bad"},
    ]
    assert writer.failed == 1
    out = io.StringIO()
    writer = RowWriter(out, "csv", 2, progress=False)
    for row in rows:
        writer.write(row)
    assert out.getvalue().splitlines() == [
        "path,status,rank,label,score,class_id,job_id,error",
        "a.png,ok,1,tabby,0.9,281,,",
        "a.png,ok,2,tiger,0.9,282,,",
        "b.png,error,,,,,,HTTP 400: bad",
    ]
