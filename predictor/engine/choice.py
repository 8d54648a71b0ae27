"""What is served, and why: the one place that chooses the engine. Read it top to bottom.

1. :func:`choose` turns the settings into a :class:`ServingChoice` (backend, device, precision, OpenVINO
   hint) and says why. ``auto`` follows a fixed order measured offline (``bench/raw_probe.py``; the
   numbers are in docs/performance.md):

   * CPU: :data:`CPU_CANDIDATES`, fastest first. A bf16 candidate is tried only where the CPU has native
     bf16 (AMX or AVX-512 BF16; emulated bf16 is slower than fp32), and served only if the precision
     check passes (step 2); otherwise the same backend serves fp32. ``precision=bf16`` opts in without
     the check, ``precision=fp32`` skips it.
   * CUDA: torch fp16, checked the same way against torch fp32.
   * OpenVINO not importable: ONNX Runtime fp32.
   * ``openvino_hint=auto``: ``LATENCY``. ``THROUGHPUT`` and the other CPU backends measured ties with it
     (within ±3 %) on the CPUs we have, so nothing is timed at start-up.

2. :func:`load_engine` builds the choice through the backend registry and loads it. A reduced precision
   that ``auto`` picked (``verify_against``) is checked against fp32 on a calibration set
   (:mod:`.precision_check`) *before the pod reports ready*, unless a verdict for this model, runtime
   version, precision and hardware is already in the cache directory. The chart can mount that
   directory from a shared volume (``sharedCache``): the first pod on a kind of node pays the check,
   every later one reads its verdict.

3. The engine loaded here serves until the process exits: nothing checks, times or swaps engines while
   the pod serves, so a pod that reports ready serves at its full speed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from predictor.engine import precision_check, registry
from predictor.engine.base import Engine
from predictor.engine.cache import model_content_hash, resolve_cache_dir
from predictor.engine.cpu import CpuFeatures, detect_cpu
from predictor.engine.precision_check import PrecisionVerdict

if TYPE_CHECKING:
    from predictor.config import Settings
    from predictor.preprocess import PreprocessSpec

T = TypeVar("T")
Run = Callable[[Callable[[], T]], T]
Build = Callable[["ServingChoice", "Settings", "PreprocessSpec"], Engine]

logger = logging.getLogger(__name__)

CPU_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("openvino", "bf16"),
    ("openvino", "fp32"),
    ("torch", "bf16"),
    ("onnxruntime", "fp32"),
    ("torch", "fp32"),
)
"""CPU backend/precision pairs, fastest first (raw probe, 2 cores, EfficientNet-Lite0 and ResNet-50)."""
AUTO_OPENVINO_HINT = "LATENCY"
"""What ``openvino_hint=auto`` serves: THROUGHPUT measured a tie (docs/performance.md)."""


@dataclass(frozen=True)
class ServingChoice:
    """A resolved choice: concrete backend, device, precision and OpenVINO hint, and why."""

    backend: str
    device: str
    precision: str
    reason: str
    verify_against: str | None = None
    """When set, ``precision`` is served only if it keeps the answers of this precision (fp32) on the
    calibration set; :func:`load_engine` checks and falls back."""
    openvino_hint: str = AUTO_OPENVINO_HINT

    def describe(self) -> str:
        """One line for the start-up log, e.g. ``openvino fp32 (LATENCY) on cpu: fastest CPU choice``."""
        hint = f" ({self.openvino_hint})" if self.backend == "openvino" else ""
        return f"{self.backend} {self.precision}{hint} on {self.device}: {self.reason}"


def openvino_importable() -> bool:
    """Whether the OpenVINO runtime is installed."""
    return importlib.util.find_spec("openvino") is not None


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


def choose(
    settings: Settings,
    cpu: CpuFeatures | None = None,
    cuda_available: bool | None = None,
    openvino_available: bool | None = None,
) -> ServingChoice:
    """Turn ``auto`` backend/device/precision/hint settings into a concrete choice.

    Args:
        settings: Settings with ``backend``, ``device``, ``precision`` and ``openvino_hint``.
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
            reason += ", if it keeps this model's answers (checked before ready), else fp32"
    else:
        backend, precision, reason, verify_against = _pick_cpu(settings.backend, settings.precision, cpu, ov_ok)
    registry.check(backend, device, precision)
    if device == "cpu" and precision == "bf16" and not cpu.native_bf16:
        logger.warning("bf16 asked for on %s without native bf16: expect it slower than fp32", cpu.describe())
    hint = AUTO_OPENVINO_HINT if settings.openvino_hint == "auto" else settings.openvino_hint
    return ServingChoice(backend, device, precision, reason, verify_against, hint)


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
                f"(checked before ready), else {cand_backend} fp32"
            )
            return cand_backend, cand_precision, "; ".join([*dict.fromkeys(skipped), picked]), "fp32"
        picked = f"fastest CPU choice ({cand_backend} {cand_precision})"
        return cand_backend, cand_precision, "; ".join([*dict.fromkeys(skipped), picked]), None
    if backend == "auto":  # e.g. an explicit fp16 on CPU: only OpenVINO may run it
        backend = "openvino" if ov_ok else "torch"
    return backend, "fp32" if precision == "auto" else precision, "as configured", None


