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
3. :func:`prefer_routes`: our ``POST /v2/models/{name}/infer`` (KServe's binary decoder refuses raw image
   bytes) and the try-it page on ``/`` (KServe answers ``/`` with liveness) must win over KServe's routes
   for the same paths. Starlette matches routes in list order and KServe adds its own when the server
   starts, so ours are moved to the front at start-up, whatever the registration order.
4. :func:`grpc_input_raw` and :func:`http_parameters`: KServe's ``InferRequest`` built from a gRPC
   ``ModelInferRequest`` keeps each input's ``raw_input_contents`` in the private ``_raw_data``; its
   gRPC parameters stay protobuf ``InferParameter`` maps, converted with KServe's ``to_http_parameters``.
5. gRPC errors: KServe's ``ExceptionToStatusInterceptor`` aborts with the code and details of a
   ``grpc_interceptor`` exception it is given; :func:`predictor.protocol.status.grpc_error` makes those
   from our errors, so no KServe error type is dressed up for it.
6. :func:`configure_grpc_server`: ``GRPCServer.start`` (``kserve.protocol.grpc.server``) builds its
   ``grpc.aio`` server with KServe's interceptors and only the two message-size options, taken from its
   own argv defaults (8 MiB), and no stream cap. The module's ``aio`` is replaced by a shim whose
   ``server()`` adds our options (they win over KServe's) and appends our interceptors (inside KServe's,
   so its ``ExceptionToStatusInterceptor`` still turns our exceptions into statuses).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import version
from types import ModuleType
from typing import Any

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


def prefer_routes(app: Any, routes: Iterable[Any]) -> None:
    """Move ``routes`` (route objects of ``app.router``) ahead of all others when the app starts."""
    ours = list(routes)

    def move_to_front() -> None:
        rest = [r for r in app.router.routes if all(r is not o for o in ours)]
        app.router.routes[:] = [*ours, *rest]

    app.router.on_startup.append(move_to_front)


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
    """Make KServe's gRPC server use ``options`` (over its own) and ``interceptors`` (after its own);
    returns a function that undoes it."""
    from kserve.protocol.grpc import server as grpc_server

    original = grpc_server.aio
    ours, extra = dict(options), list(interceptors)

    class _AioWithOurs:
        """``grpc.aio`` as KServe's server module sees it: the same, but ``server()`` gets our settings."""

        def __getattr__(self, name: str) -> Any:
            return getattr(original, name)

        @staticmethod
        def server(*args: Any, interceptors: Any = None, options: Any = None, **kwargs: Any) -> Any:
            merged = {**dict(options or ()), **ours}
            return original.server(*args, interceptors=[*(interceptors or ()), *extra], options=list(merged.items()),
                                   **kwargs)  # fmt: skip

    grpc_server.aio = _AioWithOurs()

    def undo() -> None:
        grpc_server.aio = original

    return undo
