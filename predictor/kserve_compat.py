"""Every place this project touches KServe's internals, why, and for which version.

Written for kserve 0.21.0 (the version pyproject pins). :func:`check_version` logs a warning at start-up
when another version is installed, since each workaround below depends on internals that may change;
``tests/unit/test_kserve_compat.py`` checks each one against the installed package.

1. :func:`import_model_server`: ``kserve.model_server`` parses ``sys.argv`` at import time (its module-level
   ``args`` become the ``ModelServer`` constructor's defaults) and builds its FastAPI ``app`` then. Our flags
   are not KServe's, so argv is replaced with a neutral one for the import and restored afterwards.
2. :func:`drop_timing_middleware`: KServe's ``RESTServer._add_middlewares`` adds ``timing_asgi``'s
   ``TimingMiddleware``, which calls ``getrusage`` twice per request to log to a logger we do not configure
   (the largest single cost of the HTTP path in a profile: docs/performance.md). The method is wrapped to
   drop that middleware and keep the others; the wrapper can be undone (tests do).
3. :func:`replace_app` and :func:`after_kserve_routes`: KServe serves the module-level FastAPI ``app`` of
   ``kserve.model_server`` (``FASTAPI_APP_IMPORT_STRING``), built at import with ``/openapi.json`` always on
   and its docs following *its* argv, and its ``RESTServer._register_endpoints`` adds its routes when the
   server starts, after ours. :func:`replace_app` puts our own app (docs per ``enable_docs_url``) in its
   place; :func:`after_kserve_routes` wraps ``_register_endpoints`` so a callback gets the routes KServe
   just added, to keep, guard or drop each one (:mod:`predictor.route_table`). :data:`KSERVE_ROUTES` is
   every route kserve 0.21 adds, with its role; one it does not list (a newer kserve's) is dropped.
   :func:`register_kserve_routes` runs that registration without serving (``python -m predictor routes``).
4. :func:`grpc_input_raw` and :func:`http_parameters`: KServe's ``InferRequest`` built from a gRPC
   ``ModelInferRequest`` keeps each input's ``raw_input_contents`` in the private ``_raw_data``; its
   gRPC parameters stay protobuf ``InferParameter`` maps, converted with KServe's ``to_http_parameters``.
5. :func:`guard_grpc_repository`: KServe's gRPC servicer serves ``RepositoryModelLoad`` and
   ``RepositoryModelUnload`` (the same state changes as the REST repository routes); they are wrapped so a
   check runs first (:func:`predictor.admin.refuse_grpc_repository` refuses them all: kserve 0.21's own
   implementation fails on every call, reading a dict its repository extension does not return).
6. gRPC errors: KServe's ``ExceptionToStatusInterceptor`` aborts with the code and details of a
   ``grpc_interceptor`` exception it is given; :func:`predictor.protocol.status.grpc_error` makes those
   from our errors, so no KServe error type is dressed up for it.
7. :func:`configure_http_server`: ``ModelServer.start`` builds its ``RESTServer``, whose constructor builds
   the ``uvicorn.Config`` from a fixed set of arguments (no HTTP protocol class, no connection limits). The
   constructor is wrapped to hand that config, before uvicorn loads it, to a function of ours
   (:func:`predictor.http_guard.configure`); the wrapper can be undone (tests do).
8. :func:`configure_grpc_server`: ``GRPCServer.start`` (``kserve.protocol.grpc.server``) builds its
   ``grpc.aio`` server with KServe's interceptors and only the two message-size options, taken from its
   own argv defaults (8 MiB), and no stream cap. The module's ``aio`` is replaced by a shim whose
   ``server()`` adds our options (they win over KServe's) and appends our interceptors (inside KServe's,
   so its ``ExceptionToStatusInterceptor`` still turns our exceptions into statuses). It leaves out
   KServe's ``LoggingInterceptor``, which logs one INFO line per call ("grpc method: ...": a burst of
   calls floods the log); KServe's other log lines stay.
9. :func:`serve_on_uvloop`: ``ModelServer.start`` runs ``asyncio.run`` itself, and its ``event_loop``
   argument ("auto": uvloop where installed) reaches only the ``uvicorn.Config``, whose loop is set up by
   ``uvicorn.run``/``Server.run``, which KServe never calls: so KServe serves on asyncio's own loop. The
   default loop policy is set to uvloop's before ``start`` (and a current loop set, since KServe's
   ``setup_event_loop`` asks for one), so ``asyncio.run`` builds a uvloop loop, as uvicorn's "auto" would.
10. :func:`answer_grpc_health`: KServe's gRPC servicer answers ``ServerLive`` and ``ServerReady`` true
    whatever the model's state, and ``ModelReady`` from its registry; they are replaced by answers of ours
    (:class:`predictor.grpc_guard.GrpcHealth`), so that gRPC's health says what REST's does.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from importlib.metadata import version
from types import ModuleType
from typing import Any, Protocol

logger = logging.getLogger(__name__)

WRITTEN_FOR = "0.21.0"
"""The kserve release these workarounds were written and tested against."""


def kserve_version() -> str:
    """The installed kserve distribution's version."""
    return version("kserve")


