"""The serving entry point: builds the pipeline, the KServe model and our routes, then runs KServe."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from predictor.config import Settings
from predictor.logs import configure_logging, rejection_log

if TYPE_CHECKING:
    from predictor.http_guard import ConnectionLimits
    from predictor.metrics import PredictorMetrics
    from predictor.shed import HeadRefusal

logger = logging.getLogger(__name__)


@dataclass
class Built:
    """The parts :func:`serve` runs: our app (KServe serves it), the pipeline, the model, KServe's server,
    and the refusal the HTTP server makes on a request's head."""

    app: Any
    pipeline: Any
    model: Any
    server: Any
    head_refusal: Any = None


def build(settings: Settings) -> Built:
    """Everything but loading and serving: our app with our routes, the model, KServe's ``ModelServer``.

    KServe adds its own routes when its server starts; :func:`predictor.route_table.settle_kserve_routes`
    then keeps, guards or drops each of them (hooked here, once per process).
    """
    from predictor import http_guard, kserve_compat, route_table, routes, ui
    from predictor.admin import AdminToken, refuse_grpc_repository
    from predictor.metrics import PredictorMetrics
    from predictor.model import ImageClassifierModel
    from predictor.pipeline import Pipeline

    kserve_compat.check_version()
    model_server = kserve_compat.import_model_server()
    kserve_compat.drop_timing_middleware()
    http_guard.check_version()
    version = kserve_compat.kserve_version()
    app = kserve_compat.replace_app(model_server, route_table.build_app(settings, version))
    token = AdminToken(settings.admin_token_file) if settings.admin_token_file else None
    admin = token.require if token is not None else _no_admin
    kserve_compat.after_kserve_routes(lambda app, added: route_table.settle_kserve_routes(app, added, settings, admin))
    kserve_compat.guard_grpc_repository(refuse_grpc_repository)
    metrics = PredictorMetrics()
    pipeline = Pipeline(settings, metrics)
    # One rejection log: a flood is a few lines per interval whichever protocol it comes by.
    rejections = rejection_log(settings.rejection_log_interval_seconds)
    model = ImageClassifierModel(settings, pipeline, rejections)
    head_refusal = routes.install(app, settings, pipeline, metrics, rejections)
    ui.install(app, settings, pipeline)
    if settings.redis_url:
        _install_jobs(app, settings)
    server = model_server.ModelServer(
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        workers=1,
        enable_grpc=settings.enable_grpc,
        max_asyncio_workers=settings.max_asyncio_workers,
        enable_docs_url=settings.enable_docs_url,
        enable_latency_logging=False,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        grace_period=settings.grace_period_seconds,
    )
    return Built(app, pipeline, model, server, head_refusal)


async def _no_admin() -> None:  # pragma: no cover - never mounted: no admin route exists without a token
    raise RuntimeError("an admin route was mounted without an admin token")


def serve(settings: Settings) -> None:
    """Load the model and serve it until SIGTERM (in-flight and queued requests finish first)."""
    configure_logging(settings.log_format, settings.log_level)
    from predictor.gpu_metrics import register_gpu_metrics

    if settings.enable_model_repository_routes and settings.admin_token_file is not None:
        from predictor.admin import AdminToken, AdminTokenUnavailable

        try:
            AdminToken(settings.admin_token_file).check_startup()
        except AdminTokenUnavailable:
            logger.error(
                "enable_model_repository_routes: admin_token_file %s is unreadable or empty", settings.admin_token_file
            )
            raise SystemExit(1) from None
    from predictor import http_guard, kserve_compat

    built = build(settings)
    register_gpu_metrics()
    limits = _limits(settings, built.pipeline.metrics, built.head_refusal)
    kserve_compat.configure_http_server(lambda config: http_guard.configure(config, limits))
    from predictor.open_files import ensure_open_files

    ensure_open_files(settings)  # above the HTTP and gRPC connection caps, so neither port starves the other
    if settings.enable_grpc:
        from predictor.grpc_guard import CallLimit, GrpcHealth, server_options
        from predictor.health import Health

        call_limit = CallLimit(
            settings.grpc_max_pending_rpcs,
            built.pipeline.admission.retry_after_s,
            on_refusal=_call_refused(settings, built.pipeline.metrics),
        )
        kserve_compat.configure_grpc_server(server_options(settings), [call_limit])
        kserve_compat.answer_grpc_health(GrpcHealth(Health(settings, built.pipeline)))
    try:
        built.model.load()
    except (FileNotFoundError, ValueError, OSError) as e:
        logger.error("cannot load the model from %s: %s", settings.model_dir, e)
        raise SystemExit(1) from None
    from predictor.lifecycle import freeze_startup_heap

    freeze_startup_heap()
    if settings.http_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.http_metrics_port)
        logger.info("metrics on :%d (and not on :%d)", settings.http_metrics_port, settings.http_port)
    loop = kserve_compat.serve_on_uvloop()
    logger.info("serving %s on :%d (event loop: %s)", settings.model_name, settings.http_port, loop)
    built.server.start([built.model])


def route_listing(settings: Settings) -> list[dict[str, Any]]:
    """The routes ``serve`` with these settings answers, built as it builds them, without loading or serving
    (``python -m predictor routes``)."""
    from predictor import kserve_compat
    from predictor.route_table import mounted_routes

    built = build(settings)
    kserve_compat.register_kserve_routes(built.server, settings.http_port)
    return [r.as_json() for r in mounted_routes(built.app)]


def _call_refused(settings: Settings, metrics: PredictorMetrics) -> Callable[[], None]:
    """What a gRPC call refused at ``grpc_max_pending_rpcs`` counts: a rejection (``too_many_calls``) and an
    answered gRPC request with the HTTP status of a busy server (503)."""

    def count() -> None:
        metrics.rejections.labels(settings.model_name, "too_many_calls").inc()
        metrics.observe_request(settings.model_name, "grpc", 503, 0.0)

    return count


def _limits(settings: Settings, metrics: PredictorMetrics, head_refusal: HeadRefusal) -> ConnectionLimits:
    """The HTTP server's connection limits; each refusal is counted as a rejection. Overloaded inference
    requests are refused on their head (:mod:`predictor.shed`)."""
    from predictor.http_guard import ConnectionLimits

    rejections = metrics.rejections

    def count(reason: str) -> None:
        rejections.labels(settings.model_name, reason).inc()

    return ConnectionLimits(
        header_timeout_s=settings.header_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        max_connections=settings.max_connections,
        on_refusal=count,
        answer_on_head=head_refusal.answer,
    )


def _install_jobs(app, settings: Settings) -> None:
    from predictor.kserve_compat import include_flat
    from predictor.queue.jobs import JobQueue
    from predictor.queue.routes import job_router

    queue = JobQueue(settings)
    include_flat(app, job_router(queue, settings))
    app.router.on_shutdown.append(queue.close)
