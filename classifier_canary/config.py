"""The canary analysis' configuration: steps, interval, thresholds, where the InferenceService lives.

One pydantic model, mapped one to one onto the ``python -m predictor canary`` flags (``--max-error-ratio``
is ``max_error_ratio``; durations are given as ``10m``/``30s`` and stored in seconds) and onto the chart's
``canaryAnalysis.*`` values.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""The settings' precision names -> the dtype names ``classifier_model_info`` exports."""


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a Go/Prometheus-style duration (``10m``, ``1h30m``, ``2.5s``) or a bare number.

    Raises:
        ValueError: ``text`` is neither.
    """
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration: use seconds (30) or units ms, s, m, h (10m, 1h30m)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """A Prometheus range duration for ``seconds`` (whole seconds, rounded up): 300 -> ``5m``, 90 -> ``1m30s``."""
    total = max(1, int(-(-seconds // 1)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return out


class CanaryConfig(BaseModel):
    """Everything one analysis run needs. Invalid values raise pydantic's ``ValidationError``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    isvc: str = Field(description="Name of the InferenceService.")
    namespace: str = Field("default", description="Its namespace.")
    prometheus_url: str = Field(description="Base URL of the Prometheus that scrapes the predictor.")
    steps: tuple[int, ...] = Field(
        (10, 25, 50, 100),
        description="Canary traffic percentages, strictly increasing, ending at 100 (the promotion).",
    )
    step_interval_seconds: float = Field(
        600, ge=1, le=86400, description="Time at each step before its check; also the query window."
    )
    max_error_ratio: float = Field(0.01, ge=0, le=1, description="Highest share of 5xx answers of the canary.")
    max_shed_ratio: float = Field(0.01, ge=0, le=1, description="Highest share of 503 (load shed) answers.")
    max_client_error_increase: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest amount by which the canary's share of 4xx answers may exceed the stable's.",
    )
    max_p95_ratio: float = Field(1.25, ge=1, le=100, description="Highest canary p95 / stable p95 latency.")
    min_p95_increase_seconds: float = Field(
        0.05,
        ge=0,
        le=60,
        description="The p95 check fails only when the canary's p95 also exceeds the stable's by more than this "
        "(neighbouring histogram buckets, 25 -> 50 ms, are not a regression); 0 = the ratio alone.",
    )
    min_requests: int = Field(200, ge=1, description="Fewest requests each revision must answer in a window.")
    max_failed_checks: int = Field(2, ge=1, le=100, description="Failed checks that trigger the rollback.")
    count_failed_checks: Literal["consecutive", "total"] = Field(
        "consecutive",
        description="consecutive: max_failed_checks failed checks in a row roll back (a pass starts again from "
        "0); total: failed checks add up over the whole run (the behaviour before 'consecutive').",
    )
    on_monitoring_outage: Literal["rollback", "hold"] = Field(
        "rollback",
        description="A check that cannot reach Prometheus (or gets an error from it): rollback counts it as a "
        "failed check (safe: nobody promotes what nobody watched, but an outage rolls back a healthy canary); "
        "hold keeps the traffic where it is and checks again, uncounted, until Prometheus answers (a broken "
        "canary keeps its share unwatched meanwhile).",
    )
    skip_live_quality: bool = Field(
        False,
        description="Judge without the live answer comparison (a stable older than classifier_predictions_total).",
    )
    max_class_divergence: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Highest Jensen-Shannon divergence (base 2, 0..1) of the canary's top-1 class mix from the "
        "stable's in a window.",
    )
    max_confidence_shift: float = Field(
        0.05, ge=0, le=1, description="Largest difference of the canary's mean top-1 confidence from the stable's."
    )
    min_quality_predictions: int = Field(
        200, ge=1, description="Fewest images each revision must answer in a window for the answer comparison."
    )
    reference_dir: Path | None = Field(
        None,
        description="Directory of reference images sent to both revisions before the first step and at each "
        "check (a ConfigMap or PVC mount in the chart's Job).",
    )
    reference_labels: Path | None = Field(
        None, description="CSV of `image,label` lines: the expected top-1 label of reference images."
    )
    min_reference_agreement: float = Field(
        0.95, ge=0, le=1, description="Least share of reference images on which the canary answers as the stable."
    )
    max_reference_accuracy_drop: float = Field(
        0.02, ge=0, le=1, description="Largest amount by which the canary's reference accuracy may trail the stable's."
    )
    stable_url: str | None = Field(
        None, description="The stable revision's own address for the reference set (default: its cluster Service)."
    )
    canary_url: str | None = Field(
        None, description="The canary revision's own address for the reference set (default: its cluster Service)."
    )
    reference_timeout_seconds: float = Field(30, gt=0, le=600, description="Timeout of one reference request.")
    max_no_data_checks: int = Field(
        3, ge=1, le=100, description="Consecutive 'not enough data' checks at a step that count as one failed check."
    )
    expect_version: str | None = Field(None, min_length=1, description="Model version the canary must serve.")
    expect_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="dtype the canary must serve (classifier_model_info's dtype; fp32, bf16, fp16 accepted)."
    )
    ready_timeout_seconds: float = Field(
        600, ge=0, le=86400, description="Longest wait for the canary to be ready before the first step."
    )
    poll_interval_seconds: float = Field(5, gt=0, le=600, description="Re-read period while waiting for ready.")
    prometheus_timeout_seconds: float = Field(10, gt=0, le=300, description="Timeout of one Prometheus request.")
    dry_run: bool = Field(False, description="Print the patches instead of applying them.")
    log_format: Literal["text", "json"] = Field("text", description="Decision log: one text or JSON line each.")
    skip_without_canary: bool = Field(False, description="Exit 0 (not 2) when there is no canary to analyse.")
    isvc_file: Path | None = Field(
        None, description="Work on a YAML file instead of a cluster (patches applied by `kubectl patch --local`)."
    )
    kubeconfig: Path | None = Field(None, description="kubeconfig file; default: in-cluster, then ~/.kube/config.")
    context: str | None = Field(None, description="kubeconfig context.")
    crd: Literal["auto", "cluster", "shipped"] = Field(
        "auto",
        description="CRD the patches are validated against: the cluster's (needs `get` on the CRD), the one "
        "shipped in classifier_kube/crds, or auto (the cluster's when readable, else the shipped one).",
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if len(steps) < 2:
            raise ValueError(f"need at least one step below 100 and then 100, got {list(steps)}")
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError(f"every step must be a percentage in 1..100, got {list(steps)}")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must be strictly increasing, got {list(steps)}")
        if steps[-1] != 100:
            raise ValueError(f"the last step must be 100 (the promotion), got {list(steps)}")
        return steps

    @field_validator("expect_dtype", mode="before")
    @classmethod
    def _dtype_alias(cls, value: object) -> object:
        return DTYPE_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("isvc", "namespace")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        if len(name) > 63 or not re.match(DNS1123_LABEL, name):
            raise ValueError(f"{name!r} is not a Kubernetes name (lower-case letters, digits and '-', at most 63)")
        return name

    @field_validator("stable_url", "canary_url")
    @classmethod
    def _revision_url(cls, url: str | None) -> str | None:
        return None if url is None else cls._url(url)

    @model_validator(mode="after")
    def _reference(self) -> CanaryConfig:
        if self.reference_labels is not None and self.reference_dir is None:
            raise ValueError("reference_labels needs reference_dir (the images the labels are of)")
        return self

    @field_validator("prometheus_url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", url):
            raise ValueError(f"{url!r} is not an http:// or https:// base URL (e.g. http://prometheus-operated:9090)")
        return url.rstrip("/")
