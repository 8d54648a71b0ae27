"""Connection limits the HTTP server enforces before a request reaches the app: a head (request line and
headers) must arrive within ``header_timeout_s`` and fit in ``max_header_bytes``, and at most
``max_connections`` connections are served at once.

Uvicorn has no head deadline and its httptools protocol no head size limit (``h11_max_incomplete_event_size``
only applies to its h11 protocol): a client sending a header byte a second (slowloris) or a 64 MiB header
holds a connection, and the memory for its head, as long as it likes. Its ``limit_concurrency`` answers a
plain-text 503 and also counts running tasks. So KServe's uvicorn is given :func:`guarded_protocol`, a
subclass of uvicorn's httptools protocol (the one KServe's ``http="auto"`` picks) that adds:

* a head deadline, from the connection's start (or from the first byte of the next request on a kept-alive
  connection) to the end of the head: past it, 408 when part of a head came, a silent close when nothing
  did;
* a head size limit: past it, 431 without reading the rest (a head that came whole in one read is measured
  once parsed, and its body never reaches the app);
* a connection cap: at ``max_connections`` a new connection closes the one that has waited longest for its
  client (silent since it opened, or kept alive between requests), or failing one, the one whose head has
  been arriving longest, if for :data:`SLOW_HEAD_S` or more; so that idle connections and slowloris heads,
  however many one client opens, never keep another out. Only when every other connection is busy is a
  request on the new connection answered 503 with ``Retry-After`` and the connection closed;
* an answer on the head (``answer_on_head``, :class:`predictor.shed.HeadRefusal`): an inference request that
  admission refuses whatever its body holds is answered 503 from the protocol's own callback, before any
  task or app runs, and its body is never read.

Each refusal is a JSON ``{"error": ...}`` naming the limit and its setting, sent with ``Connection: close``;
the connection is then half-closed and what the client still sends is read and dropped for up to
:data:`LINGER_S` (a close with unread data would reset the connection and lose the answer).

An answer on the head is the exception when the connection can be kept cheaply: an HTTP/1.1 keep-alive
request declaring a ``Content-Length`` of at most :data:`DRAIN_MAX_BYTES`, without ``Transfer-Encoding`` or
``Expect``. Its answer does not close the connection; the body is read and dropped as it comes (the
keep-alive limit, ``timeout_keep_alive``, bounds how long that may take) and the connection then serves the
next request. A client that resends at once (an overloaded pod's usual caller) reuses its connection instead
of opening a new one: 38 % less server CPU per refusal in the probe, and 24 % less again for a held refusal,
whose body is read while it waits instead of its connection being paused and resumed (``docs/performance.md``,
"Front door under a spike"). A request sent behind it in the same bytes, before the answer was written, is not started:
the answer then closes the connection after all.

Written for uvicorn 0.55.0 (httptools 0.9.0), the versions the lock pins. :func:`check_version` logs a warning
with another version; ``tests/unit/test_http_guard.py`` checks every internal used here against the installed
package: ``HttpToolsProtocol``'s ``connection_made``, ``data_received``, ``on_message_begin``,
``on_headers_complete``, ``on_response_complete`` (which arms the keep-alive limit), ``on_body`` and
``on_message_complete`` (which drop the body of an answered cycle) and ``connection_lost``, and its
attributes ``app``, ``connections``, ``cycle``, ``flow``, ``headers``, ``loop``, ``parser``, ``transport``,
``url``, ``timeout_keep_alive``, ``timeout_keep_alive_task`` and ``server_state.default_headers``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

logger = logging.getLogger(__name__)

WRITTEN_FOR = "0.55.0"
"""The uvicorn release this subclass was written and tested against."""
LINGER_S = 2.0
"""After a refusal, how long what the client still sends is read and dropped before the connection closes."""
RETRY_AFTER_S = 1
"""``Retry-After`` of the connection-cap 503: connections come and go quickly."""
DRAIN_MAX_BYTES = 1 << 20
"""Largest declared body an answer on the head reads and drops to keep its connection open."""
SLOW_HEAD_S = 1.0
"""At the connection cap, a connection whose head has been arriving this long may be closed to let a new one in."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of one server (from :class:`~predictor.config.Settings`).

    Attributes:
        header_timeout_s: Longest time to receive a request's head.
        max_header_bytes: Largest request head.
        max_connections: Most connections served at once.
        on_refusal: Called with the reason of every refusal (``header_timeout``, ``header_too_large``,
            ``too_many_connections``): the rejection metrics.
        answer_on_head: Called with a request's method, raw path and headers once its head has arrived:
            an answer (status, message, extra headers; counted by the callee) sent at once, the body unread,
            or None: the request goes to the app.
    """

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1000
    on_refusal: Callable[[str], None] | None = None
    answer_on_head: Callable[[str, bytes, list[tuple[bytes, bytes]]], Any] | None = None


def uvicorn_version() -> str:
    """The installed uvicorn distribution's version."""
    return version("uvicorn")