def check_version() -> bool:
    """True when the installed kserve is the one this module was written for; otherwise log a warning."""
    installed = kserve_version()
    if installed != WRITTEN_FOR:
        logger.warning(
            "kserve %s is installed; predictor/kserve_compat.py was written for %s: check its workarounds",
            installed,
            WRITTEN_FOR,
        )
        return False
    return True


def import_model_server() -> ModuleType:
    """``kserve.model_server``, imported with a neutral ``sys.argv`` (it parses argv at import time)."""
    if "kserve.model_server" in sys.modules:
        return sys.modules["kserve.model_server"]
    saved = sys.argv
    sys.argv = [saved[0] if saved else "predictor", "--configure_logging", "false"]
    try:
        import kserve.model_server as model_server
    finally:
        sys.argv = saved
    return model_server


def drop_timing_middleware() -> Callable[[], None]:
    """Make KServe's REST server leave out ``TimingMiddleware``; returns a function that undoes it."""
    from kserve.protocol.rest.server import RESTServer
    from timing_asgi import TimingMiddleware

    original = RESTServer._add_middlewares
    if getattr(original, "_drops_timing", False):
        return lambda: None  # already wrapped; the first caller holds the undo

    def add_middlewares(self: RESTServer, app: Any) -> None:
        original(self, app)
        app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]

    add_middlewares._drops_timing = True  # type: ignore[attr-defined]
    RESTServer._add_middlewares = add_middlewares  # type: ignore[method-assign]

    def undo() -> None:
        RESTServer._add_middlewares = original  # type: ignore[method-assign]

    return undo


def configure_http_server(apply: Callable[[Any], None]) -> Callable[[], None]:
    """Call ``apply`` with the ``uvicorn.Config`` of every ``RESTServer`` KServe builds from now on, before
    uvicorn loads it; returns a function that undoes it."""
    from kserve.protocol.rest.server import RESTServer

    original = RESTServer.__init__

    def init(self: RESTServer, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        apply(self.config)

    RESTServer.__init__ = init  # type: ignore[method-assign]

    def undo() -> None:
        RESTServer.__init__ = original  # type: ignore[method-assign]

    return undo


def serve_on_uvloop() -> str:
    """Make the ``asyncio.run`` of ``ModelServer.start`` (and any later one in this process) run on uvloop
    where it is installed; returns the loop it will run on, ``"uvloop"`` or ``"asyncio"``.

    The HTTP server, refusals answered on a request's head included, runs its connections' callbacks on
    this loop: on uvloop the event loop thread used 0.18 instead of 0.21 of the one core at 400 clients
    (docs/performance.md, "The event loop and the garbage collector").
    """
    import asyncio

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard], a kserve dependency, installs it
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())  # KServe's setup_event_loop asks for the current one
    return "uvloop"


