"""The GPU-sharing profiles (chart/ci/gpu-mig-values.yaml, gpu-timeslicing-values.yaml): what a pod asks for.

Both profiles are also rendered, schema-validated and checkov-scanned with every other profile; here:
the extended resource each requests, the taint it tolerates, and the memory limit it gives the process.
"""

from __future__ import annotations

from typing import Any

from .chart_support import CHART, one, render


def predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    return isvc["spec"]["predictor"]


def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in pod["containers"] if c["name"] == "kserve-container"]
    return c


def flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args)


def _pod(profile: str) -> dict:
    return predictor(one(render([CHART / "ci" / f"{profile}-values.yaml"]), "InferenceService"))


def test_mig_profile_asks_for_one_slice_and_no_whole_gpu() -> None:
    pod = _pod("gpu-mig")
    resources = container(pod)["resources"]
    for kind in ("requests", "limits"):
        assert resources[kind]["nvidia.com/mig-1g.10gb"] == "1", resources
        assert "nvidia.com/gpu" not in resources[kind], resources
    keys = {t["key"] for t in pod["tolerations"]}
    assert "nvidia.com/gpu" in keys, pod["tolerations"]  # the GPU pool's taint, whatever the resource name
    # the slice is isolated in hardware: no memory fraction of our own
    assert flags(container(pod)["args"])["gpu_memory_fraction"] == "1"


def test_timeslicing_profile_shares_a_gpu_and_limits_its_own_memory() -> None:
    pod = _pod("gpu-timeslicing")
    c = container(pod)
    assert c["resources"]["limits"]["nvidia.com/gpu.shared"] == "1"
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    f = flags(c["args"])
    assert float(f["gpu_memory_fraction"]) == 0.22 and f["max_batch_size"] == "16"
    assert "nvidia.com/gpu" in {t["key"] for t in pod["tolerations"]}


def test_the_default_profile_gives_the_process_the_whole_gpu() -> None:
    c = container(predictor(one(render(), "InferenceService")))
    f = flags(c["args"])
    assert f["gpu_memory_fraction"] == "1" and f["oom_recovery_seconds"] == "60"
