"""The start-up path of one model: what the pipeline serves with, and how it may change while serving.

:class:`ModelRuntime` reads the model directory (preprocessing, labels, version), loads and warms up the
engine on the inference thread (thread-bound state such as CUDA streams or OpenMP pools is created where
every later forward pass runs), and, after the pod is ready, runs a deferred precision check while fp32
serves, then the speed check (:mod:`predictor.engine.speed_check`): candidate engines load on the checks'
own thread, each calibration or timed forward pass and each warm-up batch size runs on the inference
thread between served batches, and the swap itself is one step there, so no batch sees a half-switched
engine and serving never waits on more than one such step.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from predictor.batching import BatcherClosed
from predictor.config import Settings
from predictor.engine import Engine, EnginePlan, PendingCheck, load_engine
from predictor.engine.cache import model_content_hash
from predictor.engine.faults import first_line, is_out_of_memory
from predictor.engine.loader import plan_for, speed_check_for, variant_of
from predictor.engine.precision_check import Verdict
from predictor.engine.speed_check import BackgroundWork
from predictor.metrics import PredictorMetrics
from predictor.preprocess import PreprocessSpec, inspect_jpeg

logger = logging.getLogger(__name__)
R = TypeVar("R")
Run = Callable[[Callable[[], R]], R]


class _Closing(BaseException):
    """Raised inside the background checks when the pipeline shuts down (not an ``Exception``: no handler
    for a failed candidate on the way may take it for one)."""


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
    """The model being served: spec, labels, version and the current engine (which a check may replace).

    Args:
        settings: The predictor settings.
        metrics: Where ``model_info`` and the device-decode fallbacks are recorded.
        run: Runs a callable on the inference thread and returns its result.
        engine: An engine to use instead of the one the settings plan (tests).
        pending: With ``engine``: a precision check to run after ready, as a deferred one would (tests).
        on_warmup_capped: Told the largest batch size that warmed up when a larger one ran out of device
            memory (the pipeline caps its batches there instead of failing the start).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: PredictorMetrics,
        run: Run,
        engine: Engine | None = None,
        pending: PendingCheck | None = None,
        on_warmup_capped: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_warmup_capped = on_warmup_capped
        self.metrics = metrics
        self._run = run
        self.engine: Engine | None = engine
        self.spec: PreprocessSpec | None = None
        self.labels: list[str] = []
        self.model_version = settings.model_version
        self.precision_verdict: Verdict | None = None
        """The precision check (None when none ran: explicit precision, no reduced one, or still running)."""
        self.precision_check_done = threading.Event()
        """Set once no precision check is running any more (at once when none was needed)."""
        self.device_fallbacks = 0
        """JPEGs that ``jpeg_decode=device`` sent to the CPU decoder since start."""
        self.plan: EnginePlan | None = None
        """What the engine serves (None for an engine given by a test)."""
        self.background_work: BackgroundWork | None = None
        """Serving-like work the speed check runs beside its timed passes (the pipeline's decode pool)."""
        self.speed_check_done = threading.Event()
        """Set once no speed check is running any more (at once when none applies)."""
        self._pending = pending
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def load(self) -> None:
        """Read the model directory, load and warm up the engine (synchronous, heavy)."""
        s = self.settings
        model_dir = Path(s.model_dir)
        if not (model_dir / "config.json").exists():
            raise FileNotFoundError(_no_model_message(model_dir))
        self.spec = PreprocessSpec.from_model_dir(model_dir)
        self.labels = load_labels(model_dir)
        if not self.model_version:
            self.model_version = model_content_hash(model_dir)[:12]
        if self.engine is None:
            loaded = load_engine(s, self.spec, run=self._run, defer=True)
            self.engine, self.precision_verdict, self._pending = loaded.engine, loaded.verdict, loaded.pending
            self.plan = loaded.plan
        else:
            self._run(self.engine.load)
        engine = self.engine
        if s.jpeg_decode == "device" and not engine.decodes_jpeg:
            raise ValueError(
                f"jpeg_decode=device decodes into the torch backend's device tensors, but the engine is "
                f"{engine.info.backend}: set backend=torch (a CUDA device is where it pays off) or jpeg_decode=cpu"
            )
        self._prepare(engine, self._run)
        if s.jpeg_decode == "device":  # the device decoder's first call initialises its library (nvJPEG)
            self._warm_up_device_decode(engine)
        self._set_model_info(engine, None)

    def _prepare(self, engine: Engine, run: Run) -> None:
        """Hook the engine up and warm up every batch size it wants, one ``run`` (inference-thread step) each.

        A size that runs out of device memory ends the warm-up: batches are capped at the largest size
        that warmed up (``on_warmup_capped``) rather than failing the start; if even the smallest does not
        fit, the error is raised.
        """
        if engine.decodes_jpeg:
            engine.on_decode_fallback = self._device_fallback  # type: ignore[attr-defined]
        largest = 0
        for size in sorted(engine.warmup_sizes(self.settings.max_batch_size)):
            try:
                run(lambda size=size: engine.warmup([size]))
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
                return
            largest = size

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

    def _set_model_info(self, new: Engine, old: Engine | None) -> None:
        m, name = self.metrics.model_info, self.settings.model_name
        if old is not None:
            i = old.info
            m.remove(name, self.model_version, i.device, i.dtype, i.backend)
        i = new.info
        m.labels(name, self.model_version, i.device, i.dtype, i.backend).set(1)

    # --- the background precision check ----------------------------------------------------------

    def start_background_check(self) -> None:
        """After ready: run a deferred precision check, then a speed check, on their own thread (or mark
        that none runs)."""
        speed = speed_check_for(self.plan, self.settings, self.spec) if self.plan is not None else None
        if self._pending is None and speed is None:
            self.precision_check_done.set()
            self.speed_check_done.set()
            return
        logger.info(
            "background checks started: precision %s, speed %s",
            f"of {self._pending.plan.backend} {self._pending.plan.precision}" if self._pending else "none",
            f"of {len(speed.variants)} ways to serve" if speed else "unless the precision changes",
        )
        self._thread = threading.Thread(target=self._check, name="model-checks", daemon=True)
        self._thread.start()

    def _check(self) -> None:
        """The deferred checks, one after the other, while the current engine serves."""
        try:
            try:
                self._check_precision()
            except _Closing:
                logger.info("precision check stopped: shutting down")
                return
            finally:
                self.precision_check_done.set()
            try:
                self._check_speed()
            except _Closing:
                logger.info("speed check stopped: shutting down")
                return
            logger.info("background checks done")
        finally:
            self.speed_check_done.set()

    def _check_precision(self) -> None:
        """Check the deferred reduced precision while fp32 serves; switch engines if it keeps the answers."""
        if self._pending is None:
            return
        assert self.engine is not None
        try:
            verdict, candidate = self._pending.run(self.engine, self._on_inference_thread)
            self.precision_verdict = verdict
            if candidate is not None:
                self._serve(candidate)
                if self.plan is not None:
                    self.plan = replace(self._pending.plan, verify_against=None)
        except Exception:
            logger.exception("precision check failed; serving stays in fp32")

    def _check_speed(self) -> None:
        """Time every way of serving the current precision; serve the fastest (:mod:`~predictor.engine.speed_check`)."""
        pending = speed_check_for(self.plan, self.settings, self.spec) if self.plan is not None else None
        if pending is None or self.plan is None or self.engine is None:
            return
        current = variant_of(self.plan, self.settings)
        cached = pending.cached() is not None
        try:
            verdict, winner, candidate = pending.run(
                self.engine, current, self._on_inference_thread, self._background_work()
            )
            name = pending.path.name
            where = f"cached in {name}" if cached else f"{verdict.seconds:.1f}s, cached as {name}"
            logger.info("speed check (%s): %s", where, verdict.describe())
            if candidate is not None:
                self._serve(candidate)
                self.plan = plan_for(winner, self.plan, f"measured fastest here ({winner.label})")
        except Exception:
            logger.exception("speed check failed; serving stays as it is")

    def _background_work(self) -> BackgroundWork | None:
        """``background_work`` that stops the check, quietly, once shutting down (the decode pool may be
        gone by then: it refuses new work, and that is no failure of the check)."""
        work = self.background_work
        if work is None:
            return None

        def guarded(n: int) -> Callable[[], None]:
            if self._closing.is_set():
                raise _Closing
            try:
                return work(n)
            except RuntimeError:
                if self._closing.is_set():
                    raise _Closing from None
                raise

        return guarded

    def _serve(self, candidate: Engine) -> None:
        """Warm ``candidate`` up and switch to it between two batches."""
        self._prepare(candidate, self._on_inference_thread)
        old = self.engine
        self._on_inference_thread(lambda: self._switch(candidate))
        self._set_model_info(candidate, old)
        i = candidate.info
        logger.info("now serving %s %s on %s", i.backend, i.dtype, i.device)

    def _switch(self, candidate: Engine) -> None:
        old, self.engine = self.engine, candidate
        if old is not None:
            old.close()

    def _on_inference_thread(self, fn: Callable[[], R]) -> R:
        if self._closing.is_set():
            raise _Closing
        try:
            return self._run(fn)
        except BatcherClosed:  # the inference thread has stopped: the process is exiting
            raise _Closing from None

    def stop_background_work(self) -> None:
        """Stop a running precision check at its next step (server shutdown; :meth:`close` does it too)."""
        self._closing.set()

    def join_background_work(self, timeout_s: float = 60) -> None:
        """Stop the check and wait for its thread (blocking: run it off the event loop)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

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
