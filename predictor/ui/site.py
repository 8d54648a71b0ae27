"""Routes of the try-it page: ``/`` (the page), ``/ui/<file>`` (its static files) and ``/ui/info.json``.

The files ship inside the package (no build step, nothing fetched from elsewhere: the page works in an
air-gapped cluster) and are read once at install time; only the files found there are served, by exact
name, so no request path reaches the file system. Every answer carries a strict Content-Security-Policy
(scripts, styles and fetches from this origin only, no inline script, no framing). With
``enable_ui=false`` nothing of this is served: ``/`` and every ``/ui/...`` path answer 404.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

from predictor.config import Settings
from predictor.pipeline import Pipeline

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # Thumbnails and browser-side resizing use blob: URLs of the user's own files.
        "img-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
DISABLED_MESSAGE = (
    "the try-it page is disabled on this server (enable_ui=false); start it with --enable_ui true "
    "(PREDICTOR_ENABLE_UI=true, chart value settings.enable_ui), or call POST /classify directly"
)


@dataclass(frozen=True)
class StaticFile:
    """One packaged file, held in memory with its media type and a content hash for ``ETag``."""

    body: bytes
    media_type: str
    etag: str


def load_static(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Every file of ``directory`` with a known media type, by file name."""
    files = {}
    for path in sorted(directory.iterdir()):
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        files[path.name] = StaticFile(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    if "index.html" not in files:
        raise FileNotFoundError(f"{directory} has no index.html: the package was installed without its UI files")
    return files


def not_found(message: str) -> Response:
    """``{"error": ...}`` with 404."""
    return Response(orjson.dumps({"error": message}), status_code=404, media_type="application/json")


def serve_file(request: Request, file: StaticFile) -> Response:
    """The file, or 304 when the browser's cached copy (``If-None-Match``) is current."""
    headers = {**SECURITY_HEADERS, "ETag": file.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


def page_info(settings: Settings, pipeline: Pipeline) -> dict[str, Any]:
    """What the page shows and needs: the model, where it runs, and the request limits."""
    engine = pipeline.engine_info  # NotReady (503) until the model is loaded
    return {
        "model": settings.model_name,
        "model_version": pipeline.model_version,
        "backend": engine.backend,
        "device": engine.device,
        "dtype": engine.dtype,
        "classes": len(pipeline.labels),
        "max_request_bytes": settings.max_request_bytes,
        "default_top_k": settings.default_top_k,
        "max_top_k": settings.max_top_k,
    }


def install(app: FastAPI, settings: Settings, pipeline: Pipeline) -> None:
    """Add the page's routes to ``app`` when ``enable_ui`` is set; otherwise make sure they answer 404."""
    if not settings.enable_ui:
        _install_disabled(app)
        return
    files = load_static()
    methods = ["GET", "HEAD"]

    async def index(request: Request) -> Response:
        return serve_file(request, files["index.html"])

    async def to_index() -> Response:
        # Relative, so the page also works behind a proxy that mounts the server under a path prefix.
        return Response(status_code=307, headers={**SECURITY_HEADERS, "Location": "../"})

    async def info() -> Response:
        body = orjson.dumps(page_info(settings, pipeline))
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        return Response(body, media_type="application/json", headers=headers)

    async def static(name: str, request: Request) -> Response:
        file = files.get(name)
        if file is None or name == "index.html":
            return not_found(f"/ui/{name} is not a file of the try-it page (files: {', '.join(sorted(files))})")
        return serve_file(request, file)

    app.add_api_route("/", index, methods=methods, include_in_schema=False)
    app.add_api_route("/ui", to_index, methods=methods, include_in_schema=False)
    app.add_api_route("/ui/", to_index, methods=methods, include_in_schema=False)
    app.add_api_route("/ui/info.json", info, methods=methods, include_in_schema=False)
    app.add_api_route("/ui/{name:path}", static, methods=methods, include_in_schema=False)

    async def log_url() -> None:
        logger.info("try-it page at http://localhost:%d/ (enable_ui=true)", settings.http_port)

    app.router.on_startup.append(log_url)


def _install_disabled(app: FastAPI) -> None:
    """``/`` and ``/ui/...`` answer 404 saying how to turn the page on (KServe's ``/`` would say "alive")."""

    async def disabled() -> Response:
        return not_found(DISABLED_MESSAGE)

    for path in ("/", "/ui", "/ui/{rest:path}"):
        app.add_api_route(path, disabled, methods=["GET", "HEAD"], include_in_schema=False)
