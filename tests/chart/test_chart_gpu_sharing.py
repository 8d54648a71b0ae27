"""The GPU-sharing profiles (chart/ci/gpu-mig-values.yaml, gpu-timeslicing-values.yaml): what a pod asks for.

Both profiles are also rendered, schema-validated and checkov-scanned with every other profile; here:
the extended resource each requests, the taint it tolerates (the chart's `gpu.toleration`, keyed on the
pool's taint whatever the resource name), and the memory limit it gives the process.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .chart_support import CHART, one, render, render_error


def predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    return isvc["spec"]["predictor"]


def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in pod["containers"] if c["name"] == "kserve-container"]
    return c


def flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args)


POOL_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def assert_tolerates_only_the_pool_taint(pod: dict[str, Any]) -> None:
    """The chart (not the profile) tolerates the GPU pool's taint, and nothing named after the resource."""
    assert pod["tolerations"] == [POOL_TAINT], pod["tolerations"]


@pytest.mark.parametrize("profile", ["gpu-mig", "gpu-timeslicing"])
def test_sharing_profiles_leave_the_gpu_toleration_to_the_chart(profile: str) -> None:
    values = yaml.safe_load((CHART / "ci" / f"{profile}-values.yaml").read_text())
    assert "tolerations" not in values and "toleration" not in values.get("gpu", {}), values


@pytest.mark.parametrize("resource", ["nvidia.com/mig-1g.10gb", "nvidia.com/gpu.shared", "amd.com/gpu"])
def test_the_gpu_toleration_follows_the_taint_not_the_resource_name(resource: str) -> None:
    pod = predictor(
        one(render(set_values=["deploymentMode=Standard", f"gpu.resourceName={resource}"]), "InferenceService")
    )
    assert pod["tolerations"] == [POOL_TAINT]


def test_the_gpu_toleration_is_configurable_and_the_nodepool_taints_with_it() -> None:
    objects = render(
        set_values=[
            "deploymentMode=Standard",
            "gpu.toleration.key=example.com/accelerator",
            "gpu.toleration.operator=Equal",
            "gpu.toleration.value=a100",
            "gpu.toleration.effect=NoExecute",
            "karpenter.nodePool.enabled=true",
            "karpenter.nodePool.nodeClassName=gpu",
        ]
    )
    want = {"key": "example.com/accelerator", "operator": "Equal", "value": "a100", "effect": "NoExecute"}
    assert predictor(one(objects, "InferenceService"))["tolerations"] == [want]
    (taint,) = one(objects, "NodePool")["spec"]["template"]["spec"]["taints"]
    assert taint == {"key": "example.com/accelerator", "value": "a100", "effect": "NoExecute"}


def test_the_default_nodepool_taint_is_the_one_the_pod_tolerates() -> None:
    objects = render(
        set_values=[
            "deploymentMode=Standard",
            "karpenter.nodePool.enabled=true",
            "karpenter.nodePool.nodeClassName=gpu",
        ]
    )
    (taint,) = one(objects, "NodePool")["spec"]["template"]["spec"]["taints"]
    assert taint == {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}


def test_the_gpu_toleration_can_be_turned_off_and_is_absent_without_a_gpu() -> None:
    off = predictor(
        one(render(set_values=["deploymentMode=Standard", "gpu.toleration.enabled=false"]), "InferenceService")
    )
    assert "tolerations" not in off
    cpu = predictor(one(render(set_values=["deploymentMode=Standard", "gpu.enabled=false"]), "InferenceService"))
    assert "tolerations" not in cpu


def test_an_equal_toleration_needs_a_value() -> None:
    err = render_error(set_values=["gpu.toleration.operator=Equal"])
    assert "gpu.toleration.operator is Equal but gpu.toleration.value is empty" in err


def _pod(profile: str) -> dict:
    return predictor(one(render([CHART / "ci" / f"{profile}-values.yaml"]), "InferenceService"))


def test_mig_profile_asks_for_one_slice_and_no_whole_gpu() -> None:
    pod = _pod("gpu-mig")
    resources = container(pod)["resources"]
    for kind in ("requests", "limits"):
        assert resources[kind]["nvidia.com/mig-1g.10gb"] == "1", resources
        assert "nvidia.com/gpu" not in resources[kind], resources
    assert_tolerates_only_the_pool_taint(pod)
    # the slice is isolated in hardware: no memory fraction of our own
    assert flags(container(pod)["args"])["gpu_memory_fraction"] == "1"


def test_timeslicing_profile_shares_a_gpu_and_limits_its_own_memory() -> None:
    pod = _pod("gpu-timeslicing")
    c = container(pod)
    assert c["resources"]["limits"]["nvidia.com/gpu.shared"] == "1"
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    f = flags(c["args"])
    assert float(f["gpu_memory_fraction"]) == 0.22 and f["max_batch_size"] == "16"
    assert_tolerates_only_the_pool_taint(pod)


def test_the_default_profile_gives_the_process_the_whole_gpu() -> None:
    c = container(predictor(one(render(), "InferenceService")))
    f = flags(c["args"])
    assert f["gpu_memory_fraction"] == "1" and f["oom_recovery_seconds"] == "60"


def test_the_worker_tolerates_the_gpu_taint_only_when_it_requests_a_gpu(rendered) -> None:
    def worker_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
        return one(objects, "Deployment")["spec"]["template"]["spec"]

    assert worker_pod(rendered["queue-worker"])["tolerations"][0] == POOL_TAINT
    cpu_worker = worker_pod(render([CHART / "ci" / "queue-worker-values.yaml"], ["queue.worker.gpu=false"]))
    assert POOL_TAINT not in cpu_worker.get("tolerations", []), cpu_worker.get("tolerations")
    assert "nvidia.com/gpu" not in cpu_worker["containers"][0]["resources"]["limits"]
