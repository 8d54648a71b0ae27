"""GPU metrics: the DCGM-named collector (pure logic, fed by an NVML-shaped fake) and registration."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from predictor.gpu_metrics import MIB, GpuCollector, NvmlSource, TorchCudaSource, register_gpu_metrics

DCGM = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE")


class FakeNvml:
    """The subset of nvidia-ml-py's ``pynvml`` module the collector calls, with two GPUs."""

    class NVMLError(Exception):
        pass

    def __init__(self, broken: set[int] = frozenset(), no_utilization: set[int] = frozenset()) -> None:
        self.broken = broken
        self.no_utilization = no_utilization
        self.devices = [
            # (uuid, name as NVML returns it: bytes in older bindings, str in newer, util %, used MiB, total MiB)
            ("GPU-11111111-2222-3333-4444-555555555555", b"NVIDIA A10G", 37, 1536, 23028),
            ("GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "NVIDIA L4", 0, 0, 23034),
        ]

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if i in self.broken:
            raise self.NVMLError("GPU is lost")
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self.devices[h][0]

    def nvmlDeviceGetName(self, h: int) -> str | bytes:
        return self.devices[h][1]

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        if h in self.no_utilization:  # as NVML answers on a MIG instance
            raise self.NVMLError("Not Supported")
        return SimpleNamespace(gpu=self.devices[h][2], memory=5)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        used, total = self.devices[h][3] * MIB, self.devices[h][4] * MIB
        return SimpleNamespace(used=used, free=total - used, total=total)


def scrape(registry: CollectorRegistry) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_collector_exports_dcgm_names_labels_and_units():
    registry = CollectorRegistry()
    registry.register(GpuCollector(NvmlSource(FakeNvml()).samples, pod="demo-predictor-abc", namespace="ml"))
    text = generate_latest(registry).decode()
    assert "# TYPE DCGM_FI_DEV_GPU_UTIL gauge" in text
    samples = scrape(registry)
    assert set(samples) == set(DCGM)
    util = {s.labels["gpu"]: s for s in samples["DCGM_FI_DEV_GPU_UTIL"]}
    assert util["0"].value == 37 and util["1"].value == 0
    assert util["0"].labels == {
        "gpu": "0",
        "UUID": "GPU-11111111-2222-3333-4444-555555555555",
        "device": "nvidia0",
        "modelName": "NVIDIA A10G",  # bytes decoded
        "pod": "demo-predictor-abc",
        "namespace": "ml",
        "container": "kserve-container",
    }
    used = {s.labels["gpu"]: s.value for s in samples["DCGM_FI_DEV_FB_USED"]}
    free = {s.labels["gpu"]: s.value for s in samples["DCGM_FI_DEV_FB_FREE"]}
    assert used == {"0": 1536, "1": 0}  # MiB, as DCGM reports framebuffer memory
    assert free == {"0": 23028 - 1536, "1": 23034}


def test_pod_and_namespace_come_from_the_downward_api_env(monkeypatch):
    monkeypatch.setenv("POD_NAME", "clf-predictor-00001-deployment-x")
    monkeypatch.setenv("POD_NAMESPACE", "prod")
    registry = CollectorRegistry()
    registry.register(GpuCollector(NvmlSource(FakeNvml()).samples))
    (s, _) = scrape(registry)["DCGM_FI_DEV_FB_USED"]
    assert (s.labels["pod"], s.labels["namespace"]) == ("clf-predictor-00001-deployment-x", "prod")


def test_a_failing_device_is_dropped_not_the_scrape():
    registry = CollectorRegistry()
    registry.register(GpuCollector(NvmlSource(FakeNvml(broken={0})).samples, pod="p", namespace="n"))
    samples = scrape(registry)
    assert [s.labels["gpu"] for s in samples["DCGM_FI_DEV_FB_USED"]] == ["1"]


def test_unreadable_utilization_keeps_the_memory_gauges():
    """On MIG (and some vGPUs) NVML refuses utilization; the memory of that device is still exported."""
    registry = CollectorRegistry()
    registry.register(GpuCollector(NvmlSource(FakeNvml(no_utilization={0})).samples, pod="p", namespace="n"))
    samples = scrape(registry)
    assert [s.labels["gpu"] for s in samples["DCGM_FI_DEV_GPU_UTIL"]] == ["1"]
    assert {s.labels["gpu"]: s.value for s in samples["DCGM_FI_DEV_FB_USED"]} == {"0": 1536, "1": 0}
    assert [s.labels["gpu"] for s in samples["DCGM_FI_DEV_FB_FREE"]] == ["0", "1"]


def test_no_devices_means_no_series():
    fake = FakeNvml()
    fake.devices = []
    registry = CollectorRegistry()
    registry.register(GpuCollector(NvmlSource(fake).samples, pod="p", namespace="n"))
    assert not any(name.startswith("DCGM_") for name in scrape(registry))


def test_torch_source_does_not_create_a_cuda_context():
    """The torch fallback reads nothing until the process itself has initialised CUDA."""
    calls = []
    cuda = SimpleNamespace(
        is_initialized=lambda: False,
        device_count=lambda: calls.append("device_count") or 1,
        mem_get_info=lambda i: calls.append("mem_get_info") or (1, 2),
    )
    assert list(TorchCudaSource(SimpleNamespace(cuda=cuda)).samples()) == []
    assert calls == []


def test_torch_source_reads_memory_and_tolerates_missing_utilization():
    def utilization(i):
        raise ModuleNotFoundError("pynvml")

    cuda = SimpleNamespace(
        is_initialized=lambda: True,
        device_count=lambda: 1,
        mem_get_info=lambda i: (20 * 1024 * MIB, 24 * 1024 * MIB),
        get_device_properties=lambda i: SimpleNamespace(name="NVIDIA L4", uuid="abcd-ef"),
        utilization=utilization,
    )
    registry = CollectorRegistry()
    registry.register(GpuCollector(TorchCudaSource(SimpleNamespace(cuda=cuda)).samples, pod="p", namespace="n"))
    samples = scrape(registry)
    assert "DCGM_FI_DEV_GPU_UTIL" not in samples
    (used,) = samples["DCGM_FI_DEV_FB_USED"]
    assert used.value == 4 * 1024 and used.labels["UUID"] == "GPU-abcd-ef"
    assert samples["DCGM_FI_DEV_FB_FREE"][0].value == 20 * 1024


def _gpu_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        import torch

        return torch.cuda.is_available()


def test_register_gpu_metrics_matches_the_machine():
    """On a machine without a GPU (CI, this one) nothing is registered; with one, the gauges appear."""
    registry = CollectorRegistry()
    registered = register_gpu_metrics(registry)
    assert registered is _gpu_present()
    names = {fam.name for fam in registry.collect()}
    if registered:
        assert {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"} <= names
        free = [s for s in scrape(registry)["DCGM_FI_DEV_FB_FREE"]]
        assert free and free[0].value > 0 and free[0].labels["UUID"].startswith("GPU-")
        assert register_gpu_metrics(registry) is True  # idempotent, no duplicate registration
    else:
        assert names == set()
        assert generate_latest(registry) == b""