@dataclass(frozen=True)
class LoadedEngine:
    """What :func:`load_engine` returns: the loaded engine, what it serves and the precision check's verdict."""

    engine: Engine
    choice: ServingChoice
    """What ``engine`` serves (``verify_against`` resolved: None)."""
    verdict: PrecisionVerdict | None
    """The precision check (None when none was needed)."""
    verdict_cached: bool = False


def load_engine(
    settings: Settings,
    spec: PreprocessSpec,
    run: Run | None = None,
    *,
    choice: ServingChoice | None = None,
    build: Build | None = None,
) -> LoadedEngine:
    """Choose, build and load the engine, checking an ``auto`` reduced precision first (see the module).

    Args:
        settings: Predictor settings.
        spec: Preprocessing spec of the model.
        run: Runs a callable where every later forward pass runs (the pipeline's inference thread);
            default: in the calling thread. Every engine load and calibration pass goes through it.
        choice: What to serve (default: :func:`choose` of the settings; tests give their own).
        build: Builds an engine for a choice (default: :func:`build_engine`; tests give their own).
    """
    run = run or (lambda fn: fn())
    build = build or build_engine
    choice = choice or choose(settings)
    logger.info("engine choice: %s", choice.describe())
    if not choice.verify_against:
        return LoadedEngine(_load(build, choice, settings, spec, run), choice, None)
    fallback = replace(choice, precision=choice.verify_against, verify_against=None)
    path = precision_check.verdict_path(
        resolve_cache_dir(Path(settings.model_dir), settings.cache_dir),
        model_content_hash(Path(settings.model_dir)),
        choice.backend,
        registry.runtime_version(choice.backend),
        choice.device,
        choice.precision,
        _hardware(choice.device),
    )
    verdict = precision_check.read_verdict(path)
    if verdict is not None:
        logger.info("precision check (cached in %s): %s", path.name, verdict.describe())
        served = _after_check(choice, fallback, verdict, "cached")
        return LoadedEngine(_load(build, served, settings, spec, run), served, verdict, verdict_cached=True)
    reference = _load(build, fallback, settings, spec, run)
    try:
        verdict, candidate = _check_precision(choice, reference, settings, spec, path, run, build)
    except BaseException:
        reference.close()
        raise
    served = _after_check(choice, fallback, verdict, f"checked in {verdict.seconds:.1f}s")
    if candidate is None:
        return LoadedEngine(reference, served, verdict)
    reference.close()
    return LoadedEngine(candidate, served, verdict)


def _load(build: Build, choice: ServingChoice, settings: Settings, spec: PreprocessSpec, run: Run) -> Engine:
    engine = build(choice, settings, spec)
    try:
        run(engine.load)
    except BaseException:
        engine.close()
        raise
    return engine


def _after_check(choice: ServingChoice, fallback: ServingChoice, verdict: PrecisionVerdict, how: str) -> ServingChoice:
    """What a verdict leaves to serve, with the verdict in its reason."""
    served = replace(choice, verify_against=None) if verdict.passed else fallback
    outcome = "inconclusive" if not verdict.conclusive else ("keeps" if verdict.passed else "changes") + " the answers"
    return replace(served, reason=f"{choice.reason}; precision check ({how}): {choice.precision} {outcome}")


def _check_precision(
    choice: ServingChoice,
    reference: Engine,
    settings: Settings,
    spec: PreprocessSpec,
    path: Path,
    run: Run,
    build: Build,
) -> tuple[PrecisionVerdict, Engine | None]:
    """Load the candidate, run the calibration set through it and ``reference`` (the loaded fp32
    engine), cache the verdict.

    Returns:
        The verdict, and the loaded candidate engine if it passed (else None: it is closed).
    """
    started = time.monotonic()
    calibration = precision_check.calibration_batches_off_thread(spec)
    candidate = _load(build, replace(choice, verify_against=None), settings, spec, run)
    try:
        chunk = min(32, settings.max_batch_size)
        verdict = precision_check.check(reference, candidate, calibration, choice, chunk, run=run)
    except BaseException:
        candidate.close()
        raise
    precision_check.write_verdict(path, verdict)
    logger.info(
        "precision check (%.1fs in all, %.1fs of forward passes; cached as %s): %s",
        time.monotonic() - started,
        verdict.seconds,
        path.name,
        verdict.describe(),
    )
    if verdict.passed:
        return verdict, candidate
    candidate.close()
    return verdict, None


def _hardware(device: str) -> str:
    """What the verdict depends on besides the model and runtime: the CPU's features or the GPU's name."""
    if device == "cuda":
        import torch

        return f"cuda:{torch.cuda.get_device_name()}"
    return detect_cpu().describe()


def build_engine(choice: ServingChoice, settings: Settings, spec: PreprocessSpec) -> Engine:
    """Build (not load) the engine a concrete choice names, through the backend registry."""
    model_dir = Path(settings.model_dir)
    args = registry.BuildArgs(
        spec=spec,
        model_dir=model_dir,
        cache_dir=resolve_cache_dir(model_dir, settings.cache_dir),
        device=choice.device,
        precision=choice.precision,
        threads=settings.cpu_threads or settings.usable_cores(),
        max_batch_size=settings.max_batch_size,
        torch_compile=settings.torch_compile,
        openvino_hint=choice.openvino_hint,
        gpu_memory_fraction=settings.gpu_memory_fraction,
    )
    return registry.create(choice.backend, args)
