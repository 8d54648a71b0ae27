"""What the simulator assumes about the cluster that the chart does not say (all overridable).

Every field is listed in the report with its value. Override with ``--assume key=value`` (repeatable)
or ``--assumptions FILE.yaml``. Cluster-wide defaults (Knative's ``config-autoscaler``, the HPA
controller's flags) are the upstream defaults; times the upstream projects do not document as numbers
(node launch, image pull) are estimates and say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from classifier_plan.errors import PlanInputError, from_validation


class Assumptions(BaseModel):
    """Cluster facts outside the chart."""

    model_config = ConfigDict(extra="forbid")

    node_launch_s: float = Field(
        90.0, ge=0, description="EC2 launch to node Ready with GPU drivers (estimate: 1-3 min)"
    )
    image_pull_s: float = Field(
        60.0, ge=0, description="predictor image pull on a fresh node (estimate: ~6 GB CUDA image)"
    )
    image_cached_pull_s: float = Field(1.0, ge=0, description="image already on the node")
    model_download_mb_per_s: float = Field(100.0, gt=0, description="storage initializer download speed (estimate)")
    storage_init_overhead_s: float = Field(4.0, ge=0, description="storage-initializer container start and exit")
    model_bytes: int | None = Field(None, ge=0, description="model size; default: the capacity profile's model")
    scheduling_s: float = Field(1.0, ge=0, description="pending pod to bound on a node with room")
    endpoint_propagation_s: float = Field(2.0, ge=0, description="a pod's readiness or removal reaching the routers")
    karpenter_batch_idle_s: float = Field(1.0, ge=0, description="Karpenter BATCH_IDLE_DURATION")
    karpenter_batch_max_s: float = Field(10.0, ge=0, description="Karpenter BATCH_MAX_DURATION")
    spot_interruptions_per_node_hour: float | None = Field(
        None, ge=0, description="spot reclaim rate; default: the price file's monthly band / 730 h"
    )
    spot_notice_s: float = Field(120.0, ge=0, description="spot interruption notice")
    default_capacity_type: Literal["on-demand", "spot"] = Field(
        "on-demand", description="capacity type of nodes when the chart renders no NodePool"
    )
    instance_type: str | None = Field(None, description="force one instance type (default: cheapest that fits)")
    daemonset_cpu: float = Field(0.2, ge=0, description="cores the node's daemonsets request (estimate)")
    daemonset_memory_gib: float = Field(0.5, ge=0, description="memory the node's daemonsets request (estimate)")
    knative_concurrency_target_default: float = Field(100.0, gt=0, description="container-concurrency-target-default")
    knative_rps_target_default: float = Field(200.0, gt=0, description="requests-per-second-target-default")
    knative_target_utilization: float = Field(0.7, gt=0, le=1, description="container-concurrency-target-percentage")
    knative_stable_window_s: float = Field(60.0, ge=6, le=3600, description="stable-window")
    knative_panic_window_pct: float = Field(10.0, ge=1, le=100, description="panic-window-percentage")
    knative_panic_threshold_pct: float = Field(200.0, ge=110, description="panic-threshold-percentage")
    knative_max_scale_up_rate: float = Field(1000.0, gt=1, description="max-scale-up-rate")
    knative_max_scale_down_rate: float = Field(2.0, gt=1, description="max-scale-down-rate")
    knative_scale_to_zero_grace_s: float = Field(30.0, ge=0, description="scale-to-zero-grace-period")
    knative_initial_scale: int = Field(1, ge=0, description="initial-scale")
    knative_allow_zero_initial_scale: bool = Field(
        False, description="allow-zero-initial-scale: whether a revision's initial-scale 0 is honoured (else 1)"
    )
    hpa_tolerance: float = Field(0.1, ge=0, lt=1, description="--horizontal-pod-autoscaler-tolerance")
    hpa_sync_s: float = Field(15.0, gt=0, description="--horizontal-pod-autoscaler-sync-period")
    scrape_interval_s: float | None = Field(None, gt=0, description="Prometheus scrape; default: the PodMonitor's")
    seed: int = Field(0, description="random seed (arrivals, spot interruptions, probe phases)")


def load_assumptions(file: str | Path | None, overrides: list[str]) -> Assumptions:
    """Defaults, then the YAML file, then ``key=value`` overrides.

    Raises:
        PlanInputError: unknown key or bad value (names the file or ``--assume``).
    """
    data: dict[str, Any] = {}
    source = "--assume"
    if file:
        source = str(file)
        try:
            loaded = yaml.safe_load(Path(file).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise PlanInputError(str(file), "", f"cannot read assumptions: {e}") from None
        if not isinstance(loaded, dict):
            raise PlanInputError(str(file), "", "assumptions are a mapping of key: value")
        data.update(loaded)
    for item in overrides:
        if "=" not in item:
            raise PlanInputError("--assume", item, "takes KEY=VALUE, e.g. --assume node_launch_s=120")
        k, v = item.split("=", 1)
        data[k.strip()] = yaml.safe_load(v)
        source = "--assume"
    try:
        return Assumptions.model_validate(data)
    except ValidationError as e:
        raise from_validation(source, e, Assumptions) from None