def check_version() -> bool:
    """True when the installed uvicorn is the one this module was written for; otherwise log a warning."""
    installed = uvicorn_version()
    if installed != WRITTEN_FOR:
        logger.warning(
            "uvicorn %s is installed; predictor/http_guard.py was written for %s: check its protocol subclass",
            installed,
            WRITTEN_FOR,
        )
        return False
    return True


def configure(config: Any, limits: ConnectionLimits) -> None:
    """Set a ``uvicorn.Config`` (not loaded yet) to serve with :func:`guarded_protocol` and these limits.

    The idle keep-alive limit is uvicorn's own ``timeout_keep_alive`` (KServe's ``ModelServer`` passes it on).
    """
    config.http = guarded_protocol(limits)
    config.limit_concurrency = None  # the protocol caps connections itself, answering JSON with Retry-After
    config.h11_max_incomplete_event_size = limits.max_header_bytes  # the same limit, were h11 ever chosen


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """A uvicorn HTTP protocol class that enforces ``limits`` on every connection."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def refusal(status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = (), *, close: bool = True) -> bytes:
    """A whole HTTP/1.1 answer ``{"error": message}`` (with ``headers`` too); ``close``: it closes the connection."""
    body = orjson.dumps({"error": message})
    head = [STATUS_LINE[status], b"content-type: application/json\r\n"]
    if close:
        head.append(b"connection: close\r\n")
    head += [b"%s: %s\r\n" % (name, value) for name, value in headers]
    head.append(b"content-length: %d\r\n" % len(body))
    return b"".join(head) + b"\r\n" + body


class _AnsweredOnHead:
    """Stands in for uvicorn's request cycle of a request answered on its head: its body callbacks see the
    answer complete and drop what comes; nothing waits on its event."""

    response_complete = True
    keep_alive = False
    disconnected = False

    class _NoEvent:
        def set(self) -> None:
            pass

    message_event = _NoEvent()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline, a head size limit and a connection cap."""

    limits: ConnectionLimits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # the parser is inside a request head (or waits for the first one)
        self._begun = False  # a request of this head has started (the silent close is for those that did not)
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._linger: asyncio.TimerHandle | None = None
        self._refused = False
        self._head_answer: Any = None  # decided in a parser callback, sent when the bytes are parsed
        self._keep_open = False  # the answer on the head keeps the connection (its body is read and dropped)
        self._paced: asyncio.TimerHandle | None = None
        self._skip_message = False  # the request being parsed was refused on its head: its body is dropped
        self._evicted = False  # closed to make room at the connection cap
        self._head_since = 0.0  # when the head being received began (the connection, or its first byte)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        if len(self.connections) > self.limits.max_connections and not self._close_longest_idle():
            self.app = self._over_capacity  # this connection's requests are refused; the others go on
        self._await_head(begun=False)

    def _waiting(self) -> bool:
        """Whether this connection waits for its client with nothing under way: no request yet and no byte
        of one, or kept alive between requests. Not while a head is arriving, a request is being served or a
        refusal held."""
        if not self._closable():
            return False
        return not self._in_head or (not self._begun and self._head_bytes == 0)

    def _slow_head(self, now: float) -> bool:
        """Whether this connection's head has been arriving for :data:`SLOW_HEAD_S` or more (a client writes
        a head at once; one that trickles in is a slowloris, or a client no faster)."""
        return self._closable() and self._in_head and now - self._head_since >= SLOW_HEAD_S

    def _closable(self) -> bool:
        return not (self._evicted or self.transport.is_closing() or self._paced is not None or not self._idle())

    def _close_longest_idle(self) -> bool:
        """At the connection cap: close the connection that has waited longest for its client (see
        :meth:`_waiting`), or failing one, the one whose head has been arriving longest, if for
        :data:`SLOW_HEAD_S` or more; so that idle connections and slowloris heads, however many a client
        opens, never keep a new client out. False when every other connection is busy (this one is then
        refused)."""
        others = [c for c in self.connections if c is not self and isinstance(c, GuardedHttpToolsProtocol)]
        oldest = min((c for c in others if c._waiting()), key=lambda c: c._idle_since, default=None)
        if oldest is None:
            now = self.loop.time()
            oldest = min((c for c in others if c._slow_head(now)), key=lambda c: c._head_since, default=None)
        if oldest is None:
            return False
        oldest._evicted = True
        oldest.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._linger, self._paced):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._linger = self._paced = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: drop what still comes
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._head_answer is not None:
            answer, self._head_answer = self._head_answer, None
            if answer.delay_s > 0:
                # Held until its turn. A body that will be dropped anyway is read (and dropped) meanwhile; one
                # that would not be (the connection closes) waits unread: nothing more is read until then.
                paused = not self._keep_open
                if paused:
                    self.transport.pause_reading()
                self._paced = self.loop.call_later(answer.delay_s, self._send_head_answer, answer, paused)
            else:
                self._send_head_answer(answer, False)
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._head_too_large()
        elif not self._in_head and self._idle() and self.timeout_keep_alive_task is None and self._paced is None:
            # Bytes that began no request (blank lines, the unread rest of an answered body) cancelled
            # uvicorn's keep-alive timer: they do not extend the idle limit.
            remaining = self._idle_since + self.timeout_keep_alive - self.loop.time()
            self.timeout_keep_alive_task = self.loop.call_later(max(0.0, remaining), self.timeout_keep_alive_handler)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._skip_message = False
        if self._refused:
            return  # a request pipelined behind a refusal: never started, so no deadline either
        if self._in_head:
            self._begun = True
        else:  # the next request on a kept-alive connection: its head's deadline starts now
            self._await_head(begun=True)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        if self._refused:
            self._skip_message = True
            return  # a request pipelined behind an answer on the head, in the same bytes: never started
        if self._parsed_head_bytes() > self.limits.max_header_bytes:
            # A head that came whole in one read (data_received counts only heads spread over several).
            self._skip_message = True  # its body, in the same bytes, is dropped; the app never sees it
            self._head_too_large()
            return
        if self._head_answer is not None or self._paced is not None:
            self._skip_message = True
            self._refused = True  # ... behind one not written yet, that keeps its connection: it closes it instead
            return
        answer = self._answer_on_head() if self._idle() else None
        if answer is None:
            super().on_headers_complete()
            return
        # Answered on the head: no task; the body that follows is dropped (the cycle says it is answered),
        # and the answer is written once the parser has returned (data_received).
        self._keep_open = self._body_is_cheap_to_drop()
        self._refused = not self._keep_open
        self._head_answer = answer
        self.cycle = _AnsweredOnHead()  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if not self._skip_message:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._skip_message:
            super().on_message_complete()

    def _parsed_head_bytes(self) -> int:
        """The size of the head just parsed: its URL and headers, with their separators and the request line's
        method and version (whitespace the parser trims is not counted)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) + 16

    def _head_too_large(self) -> None:
        limit = self.limits.max_header_bytes
        self._refuse(
            "header_too_large",
            431,
            f"request head (request line and headers) is over the limit of {limit} bytes (max_header_bytes): "
            "send smaller headers",
        )

    def _body_is_cheap_to_drop(self) -> bool:
        """Whether the request being answered on its head may keep its connection: HTTP/1.1 keep-alive, a
        declared body of at most :data:`DRAIN_MAX_BYTES`, no ``Transfer-Encoding`` and no ``Expect``."""
        if self.parser.get_http_version() != "1.1" or not self.parser.should_keep_alive():
            return False
        headers = dict(self.headers)  # names lowercased by uvicorn
        if b"transfer-encoding" in headers or b"expect" in headers:
            return False
        length = headers.get(b"content-length", b"").strip()
        return length.isdigit() and int(length) <= DRAIN_MAX_BYTES

    def _answer_on_head(self) -> Any:
        hook = self.limits.answer_on_head
        if hook is None or self.parser.should_upgrade():
            return None
        method = self.parser.get_method().decode("ascii", "replace")
        return hook(method, httptools.parse_url(self.url).path, self.headers)

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        super().on_response_complete()

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _await_head(self, begun: bool) -> None:
        self._in_head, self._begun, self._head_bytes = True, begun, 0
        self._head_since = self.loop.time()
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if not self._begun and self._head_bytes == 0 and self._idle():
            self._count("header_timeout")
            self.transport.close()  # a connection that never started a request: nobody to answer
            return
        timeout = self.limits.header_timeout_s
        self._refuse(
            "header_timeout",
            408,
            f"request head (request line and headers) not received within {timeout:g} s (header_timeout_s): "
            "send the whole head at once",
        )

    def _refuse(self, reason: str, status: int, message: str) -> None:
        """Answer ``status`` and close; an answer already under way on this connection is finished first."""
        self._in_head = False
        self._stop_head_timer()
        self._refused = True
        self._count(reason)
        if not self._idle():
            # A pipelined head went wrong while the previous request is being answered: read no more, let
            # that answer finish, then close.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self._send_and_close(refusal(status, message))

    def _send_head_answer(self, answer: Any, paused: bool) -> None:
        """Write an answer on the head (``paused``: reading was paused while it was held); keep the connection
        when it may be kept and nothing was sent behind it, else close it."""
        self._paced = None
        if self.transport.is_closing():
            return
        keep = self._keep_open and not self._refused
        self._refused = not keep  # closing: what the client still sends is dropped while lingering
        if paused:
            self.transport.resume_reading()
        data = refusal(answer.status, answer.message, answer.headers, close=not keep)
        if not keep:
            self._send_and_close(data)
            return
        self.transport.write(data)
        self.on_response_complete()  # idle from now: the keep-alive limit bounds the rest of the body

    def _send_and_close(self, answer: bytes) -> None:
        """Write a whole answer, half-close, and drop what the client still sends for :data:`LINGER_S`."""
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = self.loop.call_later(LINGER_S, self.transport.close)
        else:  # pragma: no cover - TLS transports cannot half-close
            self.transport.close()

    def _count(self, reason: str) -> None:
        if self.limits.on_refusal is not None:
            self.limits.on_refusal(reason)

    async def _over_capacity(self, scope: Any, receive: Any, send: Any) -> None:
        self._count("too_many_connections")
        limit = self.limits.max_connections
        body = orjson.dumps(
            {
                "error": f"server has {len(self.connections)} open connections, over the limit of {limit} "
                f"(max_connections): retry in {RETRY_AFTER_S} s (Retry-After)"
            }
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"retry-after", b"%d" % RETRY_AFTER_S),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
