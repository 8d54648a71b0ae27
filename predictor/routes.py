"""HTTP adapters on KServe's FastAPI app: ``/classify``, the v2 REST infer routes, the error handlers.

The v2 routes use the one v2 codec (:mod:`predictor.protocol.v2`), the same the gRPC path uses. KServe's
routes for the same paths and methods are dropped when KServe adds them (:mod:`predictor.route_table`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from predictor.config import Settings
from predictor.errors import (
    InvalidInput,
    NotLive,
    NotReady,
    PredictorError,
    UnsupportedMediaType,
)
from predictor.health import Health
from predictor.limits import check_image_count
from predictor.logs import RejectionLog, rejection_log
from predictor.metrics import PredictorMetrics
from predictor.middleware import (
    RequestContextMiddleware,
    error_json,
    error_response,
    record_rejection,
    reservation_of,
)
from predictor.pipeline import Pipeline
from predictor.protocol import parse_v1, predictions_json, v2
from predictor.shed import HeadRefusal

T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499
"""Status recorded for a request whose client left before its body was read (nginx's convention)."""


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


def install(
    app: FastAPI,
    settings: Settings,
    pipeline: Pipeline,
    metrics: PredictorMetrics,
    rejections: RejectionLog | None = None,
) -> HeadRefusal:
    """Add our middleware, error handler and routes to KServe's app; returns the refusal on the head that
    the HTTP server's protocol makes with the same admission, metrics and rejection log (``rejections``: the
    server's, shared with gRPC; a new one when omitted)."""
    if rejections is None:
        rejections = rejection_log(settings.rejection_log_interval_seconds)
    app.add_middleware(
        RequestContextMiddleware,
        settings=settings,
        metrics=metrics,
        admission=pipeline.admission,
        rejections=rejections,
    )

    async def handle_predictor_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PredictorError)
        record_rejection(metrics, rejections, settings.model_name, exc, request.method, request.url.path)
        return error_response(exc)

    async def handle_client_gone(request: Request, exc: Exception) -> Response:
        # The client left while its body was being read: nobody reads an answer, nothing was wrong here.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def handle_http_error(request: Request, exc: Exception) -> Response:
        # Routing's own 404 and 405 (FastAPI would answer {"detail": "Not Found"}): {"error": ...} as every
        # other refusal, saying what is served.
        assert isinstance(exc, HTTPException)
        return error_json(
            exc.status_code, http_error_message(request.method, request.url.path, exc, settings), exc.headers
        )

    app.add_exception_handler(PredictorError, handle_predictor_error)
    app.add_exception_handler(ClientDisconnect, handle_client_gone)
    app.add_exception_handler(HTTPException, handle_http_error)

    health = Health(settings, pipeline)
    check_model = health.check_model

    @app.post("/classify", tags=["classify"])
    async def classify(request: Request) -> Response:
        """Classify images sent as multipart field ``image`` (repeatable) or one raw image body."""
        top_k = query_int(request, "top_k")
        images = await _read_classify_images(request, settings)
        work = pipeline.classify(images, top_k, reservation=reservation_of(request))
        results = await until_disconnect(request, work)
        body = {
            "model": settings.model_name,
            "model_version": pipeline.model_version,
            "predictions": predictions_json(results),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    async def infer(request: Request) -> Response:
        body = await request.body()
        parsed = v2.parse_rest(body, request.headers.get("inference-header-content-length"))
        work = pipeline.classify(parsed.images, parsed.top_k, reservation=reservation_of(request))
        results = await until_disconnect(request, work)
        out, headers = v2.encode_rest(results, parsed, settings.model_name, pipeline.model_version)
        return Response(out, headers=headers)

    @app.post("/v2/models/{model_name}/infer", tags=["v2"])
    async def v2_infer(model_name: str, request: Request) -> Response:
        """KServe v2 infer, JSON or binary tensor extension (raw image bytes as BYTES elements)."""
        check_model(model_name)
        return await infer(request)

    @app.post("/v2/models/{model_name}/versions/{model_version}/infer", tags=["v2"])
    async def v2_infer_version(model_name: str, model_version: str, request: Request) -> Response:
        """The same, for one version (this server serves one: its content hash, or the configured one)."""
        check_model(model_name, model_version)
        return await infer(request)

    @app.post("/v1/models/{model_name}:predict", tags=["v1"])
    async def v1_predict(model_name: str, request: Request) -> Response:
        """KServe v1 predict: ``{"instances": [{"image": {"b64": "..."}}]}`` (ours, so that the images the
        middleware reserved reach the pipeline with the request)."""
        check_model(model_name)
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f'request body is not valid JSON ({e}): send {{"instances": [...]}}') from None
        parsed = parse_v1(payload)
        work = pipeline.classify(parsed.images, parsed.top_k, reservation=reservation_of(request))
        results = await until_disconnect(request, work)
        body = {
            "predictions": predictions_json(results),
            "model_name": model_name,
            "model_version": pipeline.model_version,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/v2/models/{model_name}", tags=["v2"])
    @app.get("/v2/models/{model_name}/versions/{model_version}", tags=["v2"])
    async def v2_metadata(model_name: str, model_version: str | None = None) -> Response:
        """v2 model metadata, with the served version (KServe's own answer leaves ``versions`` empty)."""
        check_model(model_name, model_version)
        if pipeline.spec is None:
            raise NotReady("model is not loaded yet")
        body = v2.metadata(settings.model_name, pipeline.model_version, pipeline.spec.crop_hw)
        return Response(orjson.dumps(body), media_type="application/json")

    _install_health(app, pipeline, health)
    return HeadRefusal(settings, metrics, pipeline.admission, rejections)


def _install_health(app: FastAPI, pipeline: Pipeline, health: Health) -> None:
    """Liveness and readiness that know the model and the inference device (:class:`~predictor.health.Health`,
    the rule gRPC's health calls follow too): KServe's answer 200 (live) whatever their state, and log a
    traceback for every not-ready probe."""

    def check_device() -> None:
        if pipeline.broken is not None:
            raise pipeline.broken_error()

    @app.get("/v2/health/live", tags=["v2"])
    async def live() -> Response:
        """Liveness (the chart's liveness and startup probes): 503 once the inference device is unusable, or
        once the model, having been ready, has not been for liveness_not_ready_grace_seconds."""
        check_device()
        if (why := health.not_live()) is not None:
            raise NotLive(why)
        return Response(b'{"live":true}', media_type="application/json")

    @app.get("/v2/health/ready", tags=["v2"])
    async def ready() -> Response:
        """Server readiness: the model is loaded, not draining, and the inference device works."""
        check_device()
        if (why := health.not_ready()) is not None:
            raise NotReady(why)
        return Response(b'{"ready":true}', media_type="application/json")

    @app.get("/v2/models/{model_name}/ready", tags=["v2"])
    @app.get("/v2/models/{model_name}/versions/{model_version}/ready", tags=["v2"])
    async def model_ready(model_name: str, model_version: str | None = None) -> Response:
        """Model readiness (the chart's readiness probe), as :func:`ready` for the one model served here."""
        health.check_model(model_name, model_version)
        check_device()
        if (why := health.not_ready()) is not None:
            raise NotReady(why)
        return Response(orjson.dumps({"name": model_name, "ready": True}), media_type="application/json")


def query_int(request: Request, name: str) -> int | None:
    """An integer query parameter, or None when absent; 400 when it is not an integer."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be an integer, got {raw!r}") from None


def http_error_message(method: str, path: str, exc: HTTPException, settings: Settings) -> str:
    """What a routing 404 or 405 says: what was asked for, and what is served instead."""
    asked = f"{method} {path[:200]}{'...' if len(path) > 200 else ''}"
    if exc.status_code == 404 and exc.detail == "Not Found":
        model = settings.model_name
        return (
            f"no route {asked}: inference is POST /classify, POST /v2/models/{model}/infer or "
            f"POST /v1/models/{model}:predict; health is GET /v2/health/live and /v2/health/ready "
            "(docs/security.md lists every route)"
        )
    allowed = (exc.headers or {}).get("Allow")
    if exc.status_code == 405 and allowed:
        return f"method {asked} is not allowed: this path takes {allowed} (Allow)"
    return str(exc.detail)


async def read_multipart_images(request: Request, settings: Settings) -> list[bytes]:
    """The file parts of multipart field ``image`` (repeatable); the body limit is the middleware's."""
    try:
        form = await request.form(
            max_files=settings.max_images_per_request + 1, max_part_size=settings.max_request_bytes
        )
    except (PredictorError, ClientDisconnect):
        raise
    except Exception as e:  # malformed multipart of any kind is the client's mistake
        detail = getattr(e, "detail", None) or type(e).__name__
        raise InvalidInput(
            f"multipart body could not be parsed ({detail}): send multipart/form-data with file field "
            "'image' (curl -F image=@cat.jpg)"
        ) from None
    try:
        parts: list[Any] = form.getlist("image")
        if not parts:
            raise InvalidInput(f"multipart field 'image' is missing (fields sent: {sorted(set(form.keys()))})")
        check_image_count(len(parts), settings.max_images_per_request)
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
