"""Slow and hostile clients against a real server, each with a valid client classifying beside them: stalled
uploads hold no capacity and get 408, slowloris heads are cut at the head deadline, a 64 MiB header is refused
with 431 without the memory for it, idle kept-alive connections close at their limit, the connection cap
answers 503 with Retry-After, JSON nested past the limit is a 400 without a traceback, and every member of a
multi-member gzip body is inflated."""

from __future__ import annotations

import base64
import gzip
import json
import re
import select
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.rawhttp import RawRequest, v2_binary
from tests.support.servers import ServerProcess, jpeg_bytes, start_server

HEADER_TIMEOUT_S = 3.0
UPLOAD_GRACE_S = 2.0
KEEP_ALIVE_S = 3.0
SLACK_S = 10.0
"""Added to every deadline a test waits for: the machine is small and shared."""


@pytest.fixture(scope="module")
def small_jpeg(photos) -> bytes:
    return jpeg_bytes(photos["chelsea"], size=(160, 120))


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("slow-clients"),
        header_timeout_s=HEADER_TIMEOUT_S,
        upload_grace_s=UPLOAD_GRACE_S,
        body_timeout_s=20,
        keep_alive_timeout_s=KEEP_ALIVE_S,
    )
    yield s
    s.stop()


class ValidClient:
    """Classifies one small image in a loop on its own connection and records each answer and its time."""

    def __init__(self, server: ServerProcess, image: bytes) -> None:
        self.url, self.image = server.url, image
        self.answers: list[tuple[float, float, int]] = []  # (started, seconds, status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def normal_seconds(self, n: int = 5) -> float:
        """The slowest of ``n`` answers with nothing else going on: the client's normal time."""
        with httpx.Client(timeout=60) as c:
            times = []
            for _ in range(n):
                started = time.monotonic()
                r = c.post(f"{self.url}/classify", files={"image": ("x.jpg", self.image, "image/jpeg")})
                assert r.status_code == 200, r.text
                times.append(time.monotonic() - started)
        return max(times)

    def __enter__(self) -> ValidClient:
        self.normal = self.normal_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as c:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = c.post(f"{self.url}/classify", files={"image": ("x.jpg", self.image)}).status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append((started, time.monotonic() - started, status))
                time.sleep(0.05)

    def assert_served_between(self, start: float, end: float) -> None:
        """Every answer in flight during [start, end] was a 200 in about its normal time; there were some.

        An attack refused in milliseconds may fall between two requests: then the client's next request,
        started at once after it (waited for here), counts as the one beside the attack.
        """
        deadline = time.monotonic() + 60
        while not any(s + secs >= start for s, secs, _ in self.answers) and time.monotonic() < deadline:
            time.sleep(0.05)
        during = [(s, secs, code) for s, secs, code in self.answers if s + secs >= start and s <= max(end, start)]
        if not during:  # nothing overlapped the window: the first request after it
            during = [min((a for a in self.answers if a[0] >= start), default=None)] if self.answers else []
            during = [a for a in during if a is not None]
        assert during, "the valid client made no request while the attack ran"
        assert all(code == 200 for _, _, code in during), during
        bound = 5 * self.normal + 2.0  # generous: two shared cores
        assert max(secs for _, secs, _ in during) <= bound, (during, self.normal)


def test_stalled_uploads_hold_no_capacity_and_get_408(server: ServerProcess, small_jpeg: bytes) -> None:
    """Four v2 binary requests declaring 64 images each (the whole queue of 256) that then send nothing."""
    before = server.metric("classifier_rejections_total", reason="body_timeout")
    head, _, headers = v2_binary([small_jpeg])
    head = head.replace(b'"shape": [1]', b'"shape": [64]')
    with ValidClient(server, small_jpeg) as valid:
        started = time.monotonic()
        idle = []
        for _ in range(4):
            req = RawRequest(server.port, f"/v2/models/{server.model_name}/infer", headers, len(head) + 64 * 40_000)
            idle.append(req.send(head))
        time.sleep(0.5)
        assert server.metric("classifier_queue_depth") <= 1, "the stalled uploads hold no part of the queue"
        answers = [req.answer(timeout_s=UPLOAD_GRACE_S + SLACK_S) for req in idle]
        valid.assert_served_between(started, time.monotonic())
    for a in answers:
        assert a.status == 408, a
        assert "under the minimum of 10000 bytes/s (min_upload_bytes_per_s)" in a.json()["error"]
        assert a.closed_by_server and a.headers["connection"] == "close"
        assert a.seconds <= UPLOAD_GRACE_S + SLACK_S
    for req in idle:
        req.close()
    assert server.metric("classifier_rejections_total", reason="body_timeout") == before + 4
    assert server.metric("classifier_queue_depth") == 0


