"""The start-up path of one model: what the pipeline serves with.

:class:`ModelRuntime` reads the model directory (preprocessing, labels, version), has the engine chosen,
checked and loaded (:mod:`predictor.engine.choice`: every load and calibration pass on the inference
thread, where thread-bound state such as CUDA streams or OpenMP pools must be created) and warms it up,
all before the pod reports ready. The engine it loads serves until the process exits.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from predictor.config import Settings
from predictor.engine import Engine, LoadedEngine, ServingChoice, load_engine
from predictor.engine.cache import model_content_hash
from predictor.engine.faults import first_line, is_out_of_memory
from predictor.engine.precision_check import PrecisionVerdict
from predictor.metrics import PredictorMetrics
from predictor.preprocess import PreprocessSpec, inspect_jpeg

logger = logging.getLogger(__name__)
R = TypeVar("R")
Run = Callable[[Callable[[], R]], R]
Loader = Callable[[PreprocessSpec, Run], LoadedEngine]
"""Chooses, checks and loads the engine for a model (default: :func:`~predictor.engine.load_engine`)."""


def freeze_startup_heap() -> int:
    """Take every object alive now out of the cyclic garbage collector's view; returns how many it froze.

    Call once, when the model is loaded and warmed up and before serving. What start-up leaves (the imported
    libraries, the engine, the model: about 490,000 tracked objects for EfficientNet-Lite0 on OpenVINO) lives as
    long as the process, yet each full collection scans it all: 320 ms every 15-30 s at 400 clients, on whichever
    thread allocates (mostly the event loop), holding the GIL, so that no request is parsed or answered and no
    batch is assembled meanwhile. Frozen, a full collection scans only what serving allocated since (25 ms,
    docs/performance.md, "The event loop and the garbage collector"). Frozen objects are still freed when their
    last reference goes; only cycles among them would stay, and start-up's objects are never dropped.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("start-up objects frozen out of garbage collection: %d", frozen)
    return frozen


