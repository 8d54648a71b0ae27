"""Inference engines behind one interface, and the policy that picks one.

``create_engine(settings, spec)`` resolves ``auto`` settings into a concrete :class:`EnginePlan` and
builds the engine (not yet loaded: the caller runs ``load()`` and ``warmup()``).

The ``auto`` policy: the fastest backend + precision that keeps the answers (see ``bench/raw_probe.py``
and ``tests/engine/test_backends.py``; numbers in docs/performance.md).

* CUDA present: torch fp16 (``channels_last``; compiled buckets when asked).
* CPU: candidates in measured speed order (:data:`CPU_CANDIDATES`). A bf16 candidate is taken only
  where the CPU has native bf16 (AMX or AVX-512 BF16; emulated bf16 is slower than fp32) *and* that
  backend's bf16 kept the answers on the embedded default model (:data:`BF16_KEEPS_ANSWERS`).
  Measured on the default model: OpenVINO bf16 is the fastest (1.8x OpenVINO fp32 on
  EfficientNet-Lite0, ~2x on ResNet-50) but changed the cat photo's top-1 and agreed on only ~91 % of
  the varied set; torch bf16 kept the photos but agreed on 94.7-96.2 % (it varies run to run), so
  neither reliably meets the rule and ``auto`` runs OpenVINO fp32 (exact to 1e-5). ``precision=bf16``
  opts in to OpenVINO bf16.
* OpenVINO not importable: ONNX Runtime fp32.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from predictor.engine.base import Engine, EngineInfo
from predictor.engine.cpu import CpuFeatures, detect_cpu

if TYPE_CHECKING:
    from predictor.config import Settings
    from predictor.preprocess import PreprocessSpec

logger = logging.getLogger(__name__)

__all__ = ["Engine", "EngineInfo", "EngineOptions", "EnginePlan", "create_engine", "resolve_plan"]

_PRECISIONS = {
    ("torch", "cpu"): ("fp32", "bf16"),
    ("torch", "cuda"): ("fp32", "fp16", "bf16"),
    ("openvino", "cpu"): ("fp32", "bf16", "fp16"),
    ("onnxruntime", "cpu"): ("fp32",),
    ("onnxruntime", "cuda"): ("fp32", "fp16"),
}


BF16_KEEPS_ANSWERS: dict[str, bool] = {"openvino": False, "torch": False}
"""Whether a backend's bf16 met the accuracy rule on the default model (top-1 identical on the five
real photos, >= 95 % top-1 agreement on the varied set); ``tests/engine/test_backends.py`` measures it."""

CPU_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("openvino", "bf16"),
    ("openvino", "fp32"),
    ("torch", "bf16"),
    ("onnxruntime", "fp32"),
    ("torch", "fp32"),
)
"""CPU backend/precision pairs, fastest first (raw probe, 2 cores, EfficientNet-Lite0 and ResNet-50)."""


@dataclass(frozen=True)
class EngineOptions:
    """Backend-specific knobs that are not (yet) fields of :class:`~predictor.config.Settings`."""

    torch_compile: bool = False
    """torch backend: ``torch.compile`` with fixed batch buckets (CUDA graphs on a GPU)."""
    openvino_hint: str = "LATENCY"
    """openvino backend: ``LATENCY`` (one synchronous request per batch) or ``THROUGHPUT`` (streams)."""


@dataclass(frozen=True)
class EnginePlan:
    """A resolved choice: concrete backend, device and precision, and why."""

    backend: str
    device: str
    precision: str
    reason: str


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_plan(
    settings: Settings,
    cpu: CpuFeatures | None = None,
    cuda_available: bool | None = None,
    openvino_available: bool | None = None,
) -> EnginePlan:
    """Turn ``auto`` backend/device/precision settings into a concrete plan.

    Args:
        settings: Settings with ``backend``, ``device`` and ``precision``.
        cpu: CPU features (default: this machine's).
        cuda_available: Override CUDA detection (tests).
        openvino_available: Override OpenVINO detection (tests).

    Raises:
        ValueError: an explicit combination that cannot run (e.g. OpenVINO on CUDA, fp16 on torch CPU).
    """
    cpu = cpu or detect_cpu()
    device = settings.device
    if device == "auto":
        device = "cuda" if (cuda_available if cuda_available is not None else _cuda_available()) else "cpu"
    elif device == "cuda" and cuda_available is False:
        raise ValueError("device cuda was asked for but no CUDA device is available")
    ov_ok = openvino_available if openvino_available is not None else _openvino_available()
    if device == "cuda":
        backend = "torch" if settings.backend == "auto" else settings.backend
        precision = settings.precision
        if precision == "auto":
            precision = "fp16" if backend == "torch" else "fp32"
        reason = "CUDA: torch fp16 channels_last" if settings.backend == "auto" else "as configured"
    else:
        backend, precision, reason = _pick_cpu(settings.backend, settings.precision, cpu, ov_ok)
    allowed = _PRECISIONS.get((backend, device))
    if allowed is None:
        raise ValueError(f"backend {backend} does not run on {device}; on {device} use " + _backends_for(device))
    if precision not in allowed:
        raise ValueError(f"backend {backend} on {device} runs {', '.join(allowed)}, not {precision}")
    if device == "cpu" and precision == "bf16" and not cpu.native_bf16:
        logger.warning("bf16 asked for on %s without native bf16: expect it slower than fp32", cpu.describe())
    return EnginePlan(backend, device, precision, reason)


def _pick_cpu(backend: str, precision: str, cpu: CpuFeatures, ov_ok: bool) -> tuple[str, str, str]:
    """First :data:`CPU_CANDIDATES` entry compatible with the settings, the CPU and the accuracy rule."""
    if backend != "auto" and precision != "auto":
        return backend, precision, "as configured"
    skipped = []
    for cand_backend, cand_precision in CPU_CANDIDATES:
        if backend not in ("auto", cand_backend) or precision not in ("auto", cand_precision):
            continue
        if cand_backend == "openvino" and not ov_ok:
            skipped.append("openvino not installed")
            continue
        if precision == "auto" and cand_precision == "bf16":
            if not cpu.native_bf16:
                skipped.append(f"no native bf16 on {cpu.describe()}")
                continue
            if not BF16_KEEPS_ANSWERS.get(cand_backend, False):
                skipped.append(f"{cand_backend} bf16 does not keep the answers")
                continue
        picked = f"fastest CPU choice that keeps the answers ({cand_backend} {cand_precision})"
        return cand_backend, cand_precision, "; ".join([*dict.fromkeys(skipped), picked])
    if backend == "auto":  # e.g. an explicit fp16 on CPU: only OpenVINO may run it
        backend = "openvino" if ov_ok else "torch"
    return backend, "fp32" if precision == "auto" else precision, "as configured"


def _backends_for(device: str) -> str:
    return " or ".join(sorted({b for b, d in _PRECISIONS if d == device}))


def create_engine(settings: Settings, spec: PreprocessSpec, options: EngineOptions | None = None) -> Engine:
    """Build (not load) the engine for ``settings.model_dir`` per the resolved plan.

    Args:
        settings: Predictor settings (``model_dir``, ``backend``, ``device``, ``precision``,
            ``cache_dir``, ``cpu_threads``, ``max_batch_size``).
        spec: Preprocessing spec of the model.
        options: Backend-specific knobs.

    Returns:
        An engine; call ``load()`` then ``warmup()`` before ``infer()``.
    """
    from predictor.engine.cache import resolve_cache_dir

    options = options or EngineOptions()
    plan = resolve_plan(settings)
    threads = settings.cpu_threads or settings.usable_cores()
    model_dir = Path(settings.model_dir)
    logger.info("engine plan: %s %s on %s (%s)", plan.backend, plan.precision, plan.device, plan.reason)
    if plan.backend == "torch":
        from predictor.engine.torch_engine import TorchEngine

        return TorchEngine(
            spec,
            model_dir,
            device=plan.device,
            precision=plan.precision,
            threads=threads,
            compile=options.torch_compile,
            max_batch_size=settings.max_batch_size,
        )
    cache_dir = resolve_cache_dir(model_dir, settings.cache_dir)
    if plan.backend == "openvino":
        from predictor.engine.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(
            spec,
            model_dir,
            cache_dir,
            precision=plan.precision,
            threads=threads,
            performance_hint=options.openvino_hint,
        )
    from predictor.engine.onnx_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(spec, model_dir, cache_dir, device=plan.device, precision=plan.precision, threads=threads)
