"""The serving entry point: builds the pipeline, the KServe model and our routes, then runs KServe."""

from __future__ import annotations

import logging

from predictor.config import Settings
from predictor.logs import configure_logging

logger = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    """Load the model and serve it until SIGTERM (in-flight and queued requests finish first)."""
    configure_logging(settings.log_format, settings.log_level)
    from predictor import kserve_compat, routes, ui
    from predictor.gpu_metrics import register_gpu_metrics
    from predictor.grpc_guard import CallLimit, server_options
    from predictor.metrics import PredictorMetrics
    from predictor.model import ImageClassifierModel
    from predictor.pipeline import Pipeline

    kserve_compat.check_version()
    model_server = kserve_compat.import_model_server()
    kserve_compat.drop_timing_middleware()
    app = model_server.app
    metrics = PredictorMetrics()
    pipeline = Pipeline(settings, metrics)
    model = ImageClassifierModel(settings, pipeline)
    routes.install(app, settings, pipeline, metrics)
    ui.install(app, settings, pipeline)
    if settings.redis_url:
        _install_jobs(app, settings)
    register_gpu_metrics()
    if settings.enable_grpc:
        limit = CallLimit(settings.grpc_max_pending_rpcs, pipeline.admission.retry_after_s)
        kserve_compat.configure_grpc_server(server_options(settings), [limit])
    try:
        model.load()
    except (FileNotFoundError, ValueError, OSError) as e:
        logger.error("cannot load the model from %s: %s", settings.model_dir, e)
        raise SystemExit(1) from None
    server = model_server.ModelServer(
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
    # KServe has drained and stopped the model: wait for a background check still inside native code (an
    # engine being compiled) before the interpreter exits, or the C++ runtime aborts the process.
    pipeline.join_background_work()


def _install_jobs(app, settings: Settings) -> None:
    from predictor.queue.jobs import JobQueue
    from predictor.queue.routes import job_router

    queue = JobQueue(settings)
    app.include_router(job_router(queue, settings))
    app.router.on_shutdown.append(queue.close)
