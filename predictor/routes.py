"""HTTP adapters on KServe's FastAPI app: ``/classify``, the v2 infer route, errors, request context.

Installed on ``kserve.model_server.app`` before the model server starts, so our v2 infer route is
matched before KServe's own (which cannot take raw image bytes over the binary extension).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request, Response
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predictor.config import Settings
from predictor.errors import (
    InvalidInput,
    ModelNotFound,
    PayloadTooLarge,
    PredictorError,
    UnsupportedMediaType,
)
from predictor.logs import request_id_var
from predictor.metrics import PredictorMetrics
from predictor.pipeline import Pipeline
from predictor.protocol import encode_v2, parse_v2, predictions_json

logger = logging.getLogger(__name__)
T = TypeVar("T")


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


class RequestContextMiddleware:
    """Request id, body-size limit, per-request metrics and ``Server-Timing``, for every route (KServe's included)."""

    def __init__(self, app: ASGIApp, settings: Settings, metrics: PredictorMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or os.urandom(16).hex()
        token = request_id_var.set(rid)
        protocol = protocol_of(scope["path"], scope["method"])
        model = self.settings.model_name
        limit = self.settings.max_request_bytes
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                out = message.setdefault("headers", [])
                out.append((b"x-request-id", rid.encode("latin-1")))
                # Standard Server-Timing: time from arrival to the response's start (the try-it page shows it).
                out.append((b"server-timing", b"total;dur=%.2f" % ((time.perf_counter() - started) * 1000)))
            await send(message)

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_error(send_wrapper, PayloadTooLarge(_too_large(int(declared), limit)), self.metrics, model)
        else:
            received = 0

            async def receive_limited() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise PayloadTooLarge(_too_large(received, limit))
                return message

            if protocol is not None:
                self.metrics.inflight.labels(model).inc()
            try:
                await self.app(scope, receive_limited, send_wrapper)
            finally:
                if protocol is not None:
                    self.metrics.inflight.labels(model).dec()
        if protocol is not None:
            self.metrics.observe_request(model, protocol, status["code"], time.perf_counter() - started)
        request_id_var.reset(token)


def _too_large(size: int, limit: int) -> str:
    return f"request body of {size} bytes is over the limit of {limit} bytes (max_request_bytes)"


def error_response(exc: PredictorError) -> Response:
    """``{"error": "..."}`` with the error's status and headers."""
    return Response(
        orjson.dumps({"error": exc.message}),
        status_code=exc.status_code,
        headers=exc.headers(),
        media_type="application/json",
    )


async def _send_error(send: Send, exc: PredictorError, metrics: PredictorMetrics, model: str) -> None:
    metrics.rejections.labels(model, exc.reason).inc()
    resp = error_response(exc)
    await send({"type": "http.response.start", "status": resp.status_code, "headers": resp.raw_headers})
    await send({"type": "http.response.body", "body": resp.body})


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; cancel it if the client disconnects first (its queue slots are freed)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise asyncio.CancelledError("client disconnected")
    return task.result()


async def _wait_disconnect(request: Request) -> None:
    # The body was fully read before this starts, so the next message is the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def install(app: FastAPI, settings: Settings, pipeline: Pipeline, metrics: PredictorMetrics) -> None:
    """Add our middleware, error handler and routes to KServe's app."""
    app.add_middleware(RequestContextMiddleware, settings=settings, metrics=metrics)

    async def handle_predictor_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PredictorError)
        metrics.rejections.labels(settings.model_name, exc.reason).inc()
        level = logging.ERROR if exc.status_code >= 500 and exc.status_code != 503 else logging.WARNING
        logger.log(level, "%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
        return error_response(exc)

    app.add_exception_handler(PredictorError, handle_predictor_error)

    def check_model(name: str) -> None:
        if name != settings.model_name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {settings.model_name!r}")

    @app.post("/classify", tags=["classify"])
    async def classify(request: Request) -> Response:
        """Classify images sent as multipart field ``image`` (repeatable) or one raw image body."""
        top_k = query_int(request, "top_k")
        images = await _read_classify_images(request, settings)
        results = await until_disconnect(request, pipeline.classify(images, top_k))
        body = {
            "model": settings.model_name,
            "model_version": pipeline.model_version,
            "predictions": predictions_json(results),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.post("/v2/models/{model_name}/infer", tags=["v2"])
    async def v2_infer(model_name: str, request: Request) -> Response:
        """KServe v2 infer, JSON or binary tensor extension (raw image bytes as BYTES elements)."""
        check_model(model_name)
        body = await request.body()
        parsed = parse_v2(body, request.headers.get("inference-header-content-length"))
        results = await until_disconnect(request, pipeline.classify(parsed.images, parsed.top_k))
        out, headers = encode_v2(results, parsed, settings.model_name, pipeline.model_version)
        return Response(out, headers=headers)


def query_int(request: Request, name: str) -> int | None:
    """An integer query parameter, or None when absent; 400 when it is not an integer."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be an integer, got {raw!r}") from None


async def read_multipart_images(request: Request, settings: Settings) -> list[bytes]:
    """The file parts of multipart field ``image`` (repeatable); the body limit is the middleware's."""
    try:
        form = await request.form(
            max_files=settings.max_images_per_request + 1, max_part_size=settings.max_request_bytes
        )
    except PayloadTooLarge:
        raise
    except Exception as e:  # malformed multipart of any kind is the client's mistake
        raise InvalidInput(f"multipart body could not be parsed: {e}") from None
    try:
        parts: list[Any] = form.getlist("image")
        if not parts:
            raise InvalidInput(f"multipart field 'image' is missing (fields sent: {sorted(set(form.keys()))})")
        images = []
        for i, part in enumerate(parts):
            if not isinstance(part, UploadFile):
                raise InvalidInput("multipart field 'image' must be a file upload (curl -F image=@cat.jpg)")
            data = await part.read()
            if not data:
                raise InvalidInput(f"image {i} ({part.filename or 'unnamed'}) is empty")
            images.append(data)
        return images
    finally:
        await form.close()


async def _read_classify_images(request: Request, settings: Settings) -> list[bytes]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await read_multipart_images(request, settings)
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return [await request.body()]
    raise UnsupportedMediaType(
        f"content type {ctype or '(none)'!r} is not accepted on /classify: send multipart/form-data "
        "with field 'image' (curl -F image=@cat.jpg), or a raw image body with Content-Type image/*"
    )


Handler = Callable[[Request], Awaitable[Response]]
