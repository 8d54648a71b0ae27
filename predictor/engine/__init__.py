"""Inference engines behind one interface, and the policy that picks one.

``create_engine(settings, spec)`` resolves ``auto`` settings into a concrete :class:`EnginePlan` and
builds the engine (not yet loaded: the caller runs ``load()`` and ``warmup()``).

The ``auto`` policy: the fastest backend + precision that keeps the answers (see ``bench/raw_probe.py``
and ``tests/engine/test_backends.py``; numbers in docs/performance.md).

* CPU: candidates in measured speed order (:data:`CPU_CANDIDATES`). A bf16 candidate is tried only
  where the CPU has native bf16 (AMX or AVX-512 BF16; emulated bf16 is slower than fp32), and it is
  served only if it keeps *this* model's answers: :func:`load_engine` compares it with the same
  backend in fp32 on a calibration set at first load (:mod:`predictor.engine.precision_check`) and
  caches the verdict. Otherwise the same backend runs fp32. OpenVINO bf16 is the fastest candidate
  (1.8x OpenVINO fp32 on EfficientNet-Lite0, ~2x on ResNet-50, more with AMX); on the embedded
  EfficientNet-Lite0 it fails the rule on an AVX-512 BF16 EPYC (~92 % of the calibration views agree;
  the engine tests' larger set also flips one photo), so that model is served in OpenVINO fp32.
  ``precision=bf16`` opts in without the check; ``precision=fp32`` skips it.
* CUDA: torch fp16, checked the same way against torch fp32.
* OpenVINO not importable: ONNX Runtime fp32.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from predictor.engine.base import Engine, EngineInfo
from predictor.engine.cpu import CpuFeatures, detect_cpu

if TYPE_CHECKING:
    from predictor.config import Settings
    from predictor.engine.precision_check import Verdict
    from predictor.preprocess import PreprocessSpec

T = TypeVar("T")

logger = logging.getLogger(__name__)

__all__ = [
    "Engine",
    "EngineInfo",
    "EngineOptions",
    "EnginePlan",
    "LoadedEngine",
    "build_engine",
    "create_engine",
    "load_engine",
    "resolve_plan",
]

_PRECISIONS = {
    ("torch", "cpu"): ("fp32", "bf16"),
    ("torch", "cuda"): ("fp32", "fp16", "bf16"),
    ("openvino", "cpu"): ("fp32", "bf16", "fp16"),
    ("onnxruntime", "cpu"): ("fp32",),
    ("onnxruntime", "cuda"): ("fp32", "fp16"),
}


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
    verify_against: str | None = None
    """When set, ``precision`` is served only if it keeps the answers of this precision (fp32) on the
    calibration set; :func:`load_engine` checks and falls back."""


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
        verify_against = None
        if precision == "auto":
            precision = "fp16" if backend == "torch" else "fp32"
            verify_against = "fp32" if precision == "fp16" else None
        reason = "CUDA: torch fp16 channels_last" if settings.backend == "auto" else "as configured"
        if verify_against:
            reason += ", if it keeps this model's answers (checked at load), else fp32"
    else:
        backend, precision, reason, verify_against = _pick_cpu(settings.backend, settings.precision, cpu, ov_ok)
    allowed = _PRECISIONS.get((backend, device))
    if allowed is None:
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
    return " or ".join(sorted({b for b, d in _PRECISIONS if d == device}))


def create_engine(settings: Settings, spec: PreprocessSpec, options: EngineOptions | None = None) -> Engine:
    """Build (not load) the engine for ``settings.model_dir`` per the resolved plan.

    A reduced precision that ``auto`` would serve only after the precision check is *not* built here:
    this function builds the plan's fallback (fp32) instead. :func:`load_engine` runs the check.

    Args:
        settings: Predictor settings (``model_dir``, ``backend``, ``device``, ``precision``,
            ``cache_dir``, ``cpu_threads``, ``max_batch_size``).
        spec: Preprocessing spec of the model.
        options: Backend-specific knobs.

    Returns:
        An engine; call ``load()`` then ``warmup()`` before ``infer()``.
    """
    plan = resolve_plan(settings)
    logger.info("engine plan: %s %s on %s (%s)", plan.backend, plan.precision, plan.device, plan.reason)
    if plan.verify_against:
        plan = replace(plan, precision=plan.verify_against, verify_against=None)
    return build_engine(plan, settings, spec, options)


@dataclass(frozen=True)
class LoadedEngine:
    """What :func:`load_engine` returns: the loaded engine, its plan and the precision check's verdict."""

    engine: Engine
    plan: EnginePlan
    verdict: Verdict | None
    """The precision check (None when none was needed, or when it is still ``pending``)."""
    verdict_cached: bool = False
    pending: PendingCheck | None = None
    """With ``defer=True`` and no cached verdict: the check still to run (``engine`` is the fp32 fallback)."""