def test_slowloris_connections_are_closed_at_the_head_deadline(server: ServerProcess, small_jpeg: bytes) -> None:
    """100 connections sending their head a byte a second are answered 408 and closed; others are served."""
    head = b"POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\nX-Slow: " + b"a" * 200
    with ValidClient(server, small_jpeg) as valid:
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(100)]
        started = time.monotonic()
        answered: dict[socket.socket, bytes] = {}
        sent = 0
        while len(answered) < len(socks) and time.monotonic() - started < HEADER_TIMEOUT_S + SLACK_S:
            for s in socks:
                if s not in answered:
                    try:
                        s.send(head[sent : sent + 1])
                    except OSError:
                        answered[s] = b"<closed>"
            sent += 1
            deadline = time.monotonic() + 1.0
            while (left := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([s for s in socks if s not in answered], [], [], left)
                for s in readable:
                    try:
                        answered[s] = s.recv(65536) or b"<closed>"
                    except OSError:
                        answered[s] = b"<closed>"
                if not readable:
                    break
        seconds = time.monotonic() - started
        valid.assert_served_between(started, time.monotonic())
    for s in socks:
        s.close()
    assert len(answered) == len(socks), f"{len(socks) - len(answered)} slowloris connections still open"
    assert seconds <= HEADER_TIMEOUT_S + SLACK_S
    assert sum(a.startswith(b"HTTP/1.1 408 ") for a in answered.values()) >= 90, set(answered.values())
    assert b"(header_timeout_s)" in next(a for a in answered.values() if a.startswith(b"HTTP/1.1 408 "))


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_64_mib_header_is_refused_431_quickly_without_its_memory(server: ServerProcess, small_jpeg: bytes) -> None:
    rss_before = _rss_bytes(server.proc.pid)
    with ValidClient(server, small_jpeg) as valid:
        started = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        try:
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: test\r\nX-Big: ")
            for _ in range(64 * 16):  # 64 MiB in 64 KiB pieces
                sock.sendall(b"a" * 65536)
        except OSError:
            pass  # the server answered and closed
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
        sock.close()
        seconds = time.monotonic() - started
        valid.assert_served_between(started, time.monotonic())
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]
    assert b"over the limit of 65536 bytes (max_header_bytes)" in data
    assert seconds <= SLACK_S
    assert _rss_bytes(server.proc.pid) - rss_before < 32 * 1024 * 1024, "the header was not held in memory"


