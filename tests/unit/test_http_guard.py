"""predictor.http_guard: the uvicorn internals it relies on exist in the installed uvicorn, and a real uvicorn
server running its protocol closes slow heads (408), refuses large heads (431), caps connections (503) and
keeps the idle keep-alive limit, while a well-behaved client on another connection is served."""

from __future__ import annotations

import inspect
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from predictor import http_guard
from predictor.http_guard import ConnectionLimits, GuardedHttpToolsProtocol
from predictor.shed import HeadAnswer
from tests.support.servers import free_port

HEAD_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 1.0


APP_CALLS: list[str] = []
"""Paths of the requests the app was called for."""


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI app: 200 "hello" to every request (lifespan ignored)."""
    if scope["type"] != "http":
        return
    APP_CALLS.append(scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


class Served:
    """A uvicorn server in a thread, with the guarded protocol, and the refusals it counted."""

    def __init__(self, **limits: Any) -> None:
        self.refusals: list[str] = []
        self.port = free_port()
        config = uvicorn.Config(
            hello, host="127.0.0.1", port=self.port, log_config=None, lifespan="off", timeout_keep_alive=KEEP_ALIVE_S
        )
        http_guard.configure(config, ConnectionLimits(on_refusal=self.refusals.append, **limits))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def get(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}/", timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    limits = getattr(request, "param", {})
    s = Served(**{"header_timeout_s": HEAD_TIMEOUT_S, **limits})
    yield s
    s.stop()


def read_until_closed(sock: socket.socket, timeout_s: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    sock.settimeout(timeout_s)
    started, data = time.monotonic(), b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def test_written_for_the_installed_uvicorn() -> None:
    assert http_guard.uvicorn_version() == http_guard.WRITTEN_FOR
    assert http_guard.check_version()


def test_the_uvicorn_internals_it_uses_exist() -> None:
    for name in ("connection_made", "connection_lost", "data_received", "on_message_begin", "on_headers_complete",
                 "on_response_complete", "timeout_keep_alive_handler"):  # fmt: skip
        assert callable(getattr(HttpToolsProtocol, name, None)), name
    init = inspect.getsource(HttpToolsProtocol.__init__)
    for attr in ("self.app", "self.connections", "self.cycle", "self.flow", "self.loop", "self.transport",
                 "self.timeout_keep_alive_task", "self.timeout_keep_alive"):  # fmt: skip
        assert f"{attr} =" in init or f"{attr}: " in init, attr
    assert "app = self.app" in inspect.getsource(HttpToolsProtocol.on_headers_complete), "the per-connection app"
    assert "self.url" in inspect.getsource(HttpToolsProtocol.on_url), "the request target, for the head's answer"
    assert "self.headers.append" in inspect.getsource(HttpToolsProtocol.on_header), "the head's headers"
    assert "self.cycle.response_complete" in inspect.getsource(HttpToolsProtocol.on_body), "an answered body is dropped"
    assert "self.cycle.response_complete" in inspect.getsource(HttpToolsProtocol.on_message_complete), "... its end too"
    assert "self.timeout_keep_alive_task = " in inspect.getsource(HttpToolsProtocol.on_response_complete), "idle"
    assert "self.cycle.message_event.set()" in inspect.getsource(HttpToolsProtocol.connection_lost)
    params = inspect.signature(uvicorn.Config).parameters
    assert {"http", "timeout_keep_alive", "limit_concurrency", "h11_max_incomplete_event_size"} <= set(params)


def test_configure_sets_the_protocol_and_limits() -> None:
    config = uvicorn.Config(hello, limit_concurrency=5)
    limits = ConnectionLimits(header_timeout_s=3, max_header_bytes=2048, max_connections=7)
    http_guard.configure(config, limits)
    assert issubclass(config.http, GuardedHttpToolsProtocol) and config.http.limits is limits
    assert config.limit_concurrency is None and config.h11_max_incomplete_event_size == 2048


def test_a_slow_head_gets_408_and_the_connection_closed(served: Served) -> None:
    slow = served.connect()
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    started = time.monotonic()
    for _ in range(3):
        assert served.get().status_code == 200, "another connection is served meanwhile"
    data, _ = read_until_closed(slow)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"connection: close" in data and b"(header_timeout_s)" in data
    assert HEAD_TIMEOUT_S * 0.8 <= time.monotonic() - started <= HEAD_TIMEOUT_S + 5
    assert served.refusals == ["header_timeout"]


def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_deadline(served: Served) -> None:
    slow = served.connect()
    started = time.monotonic()
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
        try:
            slow.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.1)
        if time.monotonic() - started > HEAD_TIMEOUT_S + 5:
            break
    data, _ = read_until_closed(slow, timeout_s=5)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert time.monotonic() - started <= HEAD_TIMEOUT_S + 5


def test_a_connection_that_sends_nothing_is_closed_silently(served: Served) -> None:
    idle = served.connect()
    data, seconds = read_until_closed(idle)
    assert data == b"" and seconds <= HEAD_TIMEOUT_S + 5


@pytest.mark.parametrize("served", [{"max_header_bytes": 4096}], indirect=True)
def test_a_head_over_the_limit_gets_431_before_the_rest_is_read(served: Served) -> None:
    big = served.connect()
    sent = 0
    try:
        big.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(256):  # up to 16 MiB
            big.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass  # the server closed after answering
    data, _ = read_until_closed(big)
    assert data.startswith(b"HTTP/1.1 431 "), data
    assert b"over the limit of 4096 bytes (max_header_bytes)" in data
    assert served.get().status_code == 200
    assert served.refusals == ["header_too_large"]


def test_a_head_within_the_limit_is_served(served: Served) -> None:
    r = httpx.get(f"http://127.0.0.1:{served.port}/", headers={"X-Fine": "a" * 30_000}, timeout=10)
    assert r.status_code == 200 and served.refusals == []


def test_an_idle_kept_alive_connection_is_closed_after_the_limit(served: Served) -> None:
    sock = served.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(10)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    for _ in range(5):  # blank lines begin no request: they do not extend the idle limit
        time.sleep(KEEP_ALIVE_S / 4)
        try:
            sock.sendall(b"\r\n")
        except OSError:
            break
    data, _ = read_until_closed(sock)
    assert data == b""
    assert KEEP_ALIVE_S * 0.8 <= time.monotonic() - started <= KEEP_ALIVE_S + 5


def test_the_next_request_on_a_kept_alive_connection_has_its_own_head_deadline(served: Served) -> None:
    sock = served.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(10)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the second head never ends
    data, seconds = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408 ") and seconds <= HEAD_TIMEOUT_S + 5


def heads_under_way(served: Served, n: int) -> list[socket.socket]:
    """``n`` new connections, each having sent part of a head (the end of the headers never comes)."""
    socks = [served.connect() for _ in range(n)]
    for s in socks:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    return socks


@pytest.mark.parametrize("served", [{"max_connections": 3, "header_timeout_s": 30}], indirect=True)
def test_a_connection_over_the_cap_is_answered_503_with_retry_after(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the cap with every connection busy (here: heads under way, not yet slow), a new one is refused."""
    monkeypatch.setattr(http_guard, "SLOW_HEAD_S", 60.0)
    busy = heads_under_way(served, 3)
    time.sleep(0.3)
    over = served.connect()
    over.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data, _ = read_until_closed(over)
    assert data.startswith(b"HTTP/1.1 503 "), data
    assert b"retry-after: 1" in data.lower() and b"over the limit of 3 (max_connections)" in data
    busy[0].sendall(b"\r\n")
    assert busy[0].recv(65536).startswith(b"HTTP/1.1 200 "), "connections within the cap are served"
    for s in busy:
        s.close()
    deadline = time.monotonic() + 10
    while served.get().status_code != 200:
        assert time.monotonic() < deadline, "a new connection is served once others closed"
        time.sleep(0.05)
    assert served.refusals == ["too_many_connections"]


