"""GPU utilisation and memory on ``/metrics``, named and labelled like NVIDIA's DCGM exporter.

Dashboards, alerts and KEDA triggers query ``DCGM_FI_DEV_GPU_UTIL``, ``DCGM_FI_DEV_FB_USED`` and
``DCGM_FI_DEV_FB_FREE``. A cluster may run the DCGM exporter (a DaemonSet that maps each GPU to the pod
using it); when it does not, the predictor exports the same series itself, so the same queries work with
either source:

=========================  =====  ===========================================================
name                       type   meaning
=========================  =====  ===========================================================
``DCGM_FI_DEV_GPU_UTIL``   gauge  percent of the last sample period a kernel ran on the GPU (0-100)
``DCGM_FI_DEV_FB_USED``    gauge  frame-buffer (device) memory used, MiB, whole device
``DCGM_FI_DEV_FB_FREE``    gauge  frame-buffer memory free, MiB
=========================  =====  ===========================================================

Labels, as the DCGM exporter sets them: ``gpu`` (index), ``UUID``, ``device`` (``nvidia<index>``),
``modelName``, and the pod using the GPU: ``pod`` and ``namespace`` (:mod:`predictor.podinfo`: env
``POD_NAME``/``POD_NAMESPACE``, else the hostname and the service-account namespace) and ``container``
(``kserve-container``). Prometheus Operator
scrapes add their own ``pod``/``namespace``/``container`` target labels with the same values, and keeps
ours as ``exported_*`` — as with a DCGM exporter scraped without ``honorLabels``.

Sources, in order: NVML through ``nvidia-ml-py`` (``pynvml``: device-wide numbers, like DCGM), else
``torch.cuda`` (memory from ``cudaMemGetInfo``; utilisation only where torch can read it). Without a GPU
nothing is registered and nothing is exported: the dashboard's GPU panels show "no GPU" and the GPU
alert stays silent. Values are read at scrape time; a failing read drops that device's samples from this
scrape instead of failing ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from predictor.podinfo import pod_name, pod_namespace

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
CONTAINER = "kserve-container"
LABELS = ("gpu", "UUID", "device", "modelName", "pod", "namespace", "container")

UTIL = "DCGM_FI_DEV_GPU_UTIL"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
HELP = {
    UTIL: "GPU utilization (in %).",
    FB_USED: "Framebuffer memory used (in MiB).",
    FB_FREE: "Framebuffer memory free (in MiB).",
}


@dataclass(frozen=True)
class GpuSample:
    """One device at one scrape. ``util_percent`` is None where the source cannot read it."""

    index: int
    uuid: str
    name: str
    util_percent: float | None
    used_bytes: int
    free_bytes: int


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlSource:
    """Reads every device NVML sees (nvidia-ml-py's ``pynvml`` module, or anything shaped like it)."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def samples(self) -> Iterator[GpuSample]:
        nvml = self.nvml
        for i in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                uuid, name = _text(nvml.nvmlDeviceGetUUID(handle)), _text(nvml.nvmlDeviceGetName(handle))
            except Exception as e:  # a lost or resetting GPU must not fail the whole scrape
                _warn_once(f"nvml:{i}", "cannot read GPU %d through NVML: %s", i, e)
                continue
            yield GpuSample(i, uuid, name, self._utilization(handle, i), int(mem.used), int(mem.free))

    def _utilization(self, handle: Any, index: int) -> float | None:
        """Percent busy, or None where NVML cannot tell (MIG instances, some vGPUs): memory is still reported."""
        try:
            return float(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception as e:
            _warn_once(f"nvml-util:{index}", "GPU %d: utilization not readable through NVML (%s); memory is", index, e)
            return None


class TorchCudaSource:
    """``torch.cuda`` fallback. Reads only once this process has initialised CUDA itself (the engine runs
    on the GPU): a scrape must not create a CUDA context in a process that serves from the CPU."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def samples(self) -> Iterator[GpuSample]:
        cuda = self.torch.cuda
        if not cuda.is_initialized():
            return
        for i in range(cuda.device_count()):
            try:
                free, total = cuda.mem_get_info(i)
                props = cuda.get_device_properties(i)
                try:
                    util: float | None = float(cuda.utilization(i))  # needs NVML underneath
                except Exception:
                    util = None
                uuid = getattr(props, "uuid", None)
                yield GpuSample(
                    index=i,
                    uuid=f"GPU-{uuid}" if uuid is not None and not str(uuid).startswith("GPU-") else str(uuid or ""),
                    name=_text(props.name),
                    util_percent=util,
                    used_bytes=int(total - free),
                    free_bytes=int(free),
                )
            except Exception as e:
                _warn_once(f"torch:{i}", "cannot read GPU %d through torch.cuda: %s", i, e)


_warned: set[str] = set()


def _warn_once(key: str, msg: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(msg, *args)


class GpuCollector(Collector):
    """Custom collector: the three DCGM gauges for every device ``source`` reports, read at scrape time."""

    def __init__(
        self,
        source: Callable[[], Iterable[GpuSample]],
        pod: str | None = None,
        namespace: str | None = None,
        container: str = CONTAINER,
    ) -> None:
        self.source = source
        self.pod = pod if pod is not None else pod_name()
        self.namespace = namespace if namespace is not None else pod_namespace()
        self.container = container

    def describe(self) -> list[GaugeMetricFamily]:
        # Names only, so that registering does not read the GPUs and a second registration fails loudly.
        return [GaugeMetricFamily(name, HELP[name], labels=LABELS) for name in (UTIL, FB_USED, FB_FREE)]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {name: GaugeMetricFamily(name, HELP[name], labels=LABELS) for name in (UTIL, FB_USED, FB_FREE)}
        for s in self.source():
            labels = [str(s.index), s.uuid, f"nvidia{s.index}", s.name, self.pod, self.namespace, self.container]
            if s.util_percent is not None:
                families[UTIL].add_metric(labels, s.util_percent)
            families[FB_USED].add_metric(labels, s.used_bytes // MIB)
            families[FB_FREE].add_metric(labels, s.free_bytes // MIB)
        for family in families.values():
            if family.samples:
                yield family


def _nvml_source() -> NvmlSource | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() > 0:
            return NvmlSource(pynvml)
        pynvml.nvmlShutdown()
    except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded: no GPU here
        logger.debug("NVML unavailable: %s", e)
    return None


def _torch_source() -> TorchCudaSource | None:
    try:
        import torch
    except ImportError:
        return None
    try:
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return TorchCudaSource(torch)
    except Exception as e:
        logger.debug("torch.cuda unavailable: %s", e)
    return None


_registered: weakref.WeakKeyDictionary[CollectorRegistry, GpuCollector] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def register_gpu_metrics(registry: CollectorRegistry = REGISTRY, container: str = CONTAINER) -> bool:
    """Export the DCGM-named GPU gauges on ``registry`` when this process sees a GPU.

    ``container`` is the pod's container name as the DCGM exporter would report it.

    Returns True when a collector is registered (now or by an earlier call), False when there is no
    GPU (nothing is registered then).
    """
    with _lock:
        if registry in _registered:
            return True
        source = _nvml_source() or _torch_source()
        if source is None:
            logger.info("no GPU visible (NVML and torch.cuda): GPU metrics are not exported")
            return False
        collector = GpuCollector(source.samples, container=container)
        registry.register(collector)
        _registered[registry] = collector
        logger.info("exporting GPU metrics (%s) as DCGM_FI_DEV_*", type(source).__name__)
        return True