def warmup_jpeg() -> bytes:
    """A small JPEG, larger than any model input, for warming up the decode paths."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (120, 90, 60)).save(buf, format="JPEG")
    return buf.getvalue()


def load_labels(model_dir: Path) -> list[str]:
    """Class labels from the model's ``config.json``, indexed by class id.

    Read as JSON (``id2label``, or timm's ``label_names``), not through transformers' ``AutoConfig``,
    whose import is a large part of a start; a config with neither falls back to ``AutoConfig``.
    """
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    id2label = {int(k): str(v) for k, v in (cfg.get("id2label") or {}).items()}
    if not id2label and isinstance(cfg.get("label_names"), list):
        id2label = dict(enumerate(str(v) for v in cfg["label_names"]))
    if not id2label:
        from transformers import AutoConfig  # heavy import: only for configs without labels

        id2label = {int(k): str(v) for k, v in (AutoConfig.from_pretrained(str(model_dir)).id2label or {}).items()}
    n = max(id2label, default=-1) + 1
    return [id2label.get(i, f"class_{i}") for i in range(n)]


class ModelRuntime:
    """The model being served: spec, labels, version and the engine (chosen once, before ready).

    Args:
        settings: The predictor settings.
        metrics: Where ``model_info`` and the device-decode fallbacks are recorded.
        run: Runs a callable on the inference thread and returns its result.
        engine: An engine to use instead of the one the settings choose (tests).
        on_warmup_capped: Told the largest batch size that warmed up when a larger one ran out of device
            memory (the pipeline caps its batches there instead of failing the start).
        loader: Chooses, checks and loads the engine (tests give their own; default:
            :func:`~predictor.engine.load_engine` with ``settings``).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: PredictorMetrics,
        run: Run,
        engine: Engine | None = None,
        on_warmup_capped: Callable[[int], None] | None = None,
        loader: Loader | None = None,
    ) -> None:
        self.settings = settings
        self._on_warmup_capped = on_warmup_capped
        self.metrics = metrics
        self._run = run
        self._loader = loader
        self.engine: Engine | None = engine
        self.spec: PreprocessSpec | None = None
        self.labels: list[str] = []
        self.model_version = settings.model_version
        self.warm_pass: tuple[int, float] | None = None
        """A forward pass timed once everything was warm: (images, seconds); None until loaded."""
        self.choice: ServingChoice | None = None
        """What the engine serves and why (None for an engine given by a test)."""
        self.precision_verdict: PrecisionVerdict | None = None
        """The precision check (None when none was needed: an explicit precision, or no reduced one)."""
        self.device_fallbacks = 0
        """JPEGs that ``jpeg_decode=device`` sent to the CPU decoder since start."""

    def load(self) -> None:
        """Read the model directory, choose, check, load and warm up the engine (synchronous, heavy)."""
        s = self.settings
        model_dir = Path(s.model_dir)
        if not (model_dir / "config.json").exists():
            raise FileNotFoundError(_no_model_message(model_dir))
        self.spec = PreprocessSpec.from_model_dir(model_dir)
        self.labels = load_labels(model_dir)
        if not self.model_version:
            self.model_version = model_content_hash(model_dir)[:12]
        if self.engine is None:
            loaded = (self._loader or self._load_engine)(self.spec, self._run)
            self.engine, self.choice, self.precision_verdict = loaded.engine, loaded.choice, loaded.verdict
            logger.info("serving %s", loaded.choice.describe())
        else:
            self._run(self.engine.load)
        engine = self.engine
        if s.jpeg_decode == "device" and not engine.decodes_jpeg:
            raise ValueError(
                f"jpeg_decode=device decodes into the torch backend's device tensors, but the engine is "
                f"{engine.info.backend}: set backend=torch (a CUDA device is where it pays off) or jpeg_decode=cpu"
            )
        self._prepare(engine)
        if s.jpeg_decode == "device":  # the device decoder's first call initialises its library (nvJPEG)
            self._warm_up_device_decode(engine)
        i = engine.info
        self.metrics.model_info.labels(s.model_name, self.model_version, i.device, i.dtype, i.backend).set(1)

    def _load_engine(self, spec: PreprocessSpec, run: Run) -> LoadedEngine:
        return load_engine(self.settings, spec, run)

    def _prepare(self, engine: Engine) -> None:
        """Hook the engine up and warm up every batch size it wants, one inference-thread step each.

        A size that runs out of device memory ends the warm-up: batches are capped at the largest size
        that warmed up (``on_warmup_capped``) rather than failing the start; if even the smallest does not
        fit, the error is raised.
        """
        if engine.decodes_jpeg:
            engine.on_decode_fallback = self._device_fallback  # type: ignore[attr-defined]
        largest = 0
        for size in sorted(engine.warmup_sizes(self.settings.max_batch_size)):
            try:
                self._run(lambda size=size: engine.warmup([size]))
            except Exception as e:
                if not is_out_of_memory(e) or largest == 0:
                    raise
                engine.release_memory()
                logger.warning(
                    "warm-up: a batch of %d ran out of device memory (%s); batches are capped at %d",
                    size,
                    first_line(e),
                    largest,
                )
                if self._on_warmup_capped is not None:
                    self._on_warmup_capped(largest)
                break
            largest = size
        self.warm_pass = (largest, self._timed_pass(engine, largest))

    def _timed_pass(self, engine: Engine, size: int) -> float:
        """Seconds one more (warm) pass of ``size`` images takes: the drain rate's estimate until one is measured."""

        def timed() -> float:
            started = time.perf_counter()
            engine.warmup([size])
            return time.perf_counter() - started

        return self._run(timed)

    def _warm_up_device_decode(self, engine: Engine) -> None:
        """Decode the warm-up JPEG on the device; fail the load if the device decoder could not."""
        warm = inspect_jpeg(warmup_jpeg(), self.settings.max_image_pixels)
        if warm is None:
            raise RuntimeError("the warm-up JPEG did not pass the device-decode header checks")
        before = self.device_fallbacks
        self._run(lambda: engine.infer_items([warm, warm]))
        if self.device_fallbacks != before:
            raise RuntimeError(
                f"jpeg_decode=device: the device decoder could not decode a plain baseline JPEG "
                f"({engine.info.device}; see the log); set jpeg_decode=cpu"
            )

    def _device_fallback(self, reason: str) -> None:
        """One JPEG left the device path for the CPU decoder: count it, log the first one."""
        self.device_fallbacks += 1
        self.metrics.jpeg_device_fallbacks.labels(self.settings.model_name, reason).inc()
        if self.device_fallbacks == 1:
            logger.warning(
                "jpeg_decode=device: a JPEG was decoded on the CPU instead (%s); later ones are only counted "
                "in classifier_jpeg_device_fallbacks_total",
                reason,
            )

    def close(self) -> None:
        """Release the engine (after the inference thread has stopped)."""
        if self.engine is not None:
            self.engine.close()


def _no_model_message(model_dir: Path) -> str:
    """What to do when ``model_dir`` holds no model: the fix differs inside and outside KServe."""
    message = f"{model_dir} is not a model directory (no config.json)"
    if os.environ.get("STORAGE_URI"):
        # STORAGE_URI is read by KServe's storage initializer (an init container), never by this process.
        return (
            f"{message}; STORAGE_URI={os.environ['STORAGE_URI']} is set, but only KServe's storage initializer "
            f"downloads it: outside KServe mount the model directory instead "
            f"(docker run -v /path/to/model:{model_dir}:ro ...) or pass --model_dir"
        )
    return f"{message}; pass --model_dir, mount a model directory at {model_dir}, or deploy with the chart (storageUri)"