KSERVE_ROUTES: dict[tuple[str, str], str] = {
    ("/", "GET"): "data",
    ("/metrics", "GET"): "data",
    ("/v1/models", "GET"): "data",
    ("/v1/models/{model_name}", "GET"): "data",
    ("/v1/models/{model_name}:predict", "POST"): "data",
    ("/v1/models/{model_name}:explain", "POST"): "unsupported",
    ("/v2", "GET"): "data",
    ("/v2/health/live", "GET"): "data",
    ("/v2/health/ready", "GET"): "data",
    ("/v2/models", "GET"): "data",
    ("/v2/models/{model_name}", "GET"): "data",
    ("/v2/models/{model_name}/versions/{model_version}", "GET"): "data",
    ("/v2/models/{model_name}/ready", "GET"): "data",
    ("/v2/models/{model_name}/versions/{model_version}/ready", "GET"): "data",
    ("/v2/models/{model_name}/infer", "POST"): "data",
    ("/v2/models/{model_name}/versions/{model_version}/infer", "POST"): "data",
    ("/v2/repository/models/{model_name}/load", "POST"): "repository",
    ("/v2/repository/models/{model_name}/unload", "POST"): "repository",
}
"""Every (path, method) kserve 0.21's REST server adds, by role: ``data`` (read-only or inference: served
unless we serve the same path and method), ``repository`` (changes the server's state: only behind the
admin token), ``unsupported`` (this model has no explainer: not served)."""


def replace_app(model_server: ModuleType, app: Any) -> Any:
    """Make ``app`` the one KServe serves and adds its routes to (``kserve.model_server.app``); returns it."""
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING

    module, _, attribute = FASTAPI_APP_IMPORT_STRING.partition(":")
    if module != model_server.__name__ or not hasattr(model_server, attribute):
        raise RuntimeError(f"kserve serves {FASTAPI_APP_IMPORT_STRING}, not {model_server.__name__}:app")
    setattr(model_server, attribute, app)
    return app


def after_kserve_routes(callback: Callable[[Any, list[Any]], None]) -> Callable[[], None]:
    """Call ``callback(app, added)`` each time KServe's REST server has added its routes to ``app``
    (``added``: those route objects, still in ``app.router.routes``); returns a function that undoes it."""
    from kserve.protocol.rest.server import RESTServer

    original = RESTServer._register_endpoints

    def register_endpoints(self: RESTServer, app: Any) -> None:
        before = list(app.router.routes)
        app.include_router = lambda router, **options: include_flat(app, router, **options)
        try:
            original(self, app)
        finally:
            del app.include_router  # the instance attribute goes; FastAPI's method is back
        callback(app, [r for r in app.router.routes if all(r is not b for b in before)])

    RESTServer._register_endpoints = register_endpoints  # type: ignore[method-assign]

    def undo() -> None:
        RESTServer._register_endpoints = original  # type: ignore[method-assign]

    return undo


def include_flat(app: Any, router: Any, **options: Any) -> None:
    """Add a router's routes to ``app`` one by one (their paths already carry the router's prefix).

    FastAPI 0.165's ``include_router`` adds one lazy ``_IncludedRouter`` entry instead of the routes, which
    hides them from ``app.router.routes``; KServe's routers (and ours) use no include options, so adding
    the routes themselves serves the same and keeps every route visible, to decide on and to list.
    """
    from fastapi.routing import APIRoute

    if options:
        raise RuntimeError(f"include_flat: include options {sorted(options)} are not supported here")
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise RuntimeError(f"include_flat: {route!r} is not an API route (a nested router?)")
        app.router.routes.append(route)


def register_kserve_routes(server: Any, http_port: int) -> None:
    """What ``ModelServer.start`` does to the app for its REST server (routes, handlers), without serving."""
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, http_port)
    rest.create_application()