@pytest.mark.parametrize("served", [{"max_connections": 4, "header_timeout_s": 30}], indirect=True)
def test_at_the_cap_the_connection_idle_longest_is_closed_to_let_a_new_one_in(served: Served) -> None:
    """Idle connections (silent since opened, or kept alive between requests) never keep a new client out:
    at the cap the one that waited longest is closed; one whose head is arriving is not."""
    silent = served.connect()  # idle longest
    time.sleep(0.05)
    kept = served.connect()
    kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")  # then idle, kept alive
    time.sleep(0.05)
    busy = served.connect()
    busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head under way
    time.sleep(0.05)
    late = served.connect()  # the 4th: at the cap, not over it
    time.sleep(0.2)
    for expected_closed in (silent, kept, late):
        r = served.get()  # a new client, over the cap: served, on a fresh connection each time
        assert r.status_code == 200, r.text
        data, _ = read_until_closed(expected_closed, timeout_s=5)
        assert data == b"", "an idle connection is closed without an answer"
    busy.sendall(b"\r\n")
    assert busy.recv(65536).startswith(b"HTTP/1.1 200 "), "the connection with a head under way was kept"
    assert served.refusals == []
    busy.close()


@pytest.mark.parametrize("served", [{"max_connections": 3, "header_timeout_s": 30}], indirect=True)
def test_at_the_cap_with_no_idle_connection_the_slowest_head_is_closed(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slowloris heads (arriving for SLOW_HEAD_S or longer) do not keep a new client out at the cap either:
    the one arriving longest is closed; a head that just began is not."""
    monkeypatch.setattr(http_guard, "SLOW_HEAD_S", 0.5)
    slow = heads_under_way(served, 2)
    time.sleep(1.0)
    (fresh,) = heads_under_way(served, 1)  # a head that just began: kept
    time.sleep(0.05)
    assert served.get().status_code == 200, "a new client is served at the cap"
    data, _ = read_until_closed(slow[0], timeout_s=5)
    assert data == b"", "the oldest slow head was closed"
    fresh.sendall(b"\r\n")
    assert fresh.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert served.refusals == []
    for s in (*slow, fresh):
        s.close()


def refuse_busy(method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]]) -> HeadAnswer | None:
    """An ``answer_on_head`` hook: POST /busy is refused on its head, with the request's id echoed."""
    if method != "POST" or raw_path != b"/busy":
        return None
    rid = dict(headers).get(b"x-request-id", b"none")
    return HeadAnswer(503, "busy: retry in 2 s (Retry-After)", [(b"retry-after", b"2"), (b"x-request-id", rid)])


@pytest.mark.parametrize("served", [{"answer_on_head": refuse_busy}], indirect=True)
def test_a_request_answered_on_its_head_is_answered_before_its_body_is_sent(served: Served) -> None:
    APP_CALLS.clear()
    sock = served.connect()
    sock.sendall(b"POST /busy HTTP/1.1\r\nHost: x\r\nX-Request-ID: r-7\r\nContent-Length: 10000000\r\n\r\n")
    data, _ = read_until_closed(sock)  # no body byte was sent: the answer cannot have waited for it
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), data
    assert b"retry-after: 2" in head and b"x-request-id: r-7" in head and b"connection: close" in head
    assert body == b'{"error":"busy: retry in 2 s (Retry-After)"}'
    assert APP_CALLS == [], "the app never saw it"
    assert served.get().status_code == 200 and APP_CALLS == ["/"], "other requests go to the app"


