"""HTTP routes of queue mode: ``POST /v1/jobs`` (enqueue) and ``GET /v1/jobs/{id}`` (read a result).

Errors are raised as :mod:`predictor.errors` types; the server's one handler turns them into
``{"error": "..."}`` with their status.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response

from predictor.config import Settings
from predictor.errors import InvalidInput, UnsupportedMediaType
from predictor.limits import check_image_count
from predictor.protocol.common import b64decode, top_k_param
from predictor.queue.jobs import JOB_ID_PATTERN, JobNotFound, JobQueue
from predictor.routes import query_int, read_multipart_images


def job_router(queue: JobQueue, settings: Settings) -> APIRouter:
    """The ``/v1/jobs`` routes on ``queue``.

    Args:
        queue: where jobs go and results are read.
        settings: limits (``max_request_bytes``, ``max_images_per_request``, ``max_top_k``).
    """
    router = APIRouter(tags=["jobs"])

    @router.post("/v1/jobs", status_code=202)
    async def submit_jobs(request: Request) -> Response:
        """Enqueue one job per image: multipart field ``image`` (repeatable, ``?top_k=N``) or JSON
        ``{"images": [base64, ...], "top_k": N}``. Answers 202 ``{"job_ids": [...]}``."""
        images, top_k = await _read_job_request(request, settings)
        ids = await queue.submit(images, top_k)
        return Response(json.dumps({"job_ids": ids}), status_code=202, media_type="application/json")

    @router.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> Response:
        """A job's result (``status`` done or error), or ``{"status": "pending"}``; 404 when unknown."""
        if not JOB_ID_PATTERN.match(job_id):
            raise JobNotFound(f"job id {job_id[:64]!r} is not a job id (32 hex digits)")
        state = await queue.get(job_id)
        if state["status"] == "unknown":
            raise JobNotFound(f"no job {job_id}: never submitted, or its result expired")
        return Response(json.dumps(state), media_type="application/json")

    return router


async def _read_job_request(request: Request, settings: Settings) -> tuple[list[bytes], int | None]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        images, top_k = _parse_json(await request.body())
    elif ctype == "multipart/form-data":
        images = await read_multipart_images(request, settings)
        top_k = query_int(request, "top_k")
    else:
        raise UnsupportedMediaType(
            f"content type {ctype or '(none)'!r} is not accepted on /v1/jobs: send multipart/form-data "
            "with field 'image' (curl -F image=@cat.jpg), or application/json "
            '{"images": ["<base64>", ...], "top_k": 5}'
        )
    check_image_count(len(images), settings.max_images_per_request)
    return images, top_k


def _parse_json(body: bytes) -> tuple[list[bytes], int | None]:
    try:
        doc: Any = json.loads(body)
    except ValueError as e:
        raise InvalidInput(f"body is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not doc["images"]:
        raise InvalidInput('JSON body must be {"images": ["<base64>", ...], "top_k": N} with one image or more')
    images = []
    for i, item in enumerate(doc["images"]):
        data = b64decode(item, f"images[{i}]")
        if not data:
            raise InvalidInput(f"images[{i}] is empty: send the encoded image bytes")
        images.append(data)
    return images, top_k_param(doc)
