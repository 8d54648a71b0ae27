"""The serving entry point: builds the pipeline, the KServe model and our routes, then runs KServe."""

from __future__ import annotations

import logging
import sys

from predictor.config import Settings
from predictor.logs import configure_logging

logger = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    """Load the model and serve it until SIGTERM (in-flight and queued requests finish first)."""
    configure_logging(settings.log_format, settings.log_level)
    if settings.workers != 1:
        raise SystemExit(
            f"--workers {settings.workers}: one process per pod serves one model (each worker would load "
            "its own copy and our routes live in this process); scale with replicas instead"
        )
    # kserve.model_server parses sys.argv at import time: give it nothing of ours to misread.
    sys.argv = [*sys.argv[:1], "--configure_logging", "false"]
    from kserve.model_server import ModelServer, app

    from predictor import routes, ui
    from predictor.metrics import PredictorMetrics
    from predictor.model import ImageClassifierModel
    from predictor.pipeline import Pipeline

    _drop_kserve_timing_middleware()
    metrics = PredictorMetrics()
    pipeline = Pipeline(settings, metrics)
    model = ImageClassifierModel(settings, pipeline)
    routes.install(app, settings, pipeline, metrics)
    ui.install(app, settings, pipeline)
    if settings.redis_url:
        _install_jobs(app, settings)
    _install_gpu_metrics()
    try:
        model.load()
    except (FileNotFoundError, ValueError, OSError) as e:
        logger.error("cannot load the model from %s: %s", settings.model_dir, e)
        raise SystemExit(1) from None
    server = ModelServer(
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        workers=1,
        enable_grpc=settings.enable_grpc,
        max_asyncio_workers=settings.max_asyncio_workers,
        enable_docs_url=settings.enable_docs_url,
        enable_latency_logging=False,
        grace_period=settings.grace_period_seconds,
    )
    logger.info("serving %s on :%d", settings.model_name, settings.http_port)
    server.start([model])


def _drop_kserve_timing_middleware() -> None:
    """Keep KServe's REST middlewares except ``timing_asgi.TimingMiddleware``.

    It calls ``getrusage`` twice per request to log CPU and wall time to the ``kserve.trace`` logger,
    which we do not configure (our own metrics time every request): measured at ~27 % of the event
    loop's time at 680 requests/s (py-spy), the largest single cost of the HTTP path. kserve is pinned
    (``kserve==0.21.0``); ``tests/integration/test_protocols.py`` checks the middleware is gone.
    """
    from kserve.protocol.rest.server import RESTServer
    from timing_asgi import TimingMiddleware

    original = RESTServer._add_middlewares
    if getattr(original, "_drops_timing", False):
        return

    def add_middlewares(self: RESTServer, app) -> None:
        original(self, app)
        app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]

    add_middlewares._drops_timing = True  # type: ignore[attr-defined]
    RESTServer._add_middlewares = add_middlewares  # type: ignore[method-assign]


def _install_jobs(app, settings: Settings) -> None:
    from predictor.queue.jobs import JobQueue
    from predictor.queue.routes import job_router

    queue = JobQueue(settings)
    app.include_router(job_router(queue, settings))
    app.router.on_shutdown.append(queue.close)


def _install_gpu_metrics() -> None:
    try:
        from predictor.gpu_metrics import register_gpu_metrics
    except ImportError:  # pragma: no cover - module optional until observability lands
        return
    register_gpu_metrics()