def _one_write(server: ServerProcess, data: bytes) -> bytes:
    """Send ``data`` in one write and read the answer until the server closes or 10 s pass."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(data)
    sock.settimeout(10)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and not answer.startswith(b"HTTP/1.1 431 "):
                break  # a kept-alive 200: its head is enough
    except OSError:
        pass
    sock.close()
    return answer


@pytest.mark.parametrize("head_bytes", [66_000, 100_000, 120_000])
def test_a_head_over_the_limit_in_one_write_is_refused_431(
    server: ServerProcess, small_jpeg: bytes, head_bytes: int
) -> None:
    """The limit holds whether the head comes in pieces or whole in the first read (as a client writing it at
    once sends it), with or without a body behind it in the same bytes."""
    filler = b"a" * (head_bytes - 80)
    get = b"GET /v2/health/ready HTTP/1.1\r\nHost: test\r\nX-Big: " + filler + b"\r\n\r\n"
    body = b"{}"
    post = (
        b"POST /v2/models/" + server.model_name.encode() + b"/infer HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nX-Big: " + filler + b"\r\n\r\n" + body
    )
    with ValidClient(server, small_jpeg) as valid:
        started = time.monotonic()
        answers = [_one_write(server, get), _one_write(server, post)]
        valid.assert_served_between(started, time.monotonic())
    for data in answers:
        assert data.startswith(b"HTTP/1.1 431 "), data[:200]
        assert b"over the limit of 65536 bytes (max_header_bytes)" in data
    small = b"GET /v2/health/ready HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n"
    assert _one_write(server, small).startswith(b"HTTP/1.1 200 "), "a head under the limit is served"
    assert "Traceback" not in server.log()


def test_an_idle_kept_alive_connection_is_closed_at_its_limit(server: ServerProcess, small_jpeg: bytes) -> None:
    with ValidClient(server, small_jpeg) as valid:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:  # the head, then the whole body (it may come in another segment)
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += sock.recv(65536)
        started = time.monotonic()
        assert sock.recv(65536) == b"", "the server closes the idle connection"
        seconds = time.monotonic() - started
        valid.assert_served_between(started, time.monotonic())
    sock.close()
    assert KEEP_ALIVE_S * 0.8 <= seconds <= KEEP_ALIVE_S + SLACK_S


def test_the_connection_cap_answers_503_with_retry_after(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
) -> None:
    server = start_server(tiny_model_dir, tmp_path, max_connections=20, header_timeout_s=60)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as kept:
            assert kept.get("/v2/health/ready").status_code == 200  # idle at the flood: closed to make room
            flood = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
            head = (
                b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: %d\r\n\r\n" % len(small_jpeg)
            )
            for s in flood:  # uploads under way: busy connections, which the cap never closes to make room
                s.sendall(head + small_jpeg[:10])
            time.sleep(0.5)
            r = httpx.get(f"{server.url}/v2/health/ready", timeout=30)
            assert r.status_code == 503, r.text
            assert "over the limit of 20 (max_connections)" in r.json()["error"]
            assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
            flood[0].sendall(small_jpeg[10:])  # one of the busy connections, within the cap, ends its upload
            assert flood[0].recv(65536).startswith(b"HTTP/1.1 200 "), "a connection within the cap is served"
            for s in flood:
                s.close()
            deadline = time.monotonic() + SLACK_S
            while httpx.get(f"{server.url}/v2/health/ready", timeout=30).status_code != 200:
                assert time.monotonic() < deadline, "new connections are served again once the flood left"
                time.sleep(0.1)
        assert server.metric("classifier_rejections_total", reason="too_many_connections") >= 1
    finally:
        server.stop()


def test_idle_connections_at_the_cap_never_keep_a_new_client_out(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
) -> None:
    """A client holding the cap with idle connections (silent ones, and kept-alive ones that made one request
    each and then wait) does not lock others out: at the cap the connection idle longest is closed instead."""
    server = start_server(tiny_model_dir, tmp_path, max_connections=20, header_timeout_s=60)
    try:
        flood = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(15)]
        for _ in range(15):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            flood.append(sock)  # kept alive, idle for the keep-alive limit
        with ValidClient(server, small_jpeg) as valid:
            started = time.monotonic()
            for _ in range(10):
                image = {"image": ("x.jpg", small_jpeg, "image/jpeg")}
                r = httpx.post(f"{server.url}/classify", files=image, timeout=30)
                assert r.status_code == 200, r.text  # a new connection each time
            valid.assert_served_between(started, time.monotonic())
        closed = 0
        for sock in flood:
            sock.settimeout(0.01)
            try:
                closed += sock.recv(1) == b""
            except (TimeoutError, ConnectionResetError):
                pass
            sock.close()
        assert closed >= 10, "idle connections were closed to make room"
        assert server.metric("classifier_rejections_total", reason="too_many_connections") == 0
    finally:
        server.stop()


def test_slowloris_heads_at_the_cap_never_keep_a_new_client_out(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
) -> None:
    """Connections holding the cap with heads that trickle in (a byte at a time) are closed, the slowest
    first, to let new clients in, long before their head deadline."""
    server = start_server(tiny_model_dir, tmp_path, max_connections=20, header_timeout_s=60)
    try:
        flood = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
        for s in flood:
            s.sendall(b"GET /v2/health/ready HTTP/1.1\r\n")
        time.sleep(1.5)  # past SLOW_HEAD_S (1 s)
        for s in flood:
            try:
                s.sendall(b"X")  # still trickling
            except OSError:
                pass
        started = time.monotonic()
        for _ in range(5):
            image = {"image": ("x.jpg", small_jpeg, "image/jpeg")}
            r = httpx.post(f"{server.url}/classify", files=image, timeout=30)
            assert r.status_code == 200, r.text  # a new connection each time
        assert time.monotonic() - started < SLACK_S
        assert server.metric("classifier_rejections_total", reason="too_many_connections") == 0
        for s in flood:
            s.close()
    finally:
        server.stop()


def _nested_v2(depth: int) -> bytes:
    data = "[" * depth + "1" + "]" * depth
    return f'{{"inputs":[{{"name":"image_fp32","datatype":"FP32","shape":[1,3,2,2],"data":{data}}}]}}'.encode()


@pytest.mark.parametrize("depth", [9, 480, 1000, 1024, 1025, 5000])
def test_json_nested_past_the_limit_is_a_400_without_a_traceback(
    server: ServerProcess, small_jpeg: bytes, depth: int
) -> None:
    infer = f"{server.url}/v2/models/{server.model_name}/infer"
    body = _nested_v2(depth)
    with ValidClient(server, small_jpeg) as valid:
        started = time.monotonic()
        answers = [
            httpx.post(infer, content=body, headers={"Content-Type": "application/json"}, timeout=30),
            httpx.post(infer, content=gzip.compress(body), headers={"Content-Encoding": "gzip"}, timeout=30),
        ]
        valid.assert_served_between(started, time.monotonic())
    for r in answers:
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert "nested more than 8 levels deep" in error or "more than 1024 levels deep" in error, error
        assert "send" in error, "it says what is accepted"
    log = server.log()
    assert "Traceback" not in log and "RecursionError" not in log


def _nested_elsewhere(field: str, depth: int) -> bytes:
    """A valid v2 JSON request but for one field (not ``data``) nested ``depth`` levels deep."""
    deep = "[" * depth + '"x"' + "]" * depth
    fields = {
        "id": f'"id":{deep},',
        "name": "",
        "datatype": "",
        "top_k": f'"parameters":{{"top_k":{deep}}},',
        "outputs": f'"outputs":[{{"name":{deep}}}],',
    }
    name = deep if field == "name" else '"image"'
    datatype = deep if field == "datatype" else '"BYTES"'
    return (
        f'{{{fields[field]}"inputs":[{{"name":{name},"datatype":{datatype},"shape":[1],"data":["eA=="]}}]}}'
    ).encode()


@pytest.mark.parametrize("field", ["id", "name", "datatype", "top_k", "outputs"])
def test_json_nested_in_any_field_is_a_400_without_a_traceback(
    server: ServerProcess, small_jpeg: bytes, field: str
) -> None:
    """Nesting under the parser's limit in a field other than ``data``: every field a client sends is checked
    or quoted without recursing into it (``repr`` of a list 1,000 levels deep raises ``RecursionError``)."""
    infer = f"{server.url}/v2/models/{server.model_name}/infer"
    with ValidClient(server, small_jpeg) as valid:
        started = time.monotonic()
        answers = []
        for depth in (900, 1000, 1020):
            body = _nested_elsewhere(field, depth)
            answers.append(httpx.post(infer, content=body, headers={"Content-Type": "application/json"}, timeout=30))
            binary = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(body))}
            answers.append(httpx.post(infer, content=body, headers=binary, timeout=30))
        valid.assert_served_between(started, time.monotonic())
    for r in answers:
        assert r.status_code == 400, r.text
        assert len(r.json()["error"]) < 400, "a client's value is quoted cut short"
    log = server.log()
    assert "Traceback" not in log and "RecursionError" not in log


def test_every_gzip_and_deflate_member_is_inflated(server: ServerProcess, small_jpeg: bytes) -> None:
    infer = f"{server.url}/v2/models/{server.model_name}/infer"
    b64 = base64.b64encode(small_jpeg).decode()
    body = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64]}]}).encode()
    plain = httpx.post(infer, content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert plain.status_code == 200, plain.text
    thirds = [body[: len(body) // 3], body[len(body) // 3 : 2 * len(body) // 3], body[2 * len(body) // 3 :]]
    bodies = {
        "gzip": b"".join(gzip.compress(p) for p in thirds),
        "deflate": b"".join(zlib.compress(p) for p in thirds),
    }
    with ValidClient(server, small_jpeg) as valid:
        started = time.monotonic()
        answers = {
            coding: httpx.post(infer, content=data, headers={"Content-Encoding": coding}, timeout=30)
            for coding, data in bodies.items()
        }
        bomb = gzip.compress(bytes(8 << 20), compresslevel=9) * 5  # 40 MiB inflated, over the 32 MiB limit
        too_large = httpx.post(infer, content=bomb, headers={"Content-Encoding": "gzip"}, timeout=30)
        valid.assert_served_between(started, time.monotonic())
    for coding, r in answers.items():
        assert r.status_code == 200, (coding, r.text)
        assert r.json()["outputs"] == plain.json()["outputs"], coding
    assert too_large.status_code == 413, too_large.text
    assert "decompressed request body" in too_large.json()["error"]
