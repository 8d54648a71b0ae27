"""What the simulator reads from the rendered chart: :class:`ChartPlan` and its parts.

Equality of two plans means "the same model": fields that are read only for the report compare equal
whatever their value (``compare=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PredictorSettings:
    """The predictor settings the pod model uses (from the container's flags, env, then defaults)."""

    max_batch_size: int
    max_batch_delay_ms: float
    max_queue_images: int
    request_timeout_ms: int
    max_images_per_request: int
    max_queue_wait_ms: int
    # Below: read for the report; the capacity profile, not these, sets the pod's speed.
    grace_period_seconds: int = field(compare=False)
    device: str = field(compare=False)
    precision: str = field(compare=False)
    backend: str = field(compare=False)
    jpeg_decode: str = field(compare=False)

    @property
    def queue_wait_budget_s(self) -> float:
        """The queue-wait budget in force (``max_queue_wait_ms``, at most ``request_timeout_ms``), seconds."""
        return min(self.max_queue_wait_ms, self.request_timeout_ms) / 1000.0


@dataclass(frozen=True)
class KnativeScaling:
    """KPA knobs on the revision (None: the cluster's config-autoscaler default applies)."""

    metric: str
    target: float | None
    container_concurrency: int
    target_utilization: float | None
    window_s: float | None
    panic_window_pct: float | None
    panic_threshold_pct: float | None
    scale_down_delay_s: float
    initial_scale: int | None
    revision_timeout_s: float
    activation_scale: int | None = None  # least pods while the revision has traffic (a wake asks for it at once)


@dataclass(frozen=True)
class HpaMetric:
    """One HPA metric: a resource utilisation, or an external value KEDA serves."""

    signal: str  # cpu | memory | queue_depth | inflight | gpu_util
    target: float  # utilisation percent, or the external threshold
    aggregation: str = "avg"  # of the external query over the predictor's pods
    target_type: str = "Utilization"  # Utilization | AverageValue | Value
    query: str = ""


@dataclass(frozen=True)
class KedaScaling:
    """The ScaledObject KServe creates: KEDA defaults except what the InferenceService sets."""

    polling_s: float = 30.0
    cooldown_s: float = 300.0
    activation_threshold: float = 0.0


@dataclass(frozen=True)
class HttpAddonScaling:
    """The KEDA HTTP add-on's ``HTTPScaledObject``: what its interceptor and scaler do for this predictor.

    The interceptor proxies every request; while the Deployment has no ready pod it holds each one up to
    ``condition_wait_s`` (then 504), and sends them all on once a pod is ready. The scaler reports the
    requests in flight at the interceptor (``concurrency``) or their rate over ``window_s``
    (``requestRate``, rounded up); KEDA wakes the Deployment as soon as that is above 0 (the add-on's trigger
    is ``external-push``) and takes it to zero ``scaledown_s`` after it was last above 0; in between, KEDA's
    HPA aims at ``target`` per pod (an AverageValue).
    """

    metric: str  # concurrency | requestRate
    target: float
    window_s: float
    scaledown_s: float
    condition_wait_s: float  # inf: the interceptor's default (no readiness deadline of its own)
    response_header_s: float = field(compare=False)


@dataclass(frozen=True)
class PodSpec:
    """Scheduling and lifecycle facts of one predictor pod."""

    cpu_request: float
    memory_request: float
    gpu_resource: str | None = field(compare=False)
    gpus: int
    prefers_spot: bool = field(compare=False)  # Karpenter picks spot whenever the NodePool allows it
    tolerates_spot: bool = field(compare=False)
    storage_uri: str = field(compare=False)  # only whether there is one matters (a download at start)
    startup_period_s: float
    readiness_period_s: float
    termination_grace_s: float


@dataclass(frozen=True)
class NodePoolSpec:
    """The Karpenter NodePool the chart creates for the predictor."""

    capacity_types: tuple[str, ...]
    families: tuple[str, ...]
    instance_types: tuple[str, ...]
    limits: tuple[tuple[str, float], ...]
    consolidate_after_s: float = 0.0
    budget_nodes: str = "10%"


@dataclass(frozen=True)
class ChartPlan:
    """Everything the simulator reads from the rendered chart (names excluded, so equality means "same model")."""

    mode: str  # knative | standard
    autoscaler: str  # kpa | hpa | keda | httpAddon | none
    min_replicas: int
    max_replicas: int
    settings: PredictorSettings
    pod: PodSpec
    knative: KnativeScaling | None = None
    hpa_metrics: tuple[HpaMetric, ...] = ()
    keda: KedaScaling | None = None
    nodepool: NodePoolSpec | None = None
    scrape_interval_s: float | None = None
    http_addon: HttpAddonScaling | None = None
    canary: tuple[tuple[str, Any], ...] = field(default=(), compare=False)  # listed, not simulated
    unmodelled: tuple[str, ...] = field(default=(), compare=False)
