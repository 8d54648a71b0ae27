"""Prometheus metrics of the queue worker (served on ``Settings.metrics_port``)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from predictor.metrics import PREFIX

# Submit → result: a fraction of a second when the queue is empty, up to hours for a large backlog.
JOB_DURATION_BUCKETS_SECONDS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
)
OUTCOMES = ("ok", "error", "dead_letter")
"""Values of the ``outcome`` label of ``classifier_worker_jobs_total``."""


class WorkerMetrics:
    """The worker's metrics, registered once per process (or per test registry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        self.stream_length = Gauge(
            f"{PREFIX}_worker_stream_length",
            "Jobs in the stream not finished yet (XLEN).",
            ["stream"],
            registry=r,
        )
        self.pending = Gauge(
            f"{PREFIX}_worker_pending_jobs",
            "Jobs delivered to a worker and not acknowledged (XPENDING).",
            ["stream", "group"],
            registry=r,
        )
        self.job_duration = Histogram(
            f"{PREFIX}_worker_job_duration_seconds",
            "Time from a job's submission to its result.",
            buckets=JOB_DURATION_BUCKETS_SECONDS,
            registry=r,
        )
        self.jobs = Counter(
            f"{PREFIX}_worker_jobs_total",
            "Jobs finished, by outcome (ok, error, dead_letter).",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self.jobs.labels(outcome)
