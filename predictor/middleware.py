"""ASGI middleware for every HTTP request (KServe's routes included): request id, body limit, compression,
``Server-Timing``, per-request metrics.

* Request id: ``X-Request-ID`` echoed, or generated; set in the logging context.
* Body limit: a declared ``Content-Length`` over ``max_request_bytes`` is refused with 413 before the body
  is read; a body that grows past it while read, too.
* Compressed requests (``Content-Encoding: gzip`` or ``deflate``, as tritonclient's
  ``request_compression_algorithm`` sends them) are inflated as they are read, and the limit applies to the
  inflated size, so a zip bomb is refused with 413 without being inflated in memory; a corrupt stream is
  400 naming the encoding; another encoding is 415.
* Compressed answers: a counted request (the inference routes) whose ``Accept-Encoding`` names gzip or
  deflate gets its answer compressed (tritonclient's ``response_compression_algorithm``); error answers
  (a few dozen bytes) are not.
* Body limits: every body is read through :class:`~predictor.upload.TimedBody` (``body_timeout_s``,
  ``min_upload_bytes_per_s`` after ``upload_grace_s``); one that breaks them is answered 408 with
  ``Connection: close``.
* Refuse before the work: an inference request has the images it declares checked against the one
  :class:`~predictor.admission.Admission` before its body is read (one for ``/classify``, v1 and v2
  JSON, whose count is inside the body; the input's shape for the v2 binary extension, whose JSON header
  alone is read for it), and the reservation is handed to the route in the request's own state
  (:func:`reservation_of`; the route passes it to the pipeline as an argument). When they do not fit, the
  answer is 503 with ``Retry-After`` and ``Connection: close`` at once: the body is never received or
  parsed. They are counted in (reserved for the pipeline) when the body has arrived, so a slow or stalled
  upload holds no capacity. Every refusal made here (408, 413, 415, 503) closes the connection, so an
  unread body is not read for nothing.
* Rejections are counted in the metrics and logged per interval (:class:`~predictor.logs.RejectionLog`).
"""

from __future__ import annotations

import gzip
import logging
import os
import time
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predictor.admission import Admission, Reservation
from predictor.config import Settings
from predictor.errors import InvalidInput, PayloadTooLarge, PredictorError, UnsupportedMediaType
from predictor.logs import REJECTIONS_LOGGER, RejectionLog, request_id_var
from predictor.metrics import PredictorMetrics
from predictor.protocol import v2
from predictor.upload import TimedBody, UploadLimits

logger = logging.getLogger(REJECTIONS_LOGGER)

ENCODINGS = ("gzip", "deflate")
"""Content codings accepted on requests and offered on answers (besides identity)."""
MAX_MEMBERS = 4096
"""Most gzip members (or concatenated deflate streams) in one body: each is inflated (a multi-member body,
as ``cat a.gz b.gz`` or block compressors make, is one body), but a body of millions of empty members would
cost the event loop seconds."""
PEEK_MAX_BYTES = 64 * 1024
"""Longest v2 binary JSON header read before admission; a longer one counts as one image."""
_CLASSIFY_TYPES = ("multipart/form-data", "application/octet-stream")
RESERVATION_STATE = "admission_reservation"
"""Key of the request's :class:`~predictor.admission.Reservation` in its ASGI scope's ``state``
(Starlette's ``request.state``)."""


def reservation_of(request: Any) -> Reservation | None:
    """The reservation the middleware made for ``request`` (a Starlette request), or None (not reserved)."""
    return request.scope.get("state", {}).get(RESERVATION_STATE)


def protocol_of(path: str, method: str) -> str | None:
    """Bounded protocol label of a request path; None for paths we do not count (health, metrics)."""
    if method != "POST" and not path.startswith("/v1/jobs"):
        return None
    if path == "/classify":
        return "classify"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "v2"
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        return "v1"
    if path.startswith("/v1/jobs"):
        return "jobs"
    return None


def too_large(size: int, limit: int, what: str = "request body") -> str:
    """The 413 message: the size, the limit and the setting that sets it."""
    return f"{what} of {size} bytes is over the limit of {limit} bytes (max_request_bytes)"