@dataclass
class PendingCheck:
    """A precision check of ``plan`` (a reduced precision with ``verify_against``) not yet run."""

    plan: EnginePlan
    settings: Settings
    spec: PreprocessSpec
    options: EngineOptions | None
    path: Path
    """Where the verdict is cached."""

    def run(self, reference: Engine, run: Callable[[Callable[[], T]], T]) -> tuple[Verdict, Engine | None]:
        """Load the candidate, run the calibration set through it and ``reference`` (the loaded fp32
        engine), cache the verdict.

        The candidate loads in the calling thread (the pipeline's check thread: serving goes on
        meanwhile); every forward pass goes through ``run`` one chunk at a time, so on the pipeline's
        inference thread they interleave with the batches being served.

        Returns:
            The verdict, and the loaded candidate engine if it passed (else None: it is closed).
        """
        from predictor.engine import precision_check

        started = time.monotonic()
        candidate = build_engine(replace(self.plan, verify_against=None), self.settings, self.spec, self.options)
        try:
            calibration = precision_check.calibration_batches_off_thread(self.spec)
            candidate.load()
            chunk = min(32, self.settings.max_batch_size)
            verdict = precision_check.check(reference, candidate, calibration, self.plan, chunk, run=run)
        except BaseException:
            candidate.close()
            raise
        precision_check.write_verdict(self.path, verdict)
        logger.info(
            "precision check (%.1fs in all, %.1fs of forward passes; cached as %s): %s",
            time.monotonic() - started,
            verdict.seconds,
            self.path.name,
            verdict.describe(),
        )
        if verdict.passed:
            return verdict, candidate
        candidate.close()
        return verdict, None


def load_engine(
    settings: Settings,
    spec: PreprocessSpec,
    options: EngineOptions | None = None,
    run: Callable[[Callable[[], T]], T] | None = None,
    defer: bool = False,
) -> LoadedEngine:
    """Resolve the plan, build and load the engine, checking an ``auto`` reduced precision.

    When the plan asks for a check (``verify_against``), a cached verdict for this model, backend
    version, precision and hardware decides at once. Otherwise the fp32 engine is loaded and the check
    runs (:class:`PendingCheck`): right away, keeping whichever engine keeps the answers, or, with
    ``defer``, later: the fp32 engine is returned with the check ``pending``, for the caller to run
    while it already serves (the pipeline does, so a first start is not slowed down by the check).

    Args:
        settings: Predictor settings.
        spec: Preprocessing spec of the model.
        options: Backend-specific knobs.
        run: Runs a callable where every later forward pass runs (the pipeline's inference thread);
            default: in the calling thread.
        defer: Return before running an uncached check (see above).
    """
    from predictor.engine import precision_check
    from predictor.engine.cache import model_content_hash, resolve_cache_dir

    run = run or (lambda fn: fn())
    plan = resolve_plan(settings)
    logger.info("engine plan: %s %s on %s (%s)", plan.backend, plan.precision, plan.device, plan.reason)
    if not plan.verify_against:
        engine = build_engine(plan, settings, spec, options)
        run(engine.load)
        return LoadedEngine(engine, plan, None)
    fallback = replace(plan, precision=plan.verify_against, verify_against=None)
    chosen = replace(plan, verify_against=None)
    cache_dir = resolve_cache_dir(Path(settings.model_dir), settings.cache_dir)
    path = precision_check.verdict_path(
        cache_dir,
        model_content_hash(Path(settings.model_dir)),
        plan.backend,
        plan.device,
        plan.precision,
        _hardware(plan.device),
    )
    verdict = precision_check.read_verdict(path)
    if verdict is not None:
        logger.info("precision check (cached in %s): %s", path.name, verdict.describe())
        served = chosen if verdict.passed else fallback
        engine = build_engine(served, settings, spec, options)
        run(engine.load)
        return LoadedEngine(engine, served, verdict, verdict_cached=True)
    reference = build_engine(fallback, settings, spec, options)
    run(reference.load)
    pending = PendingCheck(plan, settings, spec, options, path)
    if defer:
        logger.info("serving %s fp32 until the precision check of %s has run", plan.backend, plan.precision)
        return LoadedEngine(reference, fallback, None, pending=pending)
    try:
        verdict, candidate = pending.run(reference, run)
    except BaseException:
        reference.close()
        raise
    if candidate is None:
        return LoadedEngine(reference, fallback, verdict)
    reference.close()
    return LoadedEngine(candidate, chosen, verdict)


def _hardware(device: str) -> str:
    """What the verdict depends on besides the model and runtime: the CPU's features or the GPU's name."""
    if device == "cuda":
        import torch

        return f"cuda:{torch.cuda.get_device_name()}"
    return detect_cpu().describe()


def build_engine(
    plan: EnginePlan, settings: Settings, spec: PreprocessSpec, options: EngineOptions | None = None
) -> Engine:
    """Build (not load) the engine a concrete plan names."""
    from predictor.engine.cache import resolve_cache_dir

    options = options or EngineOptions()
    threads = settings.cpu_threads or settings.usable_cores()
    model_dir = Path(settings.model_dir)
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
