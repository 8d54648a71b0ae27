"""Prometheus metrics of the predictor, all under the ``classifier_`` prefix.

KServe's own histograms (``request_predict_seconds`` ...) stay as they are. Label sets are bounded:
model name, protocol (classify, v2, v1, jobs), status code, rejection reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

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
            "(lowered to the largest batch that fit after an out-of-memory error, raised back step by step).",
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
