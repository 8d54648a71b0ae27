"""What the HTTP server answers, decided by construction and listed from the app itself.

KServe adds its routes to our app when its server starts, after ours (:func:`predictor.kserve_compat.
after_kserve_routes` hands them to :func:`settle_kserve_routes`). Each one is then, by rule rather than by a
list of our paths:

* dropped when we serve the same path and method (ours win, whichever order the two were added in);
* kept when KServe's role for it is ``data`` (read-only or inference, :data:`~predictor.kserve_compat.
  KSERVE_ROUTES`), except ``/metrics`` when ``http_metrics_port`` serves metrics on their own port;
* put behind the admin token when it changes the server's state (``repository``) and
  ``enable_model_repository_routes`` is on, dropped otherwise;
* dropped when this model does not support it (``unsupported``), or when kserve_compat does not know it (a
  newer kserve's: logged as a warning; ``tests/unit/test_kserve_compat.py`` fails on it).

:func:`mounted_routes` lists the result; ``python -m predictor routes`` prints it, and a test holds
``docs/security.md``'s route table to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import ORJSONResponse
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount

from predictor.config import Settings
from predictor.kserve_compat import KSERVE_ROUTES

logger = logging.getLogger(__name__)

ADMIN_TAG = "admin"
"""Tag of the routes behind the admin token (they are the only ones not public)."""


@dataclass(frozen=True)
class MountedRoute:
    """One route the server answers: its path, its methods, whether anyone may call it, what it is."""

    path: str
    methods: tuple[str, ...]
    public: bool
    summary: str

    def as_json(self) -> dict[str, Any]:
        """A plain dict (``python -m predictor routes --json``)."""
        return {"path": self.path, "methods": list(self.methods), "public": self.public, "summary": self.summary}


def build_app(settings: Settings, version: str) -> FastAPI:
    """Our FastAPI app: the OpenAPI schema and its pages (``/openapi.json``, ``/docs``, ``/redoc``) only
    with ``enable_docs_url``."""
    docs = settings.enable_docs_url
    return FastAPI(
        title="image-classifier",
        version=version,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        default_response_class=ORJSONResponse,
    )


def route_methods(route: BaseRoute) -> tuple[str, ...]:
    """A route's methods, sorted; ``*`` for a mount (it passes every method on)."""
    if isinstance(route, Mount):
        return ("*",)
    return tuple(sorted(getattr(route, "methods", None) or ()))


def settle_kserve_routes(app: FastAPI, added: list[BaseRoute], settings: Settings, admin: Callable[..., Any]) -> None:
    """Keep, guard or drop each route KServe just added to ``app`` (the rules are the module's docstring).

    Args:
        app: The app KServe added its routes to.
        added: Those routes, in ``app.router.routes``.
        settings: Which optional routes are on.
        admin: The FastAPI dependency that accepts only the admin token.
    """
    ours = {(r.path, m) for r in app.router.routes if all(r is not a for a in added) for m in route_methods(r)}
    moved = {("/metrics", "GET")} if settings.http_metrics_port else set()
    decided: dict[str, list[str]] = {"ours": [], "guarded": [], "dropped": [], "unknown": []}
    routes: list[BaseRoute] = []
    for route in app.router.routes:
        if all(route is not a for a in added):
            routes.append(route)
            continue
        keys = [(route.path, m) for m in route_methods(route)]
        roles = {KSERVE_ROUTES.get(k, "unknown") for k in keys}
        label = f"{','.join(m for _, m in keys)} {route.path}"
        if any(k in ours for k in keys):
            decided["ours"].append(label)
        elif roles == {"data"} and not any(k in moved for k in keys):
            routes.append(route)
        elif roles == {"repository"} and settings.enable_model_repository_routes:
            routes.append(_guarded(route, admin))
            decided["guarded"].append(label)
        else:
            decided["unknown" if "unknown" in roles else "dropped"].append(label)
    app.router.routes[:] = routes
    if decided["unknown"]:
        logger.warning(
            "kserve mounts routes predictor/kserve_compat.py does not know; not served: %s",
            "; ".join(decided["unknown"]),
        )
    logger.debug("kserve routes: ours instead %s; admin-only %s; not served %s", *(decided[k] for k in decided))


def _guarded(route: BaseRoute, admin: Callable[..., Any]) -> APIRoute:
    """The same KServe route, answering only callers with the admin token."""
    if not isinstance(route, APIRoute):
        raise TypeError(f"cannot guard {route!r}: only API routes take a dependency")
    return APIRoute(
        route.path,
        route.endpoint,
        methods=list(route.methods),
        name=route.name,
        tags=[ADMIN_TAG],
        response_model=None,
        summary=route.summary,
        include_in_schema=route.include_in_schema,
        dependencies=[Depends(admin)],
    )


def mounted_routes(app: FastAPI) -> list[MountedRoute]:
    """Every route ``app`` answers, in matching order."""
    found = []
    for route in app.router.routes:
        path = getattr(route, "path", None)
        if path is None:  # e.g. FastAPI's lazy included router: add routers with kserve_compat.include_flat
            raise TypeError(f"{route!r} has no path: its routes cannot be listed")
        if isinstance(route, Mount):
            path = path.rstrip("/") + "/{path:path}"
        public = ADMIN_TAG not in (getattr(route, "tags", None) or [])
        found.append(MountedRoute(path, route_methods(route), public, _summary(route)))
    return found


def _summary(route: BaseRoute) -> str:
    endpoint = getattr(route, "endpoint", None)
    doc = (getattr(route, "summary", None) or getattr(endpoint, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else getattr(route, "name", "") or ""
