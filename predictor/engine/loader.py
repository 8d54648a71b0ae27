"""Loading an engine for the settings: resolve the plan, build through the registry, load, and check an
``auto`` reduced precision against fp32 (now, from a cached verdict, or deferred while fp32 serves);
serve the fastest way of running it where a speed check measured one (:mod:`.speed_check`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from predictor.engine import precision_check, registry, speed_check
from predictor.engine.base import Engine
from predictor.engine.cache import model_content_hash, resolve_cache_dir
from predictor.engine.cpu import detect_cpu
from predictor.engine.policy import EnginePlan, openvino_importable, resolve_plan
from predictor.engine.precision_check import Verdict

if TYPE_CHECKING:
    from predictor.config import Settings
    from predictor.preprocess import PreprocessSpec

T = TypeVar("T")

logger = logging.getLogger(__name__)


def create_engine(settings: Settings, spec: PreprocessSpec) -> Engine:
    """Build (not load) the engine for ``settings.model_dir`` per the resolved plan.

    A reduced precision that ``auto`` would serve only after the precision check is *not* built here:
    this function builds the plan's fallback (fp32) instead. :func:`load_engine` runs the check.

    Args:
        settings: Predictor settings (``model_dir``, ``backend``, ``device``, ``precision``,
            ``cache_dir``, ``cpu_threads``, ``max_batch_size``).
        spec: Preprocessing spec of the model.

    Returns:
        An engine; call ``load()`` then ``warmup()`` before ``infer()``.
    """
    plan = resolve_plan(settings)
    logger.info("engine plan: %s %s on %s (%s)", plan.backend, plan.precision, plan.device, plan.reason)
    if plan.verify_against:
        plan = replace(plan, precision=plan.verify_against, verify_against=None)
    return build_engine(plan, settings, spec)


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
    path: Path
    """Where the verdict is cached."""
    build: Callable[[EnginePlan, Settings, PreprocessSpec], Engine] | None = None
    """Builds the candidate engine (default: :func:`build_engine`; tests give their own)."""

    def run(self, reference: Engine, run: Callable[[Callable[[], T]], T]) -> tuple[Verdict, Engine | None]:
        """Load the candidate, run the calibration set through it and ``reference`` (the loaded fp32
        engine), cache the verdict.

        The candidate loads in the calling thread (the pipeline's check thread: serving goes on
        meanwhile); every forward pass goes through ``run`` one chunk at a time, so on the pipeline's
        inference thread they interleave with the batches being served.

        Returns:
            The verdict, and the loaded candidate engine if it passed (else None: it is closed).
        """
        started = time.monotonic()
        candidate = (self.build or build_engine)(replace(self.plan, verify_against=None), self.settings, self.spec)
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
        run: Runs a callable where every later forward pass runs (the pipeline's inference thread);
            default: in the calling thread.
        defer: Return before running an uncached check (see above).
    """
    run = run or (lambda fn: fn())
    plan = resolve_plan(settings)
    logger.info("engine plan: %s %s on %s (%s)", plan.backend, plan.precision, plan.device, plan.reason)
    if not plan.verify_against:
        plan = apply_cached_speed(plan, settings, spec)
        engine = build_engine(plan, settings, spec)
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
        served = apply_cached_speed(chosen if verdict.passed else fallback, settings, spec)
        engine = build_engine(served, settings, spec)
        run(engine.load)
        return LoadedEngine(engine, served, verdict, verdict_cached=True)
    reference = build_engine(fallback, settings, spec)
    run(reference.load)
    pending = PendingCheck(plan, settings, spec, path)
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


def _hint(plan: EnginePlan, settings: Settings) -> str:
    if plan.openvino_hint:
        return plan.openvino_hint
    return "LATENCY" if settings.openvino_hint == "auto" else settings.openvino_hint


def variant_of(plan: EnginePlan, settings: Settings) -> speed_check.Variant:
    """The speed check's name for what ``plan`` serves."""
    hint = _hint(plan, settings) if plan.backend == "openvino" else ""
    return speed_check.Variant(plan.backend, plan.precision, hint)


def plan_for(variant: speed_check.Variant, plan: EnginePlan, why: str) -> EnginePlan:
    """``plan`` serving ``variant`` instead (same device and precision)."""
    return replace(plan, backend=variant.backend, openvino_hint=variant.openvino_hint, reason=f"{plan.reason}; {why}")


def speed_check_for(plan: EnginePlan, settings: Settings, spec: PreprocessSpec) -> speed_check.PendingSpeedCheck | None:
    """The speed check for what ``plan`` serves, or None when the settings leave nothing to choose.

    It applies on the CPU when ``backend`` or ``openvino_hint`` is ``auto``.
    """
    if plan.device != "cpu" or (settings.backend != "auto" and settings.openvino_hint != "auto"):
        return None
    checked = plan.backend if plan.precision != "fp32" else None
    variants = speed_check.candidates(
        plan.precision, settings.backend, settings.openvino_hint, checked, openvino_importable()
    )
    if len(variants) < 2:
        return None
    model_dir = Path(settings.model_dir)
    batch = speed_check.measure_batch(settings.max_batch_size)
    path = speed_check.verdict_path(
        resolve_cache_dir(model_dir, settings.cache_dir),
        model_content_hash(model_dir),
        variants,
        _hardware("cpu"),
        settings.cpu_threads or settings.usable_cores(),
        batch,
    )

    def build(v: speed_check.Variant) -> Engine:
        return build_engine(plan_for(v, plan, "speed check candidate"), settings, spec)

    return speed_check.PendingSpeedCheck(variants, path, batch, spec.crop_hw, build)


def apply_cached_speed(plan: EnginePlan, settings: Settings, spec: PreprocessSpec) -> EnginePlan:
    """``plan``, or the fastest way of serving its precision where a cached speed verdict names one."""
    pending = speed_check_for(plan, settings, spec)
    verdict = pending.cached() if pending is not None else None
    if pending is None or verdict is None:
        return plan
    winner = speed_check.Variant.parse(verdict.winner)
    if winner not in pending.variants:
        return plan
    logger.info("speed check (cached in %s): %s", pending.path.name, verdict.describe())
    return plan_for(winner, plan, f"measured fastest here ({verdict.winner}, cached)")


def build_engine(plan: EnginePlan, settings: Settings, spec: PreprocessSpec) -> Engine:
    """Build (not load) the engine a concrete plan names, through the backend registry."""
    model_dir = Path(settings.model_dir)
    args = registry.BuildArgs(
        spec=spec,
        model_dir=model_dir,
        cache_dir=resolve_cache_dir(model_dir, settings.cache_dir),
        device=plan.device,
        precision=plan.precision,
        threads=settings.cpu_threads or settings.usable_cores(),
        max_batch_size=settings.max_batch_size,
        torch_compile=settings.torch_compile,
        openvino_hint=_hint(plan, settings),
        gpu_memory_fraction=settings.gpu_memory_fraction,
    )
    return registry.create(plan.backend, args)
