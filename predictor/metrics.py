"""Prometheus metrics of the predictor, all under the ``classifier_`` prefix.

KServe's own histograms (``request_predict_seconds`` ...) stay as they are. Label sets are bounded:
model name, protocol (classify, v2, v1, jobs), status code, rejection reason.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

PREFIX = "classifier"

# Latency of a whole request: ~5 ms (warm, one image on GPU) to the 30 s default deadline.
REQUEST_BUCKETS_SECONDS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    30.0,
)
# One forward pass or one wait in the queue: sub-millisecond to a few seconds.
STAGE_BUCKETS_SECONDS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)
# Top-1 probability of one image: finer near 1, where a confident model's answers crowd.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

PROTOCOLS = ("classify", "v2", "v1", "jobs", "grpc")
"""Values of the ``protocol`` label (the HTTP middleware's protocols, and gRPC)."""
RESPONSE_CODES = ("200", "202", "400", "401", "403", "404", "408", "413", "415", "499", "500", "503", "504", "507")
"""Status codes the predictor answers with (each :class:`~predictor.errors.PredictorError`'s, 200, 202 for
a job submission, 499 for a client that left, 500 for an unexpected fault); a test holds it to the errors."""
REJECTION_REASONS = (
    "invalid_input",
    "too_large",
    "unsupported_media_type",
    "model_not_found",
    "queue_full",
    "not_ready",
    "deadline",
    "insufficient_memory",
    "engine_broken",
    "inference_failed",
    "internal",
    "job_not_found",
    "queue_unavailable",
    "unauthenticated",
    "forbidden",
    "admin_token_unavailable",
    "body_timeout",
    "not_live",
)
"""Values of the ``reason`` label of ``classifier_rejections_total``: every ``PredictorError.reason``."""
CONNECTION_REJECTION_REASONS = ("header_timeout", "header_too_large", "too_many_connections", "too_many_calls")
"""Reasons the servers' guards count, not errors of a request: the HTTP server's connection guard
(:mod:`predictor.http_guard`) and the gRPC server's call limit (``too_many_calls``, :mod:`predictor.grpc_guard`)."""
JPEG_FALLBACK_REASONS = ("device_error", "shape")
OTHER_CLASS = "other"
"""The ``class`` label of the top-1 answers whose class id is at or past ``prediction_metrics_max_classes``."""


def class_series_names(labels: list[str], max_classes: int) -> list[str]:
    """The ``class`` label of each class id below ``max_classes``: the label answered, so a canary whose
    label map differs from the stable's counts its answers under other names. A label that is ``"other"``,
    or that an earlier class already has (ImageNet has two ``crane``), gets ``" (class N)"`` appended:
    every series is one class."""
    out: list[str] = []
    seen = {OTHER_CLASS}
    for i, name in enumerate(labels[:max_classes]):
        out.append(name if name not in seen else f"{name} (class {i})")
        seen.add(out[-1])
    return out


class PredictionCounts(Collector):
    """``classifier_predictions_total{model, class}``: images answered by top-1 class, every class series at
    0 from start-up (so ``increase()`` sees a class's first answer on a new pod).

    A collector of its own rather than a ``Counter``: a model's 1000 classes as labelled children would
    add 2000 lines (``_total`` and ``_created``) built one by one at every scrape, ~60 ms of the event
    loop; this one writes one line per class from a list.
    """

    NAME = f"{PREFIX}_predictions"
    HELP = (
        "Images answered, by top-1 class: the label answered (so a changed label map shows), for class ids "
        f"below prediction_metrics_max_classes; the rest are counted as class={OTHER_CLASS!r}."
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model = ""
        self._names: list[str] = [OTHER_CLASS]
        self._counts: list[float] = [0.0]

    def set_classes(self, model: str, names: list[str]) -> None:
        """The model and its class series (from :func:`class_series_names`), all at 0, plus ``other``."""
        with self._lock:
            self._model, self._names, self._counts = model, [*names, OTHER_CLASS], [0.0] * (len(names) + 1)

    def inc(self, class_id: int) -> None:
        """Count one answer of ``class_id`` (``other`` when at or past the bound)."""
        with self._lock:
            self._counts[min(class_id, len(self._counts) - 1) if class_id >= 0 else -1] += 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=["model", "class"])
        with self._lock:
            rows = list(zip(self._names, self._counts, strict=True))
        for name, count in rows:
            family.add_metric([self._model, name], count)
        yield family


class PredictorMetrics:
    """The predictor's metrics, registered once per process (or per test registry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        self.requests = Counter(
            f"{PREFIX}_requests_total",
            "Requests answered, by protocol and HTTP status code.",
            ["model", "protocol", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from request arrival to response of answered requests (successes and server errors; "
            "4xx and 503 rejections are only counted in requests_total), by protocol.",
            ["model", "protocol"],
            buckets=REQUEST_BUCKETS_SECONDS,
            registry=r,
        )
        self.images = Counter(f"{PREFIX}_images_total", "Images classified successfully.", ["model"], registry=r)
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Images per forward pass.",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth",
            "Images admitted and not yet inferred (the autoscaling signal).",
            ["model"],
            registry=r,
        )
        self.queue_capacity = Gauge(
            f"{PREFIX}_queue_capacity", "Most images that may wait (max_queue_images).", ["model"], registry=r
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time an image waits from admission to its forward pass.",
            ["model"],
            buckets=STAGE_BUCKETS_SECONDS,
            registry=r,
        )
        self.inference = Histogram(
            f"{PREFIX}_inference_seconds",
            "Duration of one forward pass (a whole batch).",
            ["model"],
            buckets=STAGE_BUCKETS_SECONDS,
            registry=r,
        )
        self.preprocess = Histogram(
            f"{PREFIX}_preprocess_seconds",
            "Decode, resize and crop time of one image.",
            ["model"],
            buckets=STAGE_BUCKETS_SECONDS,
            registry=r,
        )
        self.rejections = Counter(
            f"{PREFIX}_rejections_total",
            "Requests refused, by reason (queue_full, invalid_input, ...).",
            ["model", "reason"],
            registry=r,
        )
        self.inflight = Gauge(f"{PREFIX}_inflight_requests", "Requests being handled now.", ["model"], registry=r)
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "Always 1; labels describe the loaded model.",
            ["model", "version", "device", "dtype", "backend"],
            registry=r,
        )
        self.jpeg_device_fallbacks = Counter(
            f"{PREFIX}_jpeg_device_fallbacks_total",
            "JPEGs that jpeg_decode=device could not decode on the device and sent to the CPU decoder, by "
            "reason (device_error: the device decoder raised; shape: it returned other dimensions than the header).",
            ["model", "reason"],
            registry=r,
        )
        self.batch_cap = Gauge(
            f"{PREFIX}_batch_cap",
            "Most images the next forward pass may hold: max_batch_size, or less while device memory is short "
            "(lowered to the largest batch that fit after an out-of-memory error, raised back step by step), "
            "or so that one pass takes at most 1/8 of the queue-wait budget (max_queue_wait_ms).",
            ["model"],
            registry=r,
        )
        self.out_of_memory = Counter(
            f"{PREFIX}_out_of_memory_total",
            "Forward passes that ran out of device memory (each retried as two halves, down to one image).",
            ["model"],
            registry=r,
        )
        self.load_seconds = Gauge(
            f"{PREFIX}_model_load_seconds", "Time taken to load and warm up the model.", ["model"], registry=r
        )
        self.prediction_confidence = Histogram(
            f"{PREFIX}_prediction_confidence",
            "Top-1 probability of each image answered (every protocol and the queue worker).",
            ["model"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.predictions = PredictionCounts()
        r.register(self.predictions)

    def born_at_zero(self, model: str) -> None:
        """Create every counter series ``model`` can emit at 0, so ``rate()`` and ``increase()`` see the first
        event of a new pod (a series born at its first increment hides that increment from them)."""
        for protocol in PROTOCOLS:
            for code in RESPONSE_CODES:
                self.requests.labels(model, protocol, code)
        for reason in (*REJECTION_REASONS, *CONNECTION_REJECTION_REASONS):
            self.rejections.labels(model, reason)
        for reason in JPEG_FALLBACK_REASONS:
            self.jpeg_device_fallbacks.labels(model, reason)
        self.images.labels(model)
        self.out_of_memory.labels(model)
        self.predictions.set_classes(model, [])
        self.prediction_confidence.labels(model)

    def observe_request(self, model: str, protocol: str, code: int, seconds: float) -> None:
        """Count one answered request; time it unless it was a client error or a 503 rejection.

        Rejections answer in milliseconds: timing them would pull the latency quantiles down exactly when
        the server is overloaded (most answers 503) and silence the latency alert. They stay visible in
        ``requests_total`` (and the error-rate alert). A 504 (deadline) and other 5xx are timed.
        """
        self.requests.labels(model, protocol, str(code)).inc()
        if not (400 <= code < 500 or code == 503):
            self.request_duration.labels(model, protocol).observe(seconds)

    def observe_batch(self, model: str, size: int, run_s: float, queue_waits_s: Sequence[float]) -> None:
        """Record one forward pass: its size, its duration and how long each of its images waited for it."""
        self.batch_size.labels(model).observe(size)
        self.inference.labels(model).observe(run_s)
        hist = self.queue_wait.labels(model)
        for w in queue_waits_s:
            hist.observe(w)
