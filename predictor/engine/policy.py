"""The ``auto`` policy: which backend, device and precision serve a model on this machine.

The fastest backend + precision that keeps the answers (numbers in docs/performance.md):

* CPU: candidates in measured speed order (:data:`CPU_CANDIDATES`). A bf16 candidate is tried only where
  the CPU has native bf16 (AMX or AVX-512 BF16; emulated bf16 is slower than fp32), and it is served only
  if it keeps *this* model's answers: the loader compares it with the same backend in fp32 on a
  calibration set at first load (:mod:`predictor.engine.precision_check`) and caches the verdict;
  otherwise the same backend runs fp32. ``precision=bf16`` opts in without the check; ``precision=fp32``
  skips it.
* CUDA: torch fp16, checked the same way against torch fp32.
* OpenVINO not importable: ONNX Runtime fp32.

The order is only where serving starts: with ``backend=auto`` on the CPU, the speed check
(:mod:`predictor.engine.speed_check`) then measures every backend (and OpenVINO hint) that keeps the
answers on this machine and serves the fastest, from its cached verdict on later starts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from predictor.engine import registry
from predictor.engine.cpu import CpuFeatures, detect_cpu

if TYPE_CHECKING:
    from predictor.config import Settings

logger = logging.getLogger(__name__)


CPU_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("openvino", "bf16"),
    ("openvino", "fp32"),
    ("torch", "bf16"),
    ("onnxruntime", "fp32"),
    ("torch", "fp32"),
)
"""CPU backend/precision pairs, fastest first (raw probe, 2 cores, EfficientNet-Lite0 and ResNet-50)."""


@dataclass(frozen=True)
class EnginePlan:
    """A resolved choice: concrete backend, device and precision, and why."""

    backend: str
    device: str
    precision: str
    reason: str
    verify_against: str | None = None
    """When set, ``precision`` is served only if it keeps the answers of this precision (fp32) on the
    calibration set; :func:`load_engine` checks and falls back."""
    openvino_hint: str = ""
    """OpenVINO's performance hint; empty = the ``openvino_hint`` setting (``auto``: ``LATENCY`` until the
    speed check has measured, :mod:`predictor.engine.speed_check`)."""


def _cuda_available() -> bool:
    import torch

    available = torch.cuda.is_available()
    if not available and os.environ.get("NVIDIA_VISIBLE_DEVICES", "") not in ("", "void", "none"):
        # A GPU was given to the container, but torch cannot use it: most often a node driver older than
        # the wheel's CUDA (torch 2.14.1 from PyPI is built for CUDA 13.0: driver >= 580.65.06).
        logger.warning(
            "a GPU is attached (NVIDIA_VISIBLE_DEVICES=%s) but CUDA is unusable, so device=auto serves on the CPU; "
            "torch %s needs CUDA %s, i.e. an NVIDIA driver >= 580.65.06 on the node",
            os.environ["NVIDIA_VISIBLE_DEVICES"], torch.__version__, torch.version.cuda,
        )  # fmt: skip
    return available


def openvino_importable() -> bool:
    """Whether the OpenVINO runtime is installed."""
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
    ov_ok = openvino_available if openvino_available is not None else openvino_importable()
    if device == "cuda":
        backend = "torch" if settings.backend == "auto" else settings.backend
        precision = settings.precision
        verify_against = None
        if precision == "auto":
            precision = "fp16" if backend == "torch" else "fp32"
            verify_against = "fp32" if precision == "fp16" else None
        reason = "CUDA: torch fp16 channels_last" if settings.backend == "auto" else "as configured"
        if verify_against:
            reason += ", if it keeps this model's answers (checked at load), else fp32"
    else:
        backend, precision, reason, verify_against = _pick_cpu(settings.backend, settings.precision, cpu, ov_ok)
    allowed = registry.precisions(backend, device)
    if not allowed:
        raise ValueError(f"backend {backend} does not run on {device}; on {device} use " + _backends_for(device))
    if precision not in allowed:
        raise ValueError(f"backend {backend} on {device} runs {', '.join(allowed)}, not {precision}")
    if device == "cpu" and precision == "bf16" and not cpu.native_bf16:
        logger.warning("bf16 asked for on %s without native bf16: expect it slower than fp32", cpu.describe())
    return EnginePlan(backend, device, precision, reason, verify_against)


def _pick_cpu(backend: str, precision: str, cpu: CpuFeatures, ov_ok: bool) -> tuple[str, str, str, str | None]:
    """First :data:`CPU_CANDIDATES` entry compatible with the settings and the CPU.

    Returns ``(backend, precision, reason, verify_against)``: a bf16 pick made by ``auto`` carries
    ``verify_against="fp32"`` (served only if it keeps the answers).
    """
    if backend != "auto" and precision != "auto":
        return backend, precision, "as configured", None
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
            picked = (
                f"fastest CPU choice: {cand_backend} bf16 on {cpu.describe()}, if it keeps this model's answers "
                f"(checked at load), else {cand_backend} fp32"
            )
            return cand_backend, cand_precision, "; ".join([*dict.fromkeys(skipped), picked]), "fp32"
        picked = f"fastest CPU choice ({cand_backend} {cand_precision})"
        return cand_backend, cand_precision, "; ".join([*dict.fromkeys(skipped), picked]), None
    if backend == "auto":  # e.g. an explicit fp16 on CPU: only OpenVINO may run it
        backend = "openvino" if ov_ok else "torch"
    return backend, "fp32" if precision == "auto" else precision, "as configured", None


def _backends_for(device: str) -> str:
    return " or ".join(registry.backends_for(device))
