"""The one registry of inference backends: name → what it runs (devices, precisions) and how to build it.

Every caller builds engines through :func:`create` (the engine choice, ``bench/raw_probe.py``, the engine
tests), and every list of backend or precision names is read from here: the ``backend`` and ``precision``
settings accept :func:`names` and :func:`precision_names` (plus ``auto``), ``--help`` lists them, and the
chart schema's enums are held to them by ``tests/chart/test_chart_values.py``. So adding a backend is one
module with an :class:`~predictor.engine.base.Engine` subclass, one :func:`register` call here and its
name in the chart schema (docs/architecture.md, "Adding a backend").

This table is the one statement of which precisions a backend runs on which device: :func:`create`
refuses anything else, so the engines do not restate it. Factories import their backend lazily:
OpenVINO or ONNX Runtime are loaded only when used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from predictor.engine.base import Engine
    from predictor.preprocess import PreprocessSpec


@dataclass(frozen=True)
class BuildArgs:
    """Everything a backend factory may use; each backend takes what it needs."""

    spec: PreprocessSpec
    model_dir: Path
    cache_dir: Path
    device: str
    precision: str
    threads: int = 0
    max_batch_size: int = 32
    torch_compile: bool = False
    openvino_hint: str = "LATENCY"
    gpu_memory_fraction: float = 1.0


@dataclass(frozen=True)
class Backend:
    """One backend: the precisions it runs per device, and its factory (builds, does not load)."""

    name: str
    precisions: dict[str, tuple[str, ...]]
    factory: Callable[[BuildArgs], Engine]
    distribution: str = ""
    """The Python distribution whose version keys cached verdicts (default: ``name``)."""


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    """Add a backend (its name must be new)."""
    if backend.name in BACKENDS:
        raise ValueError(f"backend {backend.name!r} is registered already")
    BACKENDS[backend.name] = backend


def names() -> tuple[str, ...]:
    """The registered backends, in the order they were registered (the order ``--help`` lists them)."""
    return tuple(BACKENDS)


def precision_names() -> tuple[str, ...]:
    """Every precision some registered backend runs on some device, in the order the table first names it."""
    seen = (p for backend in BACKENDS.values() for on_device in backend.precisions.values() for p in on_device)
    return tuple(dict.fromkeys(seen))


def setting_values(field_name: str) -> tuple[str, ...]:
    """What the ``backend`` or ``precision`` setting accepts: ``auto`` and :func:`names` or
    :func:`precision_names` (what ``Settings`` validates against and ``--help`` lists)."""
    if field_name == "backend":
        return ("auto", *names())
    if field_name == "precision":
        return ("auto", *precision_names())
    raise ValueError(f"no setting {field_name!r} is named by the registry: backend or precision")


def get(name: str) -> Backend:
    """The backend called ``name``.

    Raises:
        ValueError: no such backend (the message lists the known ones).
    """
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}: one of {', '.join(sorted(BACKENDS))}") from None


def precisions(name: str, device: str) -> tuple[str, ...]:
    """Precisions ``name`` runs on ``device`` (empty when it does not run there)."""
    return get(name).precisions.get(device, ())


def backends_for(device: str) -> list[str]:
    """Backends that run on ``device``."""
    return sorted(n for n, b in BACKENDS.items() if device in b.precisions)


def check(name: str, device: str, precision: str) -> None:
    """Refuse a backend, device and precision that do not go together.

    Raises:
        ValueError: the backend is unknown, does not run on ``device``, or not in ``precision`` there
            (the message says what does).
    """
    allowed = precisions(name, device)
    if not allowed:
        raise ValueError(
            f"backend {name} does not run on {device}; on {device} use " + " or ".join(backends_for(device))
        )
    if precision not in allowed:
        raise ValueError(f"backend {name} on {device} runs {', '.join(allowed)}, not {precision}")


def runtime_version(name: str) -> str:
    """The installed version of backend ``name``'s runtime (``unknown`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    backend = BACKENDS.get(name)
    try:
        return version(backend.distribution if backend is not None and backend.distribution else name)
    except PackageNotFoundError:
        return "unknown"


def create(name: str, args: BuildArgs) -> Engine:
    """Build (not load) an engine of backend ``name``; call ``load()`` then ``warmup()``.

    Raises:
        ValueError: see :func:`check`.
    """
    check(name, args.device.split(":")[0], args.precision)
    return get(name).factory(args)


def _torch(a: BuildArgs) -> Engine:
    from predictor.engine.torch_engine import TorchEngine

    return TorchEngine(
        a.spec,
        a.model_dir,
        a.device,
        a.precision,
        a.threads,
        a.torch_compile,
        a.max_batch_size,
        memory_fraction=a.gpu_memory_fraction,
    )


def _openvino(a: BuildArgs) -> Engine:
    from predictor.engine.openvino_engine import OpenVinoEngine

    return OpenVinoEngine(a.spec, a.model_dir, a.cache_dir, a.precision, a.threads, a.openvino_hint)


def _onnxruntime(a: BuildArgs) -> Engine:
    from predictor.engine.onnx_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(
        a.spec, a.model_dir, a.cache_dir, a.device, a.precision, a.threads, memory_fraction=a.gpu_memory_fraction
    )


register(Backend("torch", {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}, _torch))
register(Backend("openvino", {"cpu": ("fp32", "bf16", "fp16")}, _openvino))
register(Backend("onnxruntime", {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}, _onnxruntime))