GrpcCheck = Callable[[Any], Awaitable[None]]
"""Awaited with the call's ``ServicerContext`` before a repository RPC; aborts the call to refuse it."""


def guard_grpc_repository(check: GrpcCheck) -> Callable[[], None]:
    """Run ``check(context)`` before KServe's gRPC ``RepositoryModelLoad``/``Unload``; returns an undo."""
    from kserve.protocol.grpc.servicer import InferenceServicer

    originals = {name: getattr(InferenceServicer, name) for name in ("RepositoryModelLoad", "RepositoryModelUnload")}

    def guarded(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def method(self: InferenceServicer, request: Any, context: Any) -> Any:
            await check(context)
            return await original(self, request, context)

        return method

    for name, original in originals.items():
        setattr(InferenceServicer, name, guarded(original))

    def undo() -> None:
        for name, original in originals.items():
            setattr(InferenceServicer, name, original)

    return undo


class GrpcHealthAnswers(Protocol):
    """What the gRPC health RPCs answer (:class:`predictor.grpc_guard.GrpcHealth`)."""

    def live(self) -> bool: ...

    def ready(self) -> bool: ...

    def model_ready(self, name: str, version: str) -> bool: ...


def answer_grpc_health(answers: GrpcHealthAnswers) -> Callable[[], None]:
    """Make KServe's gRPC ``ServerLive``, ``ServerReady`` and ``ModelReady`` answer from ``answers``; returns an
    undo. ``model_ready`` may raise a ``grpc_interceptor`` exception (KServe's interceptor makes it the status)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.servicer import InferenceServicer

    async def server_live(self: InferenceServicer, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=answers.live())

    async def server_ready(self: InferenceServicer, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=answers.ready())

    async def model_ready(self: InferenceServicer, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=answers.model_ready(request.name, request.version))

    ours = {"ServerLive": server_live, "ServerReady": server_ready, "ModelReady": model_ready}
    originals = {name: getattr(InferenceServicer, name) for name in ours}
    for name, method in ours.items():
        setattr(InferenceServicer, name, method)

    def undo() -> None:
        for name, original in originals.items():
            setattr(InferenceServicer, name, original)

    return undo


def grpc_input_raw(infer_input: Any) -> bytes | None:
    """The raw bytes a gRPC input arrived with (``raw_input_contents``), or None if it came as contents."""
    raw = getattr(infer_input, "_raw_data", None)
    return bytes(raw) if raw is not None else None


def http_parameters(parameters: Any) -> dict[str, Any] | None:
    """Request or input parameters as a plain dict (gRPC's ``InferParameter`` maps converted)."""
    if not parameters:
        return None
    if isinstance(parameters, dict):
        return parameters
    from kserve.protocol.infer_type import to_http_parameters

    return to_http_parameters(parameters)


def configure_grpc_server(options: Iterable[tuple[str, Any]], interceptors: Iterable[Any]) -> Callable[[], None]:
    """Make KServe's gRPC server use ``options`` (over its own) and ``interceptors`` (after its own, less its
    per-call ``LoggingInterceptor``); returns a function that undoes it."""
    from kserve.protocol.grpc import server as grpc_server
    from kserve.protocol.grpc.interceptors import LoggingInterceptor

    original = grpc_server.aio
    ours, extra = dict(options), list(interceptors)

    class _AioWithOurs:
        """``grpc.aio`` as KServe's server module sees it: the same, but ``server()`` gets our settings."""

        def __getattr__(self, name: str) -> Any:
            return getattr(original, name)

        @staticmethod
        def server(*args: Any, interceptors: Any = None, options: Any = None, **kwargs: Any) -> Any:
            merged = {**dict(options or ()), **ours}
            kept = [i for i in interceptors or () if not isinstance(i, LoggingInterceptor)]  # an INFO line per call
            return original.server(*args, interceptors=[*kept, *extra], options=list(merged.items()), **kwargs)

    grpc_server.aio = _AioWithOurs()

    def undo() -> None:
        grpc_server.aio = original

    return undo