class Inflater:
    """Inflates a gzip or deflate request body chunk by chunk, every member of it, never past ``limit`` bytes
    in all."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.size = 0
        self.members = 1
        # gzip: the gzip wrapper; deflate: zlib's wrapper (what HTTP means, tritonclient sends), raw as fallback
        self._wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        self._z = zlib.decompressobj(self._wbits)
        self._started = False

    def feed(self, data: bytes, final: bool) -> bytes:
        """Inflate ``data``; raises 413 past the limit, 400 on a corrupt or truncated stream."""
        try:
            out = self._inflate(data)
            if final:
                tail = self._z.flush()
                self.size += len(tail)
                if self.size > self.limit:
                    raise PayloadTooLarge(too_large(self.size, self.limit, "decompressed request body"))
                out += tail
                if not self._z.eof:
                    raise zlib.error("stream ends before its end marker")
        except zlib.error as e:
            raise InvalidInput(
                f"request body is not valid {self.encoding} data (Content-Encoding: {self.encoding}): {e}"
            ) from None
        return out

    def _inflate(self, data: bytes) -> bytes:
        if not self._started and self.encoding == "deflate" and data:
            self._started = True
            if (data[0] & 0x0F) != 8 or ((data[0] << 8) | (data[1] if len(data) > 1 else 0)) % 31:
                self._wbits = -zlib.MAX_WBITS  # raw deflate, no zlib header
                self._z = zlib.decompressobj(self._wbits)
        self._started = True
        out = bytearray()
        while data:
            if self._z.eof:  # the member before ended: what follows is the next member
                if self.encoding == "gzip":
                    data = data.lstrip(b"\0")  # zero padding after a member, as gzip(1) and Python's gzip read
                    if not data:
                        break
                self._next_member()
            room = self.limit - self.size + 1  # one byte more than allowed proves the body is too large
            chunk = self._z.decompress(data, room)
            self.size += len(chunk)
            out += chunk
            if self.size > self.limit or self._z.unconsumed_tail:
                raise PayloadTooLarge(too_large(self.size, self.limit, "decompressed request body"))
            data = self._z.unused_data if self._z.eof else b""
        return bytes(out)

    def _next_member(self) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise InvalidInput(
                f"request body has more than {MAX_MEMBERS} {self.encoding} members (the limit): compress it as "
                "one member"
            )
        self._z = zlib.decompressobj(self._wbits)


def response_encoding(accept: str) -> str | None:
    """The coding to answer with for an ``Accept-Encoding`` value: gzip or deflate (q > 0), else None."""
    for part in accept.split(","):
        name, _, params = part.strip().partition(";")
        q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
        try:
            weight = float(q)
        except ValueError:
            weight = 0.0
        if name.strip().lower() in ENCODINGS and weight > 0:
            return name.strip().lower()
    return None


def compress(body: bytes, encoding: str) -> bytes:
    """``body`` in ``encoding`` (gzip, or deflate in zlib's wrapper as HTTP specifies)."""
    return gzip.compress(body, compresslevel=5) if encoding == "gzip" else zlib.compress(body, 5)


class RequestContextMiddleware:
    """Request id, body-size limit, early admission, compression and per-request metrics, for every route.

    Args:
        app: The ASGI app.
        settings: The predictor settings.
        metrics: Where requests and rejections are counted.
        admission: The pipeline's admission; None = no early admission (the pipeline still admits).
        rejections: Where rejections are logged; one per ``rejection_log_interval_seconds`` when omitted.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        metrics: PredictorMetrics,
        admission: Admission | None = None,
        rejections: RejectionLog | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.admission = admission
        self.rejections = rejections or RejectionLog(logger, settings.rejection_log_interval_seconds)
        self.upload_limits = UploadLimits(
            settings.body_timeout_s, settings.min_upload_bytes_per_s, settings.upload_grace_s
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = request_id(headers)
        token = request_id_var.set(rid)
        protocol = protocol_of(scope["path"], scope["method"])
        model, limit = self.settings.model_name, self.settings.max_request_bytes
        started = time.perf_counter()
        status = {"code": 500}
        answer_encoding = response_encoding(headers.get(b"accept-encoding", b"").decode("latin-1"))
        send_wrapper = self._sender(send, rid, status, answer_encoding if protocol else None, started, scope)
        body = TimedBody(receive, self.upload_limits)
        try:
            early = early_refusal(headers, limit)
            if early is not None:
                await self._refuse(scope, send_wrapper, early)
            elif protocol in ("classify", "v2", "v1") and self.admission is not None:
                await self._admit_and_call(scope, headers, body, send_wrapper, protocol, limit)
            else:
                await self._call(scope, headers, body, send_wrapper, protocol, limit)
        finally:
            if protocol is not None:
                self.metrics.observe_request(model, protocol, status["code"], time.perf_counter() - started)
            request_id_var.reset(token)

    async def _admit_and_call(
        self, scope: Scope, headers: dict[bytes, bytes], body: TimedBody, send: Send, protocol: str, limit: int
    ) -> None:
        """Check the declared images fit, then run the app, counting them in when the body has arrived;
        refuse at once when they do not fit."""
        assert self.admission is not None
        try:
            n, receive = await declared_images(scope, headers, body, protocol)
        except PredictorError as e:  # the body broke its limits before the v2 header came
            await self._refuse(scope, send, e)
            return
        if n is None or not 0 < n <= self.settings.max_images_per_request:  # the route says what is wrong
            await self._call(scope, headers, receive, send, protocol, limit)
            return
        try:
            reservation = self.admission.reserve(n, on_arrival=True)
            body.when_arrived(reservation.arrived)
        except PredictorError as e:  # Overloaded, or more images than the queue ever holds
            await self._refuse(scope, send, e)
            return
        with reservation:  # handed over explicitly, with the request; given back (what is left) when it ends
            scope.setdefault("state", {})[RESERVATION_STATE] = reservation
            await self._call(scope, headers, receive, send, protocol, limit)

    async def _refuse(self, scope: Scope, send: Send, exc: PredictorError) -> None:
        """Answer ``exc`` before the body was read, and close the connection (the body stays unread)."""
        record_rejection(self.metrics, self.rejections, self.settings.model_name, exc, scope["method"], scope["path"])
        await send_error(send, exc, close=True)

    async def _call(
        self, scope: Scope, headers: dict[bytes, bytes], receive: Receive, send: Send, protocol: str | None, limit: int
    ) -> None:
        coding = request_coding(headers)
        inflater = Inflater(coding, limit) if coding in ENCODINGS else None
        if inflater is not None:  # the app sees the inflated body, without the coding's headers
            drop = (b"content-encoding", b"content-length")
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k not in drop]}
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                if received > limit:
                    raise PayloadTooLarge(too_large(received, limit))
                if inflater is not None:
                    message = {**message, "body": inflater.feed(body, not message.get("more_body", False))}
            return message

        if protocol is not None:
            self.metrics.inflight.labels(self.settings.model_name).inc()
        try:
            await self.app(scope, receive_limited, send)
        finally:
            if protocol is not None:
                self.metrics.inflight.labels(self.settings.model_name).dec()

    @staticmethod
    def _sender(
        send: Send, rid: str, status: dict[str, int], encoding: str | None, started: float, scope: Scope
    ) -> Send:
        """Records the status, adds the request id and ``Server-Timing`` (time from arrival to the answer's
        start, which the try-it page shows, and the time in the queue of a request admitted by its
        reservation), and compresses the answer when asked to."""
        start: list[Message] = []
        chunks: list[bytes] = []
        coding = [encoding]  # an error answer (a few dozen bytes of JSON) is never worth compressing

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                out = message.setdefault("headers", [])
                out.append((b"x-request-id", rid.encode("latin-1")))
                reservation = scope.get("state", {}).get(RESERVATION_STATE)
                queue_s = reservation.queue_s if reservation is not None else None
                if reservation is not None:
                    reservation.answering()
                out.append(server_timing(time.perf_counter() - started, queue_s))
                if message["status"] >= 400:
                    coding[0] = None
                if message["status"] == 408 and all(k.lower() != b"connection" for k, _ in out):
                    out.append((b"connection", b"close"))  # the rest of a body too slow to wait for
                if coding[0] is None:
                    await send(message)
                else:
                    start.append(message)
                return
            if message["type"] != "http.response.body" or coding[0] is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = compress(b"".join(chunks), coding[0])
            head = start[0]
            kept = [(k, v) for k, v in head["headers"] if k.lower() not in (b"content-length", b"content-encoding")]
            kept += [(b"content-encoding", coding[0].encode()), (b"content-length", str(len(body)).encode()),
                     (b"vary", b"Accept-Encoding")]  # fmt: skip
            await send({**head, "headers": kept})
            await send({"type": "http.response.body", "body": body})

        return send_wrapper


def error_response(exc: PredictorError) -> Response:
    """``{"error": "..."}`` with the error's status and headers (``Retry-After`` where set)."""
    return error_json(exc.status_code, exc.message, exc.headers())


def error_json(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """A ``{"error": message}`` answer with ``status`` and ``headers``."""
    body = orjson.dumps({"error": message})
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def send_error(send: Send, exc: PredictorError, close: bool = False) -> None:
    """Answer ``exc`` directly from the middleware (before any route ran); ``close`` adds
    ``Connection: close``, so the server closes the connection after the answer."""
    resp = error_response(exc)
    headers = resp.raw_headers + ([(b"connection", b"close")] if close else [])
    await send({"type": "http.response.start", "status": resp.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": resp.body})


def request_id(headers: dict[bytes, bytes]) -> str:
    """The request's ``X-Request-ID`` (at most 128 characters), or a new random one."""
    return headers.get(b"x-request-id", b"").decode("latin-1")[:128] or os.urandom(16).hex()


def server_timing(seconds: float, queue_s: float | None = None) -> tuple[bytes, bytes]:
    """The ``Server-Timing`` header of an answer started ``seconds`` after the request arrived (``total``),
    with ``queue``: the seconds its images were counted in the queue (admitted to the end of their forward
    pass: waiting, decoding, inference), where it has them."""
    total = b"total;dur=%.2f" % (seconds * 1000)
    if queue_s is None:
        return b"server-timing", total
    return b"server-timing", b'queue;desc="admitted to inferred";dur=%.2f, %s' % (queue_s * 1000, total)


def early_refusal(headers: dict[bytes, bytes], limit: int) -> PredictorError | None:
    """What the head alone says is wrong with a request's body: a declared length over ``limit`` (413) or
    a content coding not accepted (415); None when neither."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return PayloadTooLarge(too_large(int(declared), limit))
    coding = request_coding(headers)
    if coding not in (*ENCODINGS, "identity", ""):
        return UnsupportedEncoding(
            f"Content-Encoding {coding[:60]!r} is not accepted: send gzip, deflate or an uncompressed body "
            "(one coding; Accept-Encoding)"
        )
    return None


def request_coding(headers: dict[bytes, bytes]) -> str:
    """A request's content coding, lowercased: ``x-gzip`` is gzip (RFC 9110, 8.4.1.3); "identity" when none."""
    coding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
    return "gzip" if coding == "x-gzip" else coding


class UnsupportedEncoding(UnsupportedMediaType):
    """A request body in a content coding not accepted: 415 with ``Accept-Encoding`` naming those that are
    (RFC 9110, 15.5.16)."""

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Accept-Encoding": ", ".join(ENCODINGS)}


def declared_on_head(protocol: str, headers: dict[bytes, bytes]) -> int | None:
    """The images a request declares at least, from its head: one for ``/classify`` with an image or
    multipart body, v1 and v2 (v2 binary may declare more in its JSON header, see :func:`declared_images`);
    None: not an inference body this route reads (it says so itself)."""
    if protocol == "classify":
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        return 1 if ctype in _CLASSIFY_TYPES or ctype.startswith("image/") else None
    return 1


def record_rejection(
    metrics: PredictorMetrics, log: RejectionLog, model: str, exc: PredictorError, method: str, path: str
) -> None:
    """Count a rejected request (``classifier_rejections_total``) and log it (per interval)."""
    metrics.rejections.labels(model, exc.reason).inc()
    log.record(exc.status_code, exc.reason, f"{method} {path} -> {exc.status_code}: {exc.message}")


async def declared_images(
    scope: Scope, headers: dict[bytes, bytes], receive: Receive, protocol: str
) -> tuple[int | None, Receive]:
    """How many images a request declares before its body is read, and the ``receive`` to read it with.

    ``/classify`` (a multipart or image body), v1 and v2 JSON declare at least one (their count is in the
    body); the v2 binary extension declares its input's shape in a JSON header of
    ``Inference-Header-Content-Length`` bytes, which is read (only it) and handed to the app again.
    None: not an inference body this route reads (it says so itself).
    """
    if protocol == "classify":
        return declared_on_head(protocol, headers), receive
    length = headers.get(b"inference-header-content-length", b"")
    coding = headers.get(b"content-encoding", b"identity").strip().lower()
    if protocol != "v2" or not length.isdigit() or not 0 < int(length) <= PEEK_MAX_BYTES:
        return 1, receive
    if coding not in (b"identity", b""):
        return 1, receive  # a compressed header would need inflating: count one, the pipeline counts the rest
    head, messages = await _read_prefix(receive, int(length))
    try:
        n = v2.declared_images(orjson.loads(head[: int(length)]))
    except orjson.JSONDecodeError:
        n = None
    return (1 if n is None else n), _replay(messages, receive)


async def _read_prefix(receive: Receive, n: int) -> tuple[bytes, list[Message]]:
    """The first ``n`` bytes of the body (fewer if it is shorter), and the messages they came in."""
    got, messages = bytearray(), []
    while len(got) < n:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        got += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(got), messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = deque(messages)

    async def receive_again() -> Message:
        return pending.popleft() if pending else await receive()

    return receive_again