@pytest.mark.parametrize("served", [{"answer_on_head": refuse_busy}], indirect=True)
def test_requests_sent_behind_a_request_answered_on_its_head_are_not_started(served: Served) -> None:
    APP_CALLS.clear()
    sock = served.connect()
    sock.sendall(
        b"POST /busy HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHo"  # a whole one and the start of another
    )
    data, took = read_until_closed(sock)
    assert data.count(b"HTTP/1.1 ") == 1 and data.startswith(b"HTTP/1.1 503 "), data
    assert took < HEAD_TIMEOUT_S + http_guard.LINGER_S + 2, "closed after the linger, not held by a head deadline"
    assert APP_CALLS == [] and served.refusals == []


@pytest.mark.parametrize("served", [{"answer_on_head": refuse_busy}], indirect=True)
def test_the_next_request_on_a_kept_alive_connection_can_be_answered_on_its_head(served: Served) -> None:
    APP_CALLS.clear()
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=10) as kept:
        assert kept.get("/").status_code == 200
        r = kept.post("/busy", content=b"x" * 100_000)
        assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
        assert r.json() == {"error": "busy: retry in 2 s (Retry-After)"}
        assert kept.get("/").status_code == 200
    assert APP_CALLS == ["/", "/"]


def read_answer(sock: socket.socket, timeout_s: float = 10) -> tuple[bytes, bytes]:
    """One whole answer (head, body) from a connection that stays open: the body by its Content-Length."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before the whole body"
        body += chunk
    assert len(body) == length, "nothing beyond the answer"
    return head, body


TIMER_SLACK_S = 0.005
"""How much earlier than asked a held answer may come: the server's loop (uvloop) keeps its clock in whole
milliseconds, read once per turn, so a timer can fire up to a millisecond before the wall clock says."""


def refuse_busy_held(method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]]) -> HeadAnswer | None:
    """``refuse_busy``, each answer held 0.3 s (a paced refusal)."""
    answer = refuse_busy(method, raw_path, headers)
    return None if answer is None else HeadAnswer(answer.status, answer.message, answer.headers, delay_s=0.3)


@pytest.mark.parametrize(
    "served", [{"answer_on_head": refuse_busy}, {"answer_on_head": refuse_busy_held}], indirect=True
)
def test_an_answer_on_the_head_keeps_the_connection_when_the_body_is_small_and_declared(served: Served) -> None:
    APP_CALLS.clear()
    sock = served.connect()
    started = time.monotonic()
    sock.sendall(b"POST /busy HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
    head, body = read_answer(sock)  # before any body byte was sent
    held = served.server.config.http.limits.answer_on_head is refuse_busy_held  # type: ignore[union-attr]
    assert time.monotonic() - started >= (0.3 - TIMER_SLACK_S if held else 0.0)
    assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 2" in head, head
    assert b"connection: close" not in head.lower(), "kept open"
    assert body == b'{"error":"busy: retry in 2 s (Retry-After)"}'
    sock.sendall(b"x" * 150_000)
    sock.sendall(b"x" * 50_000 + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # the rest of the body, then the next
    head, body = read_answer(sock)
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"hello", "the dropped body was not taken for a request"
    sock.sendall(b"POST /busy HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")  # and again
    head, _ = read_answer(sock)
    assert head.startswith(b"HTTP/1.1 503 "), head
    sock.close()
    assert APP_CALLS == ["/"] and served.refusals == []


@pytest.mark.parametrize("served", [{"answer_on_head": refuse_busy}], indirect=True)
@pytest.mark.parametrize(
    "head",
    [
        b"POST /busy HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (http_guard.DRAIN_MAX_BYTES + 1),
        b"POST /busy HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /busy HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
        b"POST /busy HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
        b"POST /busy HTTP/1.0\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
    ],
    ids=["large", "chunked", "expect", "close-asked", "http-1.0"],
)
def test_an_answer_on_the_head_closes_when_the_body_is_large_unknown_or_not_coming(served: Served, head: bytes) -> None:
    sock = served.connect()
    sock.sendall(head)
    data, took = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 503 ") and b"connection: close" in data, data
    assert took < http_guard.LINGER_S + 2, "closed after the linger"


@pytest.mark.parametrize("served", [{"answer_on_head": refuse_busy}], indirect=True)
def test_a_kept_connection_whose_dropped_body_stalls_is_closed_at_the_keep_alive_limit(served: Served) -> None:
    sock = served.connect()
    sock.sendall(b"POST /busy HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    head, _ = read_answer(sock)
    assert b"connection: close" not in head.lower()
    sock.sendall(b"x" * 10)  # ... and the rest never comes
    assert served.get().status_code == 200, "others are served meanwhile"
    data, took = read_until_closed(sock)
    assert data == b"" and took < KEEP_ALIVE_S + 2, f"closed after the keep-alive limit, not held ({took:.1f} s)"


def refuse_busy_held_long(method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]]) -> HeadAnswer | None:
    """``refuse_busy``, each answer held 1.5 s: longer than the idle keep-alive limit."""
    answer = refuse_busy(method, raw_path, headers)
    return None if answer is None else HeadAnswer(answer.status, answer.message, answer.headers, delay_s=1.5)


@pytest.mark.parametrize("served", [{"answer_on_head": refuse_busy_held_long}], indirect=True)
def test_a_held_answer_that_keeps_its_connection_reads_and_drops_the_body_meanwhile(served: Served) -> None:
    APP_CALLS.clear()
    sock = served.connect()
    started = time.monotonic()
    sock.sendall(b"POST /busy HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300_000)
    head, _ = read_answer(sock)  # the whole body was taken while it was held, and the idle limit did not cut it
    assert time.monotonic() - started >= 1.5 - TIMER_SLACK_S and head.startswith(b"HTTP/1.1 503 "), head
    assert b"connection: close" not in head.lower()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = read_answer(sock)
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"hello"
    sock.close()
    assert APP_CALLS == ["/"]
