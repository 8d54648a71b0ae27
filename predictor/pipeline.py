"""The classification pipeline: admission → decode → batch → infer → top-k. Knows nothing of HTTP, KServe or Redis.

A request is admitted (counted in images and decoded pixels, bounded in both and by its expected queue
wait: :mod:`predictor.admission`), its images are decoded in a pool that takes turns by request, fair by
decoded pixels (:mod:`predictor.fair_pool`), as soon as it is admitted, so while the dedicated inference
thread runs one batch the next batch's images are being decoded; the batcher coalesces them into forward
passes; each image gets its top-k. The model itself (spec, labels, the engine chosen and warmed up before
ready) is the :class:`~predictor.lifecycle.ModelRuntime`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from predictor.admission import Admission, Reservation
from predictor.batching import BatchStats, DynamicBatcher, LatencyCap
from predictor.config import Settings
from predictor.engine import Engine, EngineInfo
from predictor.engine.base import Item
from predictor.engine.faults import BatchCap, DeviceGuard
from predictor.errors import DeadlineExceeded, InsufficientMemory, InvalidInput, NotReady, PredictorError
from predictor.fair_pool import FairPool
from predictor.inputs import ImageInput, prepare_input
from predictor.lifecycle import ModelRuntime, warmup_jpeg
from predictor.limits import check_image_count, check_top_k
from predictor.metrics import PredictorMetrics, class_series_names
from predictor.postprocess import Prediction, predictions, softmax
from predictor.preprocess import PreprocessSpec, decode_cost_pixels

logger = logging.getLogger(__name__)


class Pipeline:
    """Classify images with dynamic batching over one inference engine.

    Args:
        settings: the predictor settings.
        metrics: where to record metrics; a fresh private registry when omitted.
        engine: an engine to use instead of the one the settings choose (tests).
    """

    def __init__(self, settings: Settings, metrics: PredictorMetrics | None = None, engine: Engine | None = None):
        if metrics is None:
            from prometheus_client import CollectorRegistry

            metrics = PredictorMetrics(CollectorRegistry())
        self.settings = settings
        self.metrics = metrics
        self.model_name = settings.model_name
        self._given_engine = engine
        self.runtime: ModelRuntime | None = None
        self.admission = Admission(
            settings.max_queue_images,
            self._queue_depth_changed,
            max_wait_s=settings.queue_wait_budget_ms() / 1000,
            cold_start_images=min(settings.max_batch_size, settings.max_queue_images),
            pixel_capacity=settings.max_queue_pixels,
            busy_from_depth=False,  # busy while the batcher has images: see load()
            # Refusals past half the paced rate stretch Retry-After: clients that honour it then keep their
            # refusals under the rate answered at once (docs/performance.md, "Retry-After under pressure").
            refusals_per_s=settings.paced_refusals_per_s / 2 or None,
        )
        self._batcher: DynamicBatcher[Item, np.ndarray] | None = None
        self._memory_cap = settings.max_batch_size
        self._latency_cap = LatencyCap(settings.max_batch_size, self.admission.max_wait_s)
        self._guard: DeviceGuard | None = None
        self._decode_pool: FairPool | None = None
        self.load_seconds = 0.0
        self._ready = False
        self._not_ready_since: float | None = None
        """Monotonic time the model last stopped being ready (None while ready, and before the first ready)."""
        metrics.born_at_zero(self.model_name)

    @property
    def ready(self) -> bool:
        """Loaded, not stopped or unloaded (the device's state is :attr:`broken`)."""
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        if self._ready and not value:
            self._not_ready_since = time.monotonic()
        elif value:
            self._not_ready_since = None
        self._ready = value

    def not_ready_seconds(self) -> float | None:
        """Seconds since the model stopped being ready, having been ready; None while ready or before the
        first ready (liveness fails once this passes ``liveness_not_ready_grace_seconds``)."""
        since = self._not_ready_since
        return None if since is None else time.monotonic() - since

    # --- what the model is (the runtime's) -------------------------------------------------------

    def _rt(self) -> ModelRuntime:
        if self.runtime is None or self.runtime.engine is None:
            raise NotReady("model is not loaded")
        return self.runtime

    @property
    def engine_info(self) -> EngineInfo:
        """Backend, device and dtype in use."""
        return self._rt().engine.info  # type: ignore[union-attr]

    @property
    def spec(self) -> PreprocessSpec | None:
        """The model's preprocessing (None before load)."""
        return self.runtime.spec if self.runtime else None

    @property
    def labels(self) -> list[str]:
        """Class labels by id."""
        return self.runtime.labels if self.runtime else []

    @property
    def model_version(self) -> str:
        """The configured version, or the weights' content hash."""
        return self.runtime.model_version if self.runtime else self.settings.model_version

    @property
    def broken(self) -> str | None:
        """Why the inference device is unusable (a broken CUDA context), or None while it is fine."""
        return self._guard.broken if self._guard is not None else None

    def broken_error(self) -> PredictorError:
        """The 503 answered while the device is unusable."""
        if self._guard is None:
            raise RuntimeError("broken_error() before load()")
        return self._guard.broken_error()

    @property
    def batch_cap(self) -> int:
        """The most images the next forward pass may hold (``max_batch_size`` unless memory ran short, or a
        pass of that many would take more than 1/8 of the queue-wait budget)."""
        return self._batcher.batch_cap if self._batcher is not None else self.settings.max_batch_size

    @property
    def queue_depth(self) -> int:
        """Images admitted and not yet inferred."""
        return self.admission.depth

    # --- lifecycle -------------------------------------------------------------------------------

    def load(self) -> None:
        """Load and warm up the model, the decode path and the batcher (synchronous, heavy)."""
        started = time.monotonic()
        s = self.settings
        self._batcher = DynamicBatcher(
            self._infer_batch,
            max_batch_size=s.max_batch_size,
            max_batch_delay_ms=s.max_batch_delay_ms,
            on_batch=self._on_batch,
            thread_name="inference",
            # The drain rate counts the time images wait for or run their forward pass: a request whose images
            # take long to decode (decoding takes turns by request) does not make the pod look slow to others.
            on_depth=self.admission.rate.depth_changed,
        )
        cap = BatchCap(s.max_batch_size, s.oom_recovery_seconds, self._batch_cap_changed)
        name = self.model_name
        self._guard = DeviceGuard(cap, lambda n: self.metrics.out_of_memory.labels(name).inc())
        self.runtime = ModelRuntime(
            s, self.metrics, self._batcher.run_on_handler_thread, self._given_engine, on_warmup_capped=cap.lower
        )
        self.runtime.load()
        self._start_from_warm_pass()
        # Decoding takes turns by request (fair by decoded pixels): no request waits behind another's backlog.
        self._decode_pool = FairPool(s.decode_threads or s.usable_cores(), thread_name_prefix="decode")
        # Decode one sample too, so the first request does not pay the decode path's lazy imports.
        self._decode_pool.submit(self._prepare, warmup_jpeg()).result()
        self.load_seconds = time.monotonic() - started
        self.ready = True
        m, name = self.metrics, self.model_name
        m.load_seconds.labels(name).set(self.load_seconds)
        m.queue_capacity.labels(name).set(s.max_queue_images)
        m.batch_cap.labels(name).set(self.batch_cap)
        m.predictions.set_classes(name, class_series_names(self.labels, s.prediction_metrics_max_classes))
        self._queue_depth_changed(0)
        self._log_loaded()

    def _start_from_warm_pass(self) -> None:
        """Until passes are measured, size batches and admit by the warm pass: the latency cap takes its
        time per image as a first sample, and the drain rate is a full (capped) batch at that time per image
        after the batch delay (a batch may wait that long for company). Conservative for a GPU, whose larger
        batches run faster per image; the first drained image replaces the rate."""
        warm = self.runtime.warm_pass if self.runtime is not None else None
        if warm is None or warm[0] < 1:
            return
        size, seconds = warm[0], max(warm[1], 1e-6)
        if self._latency_cap.observe(size, seconds):
            self._apply_batch_cap()
        batch = self.batch_cap
        busy_s = self.settings.max_batch_delay_ms / 1000 + batch * seconds / size
        self.admission.rate.estimate(batch, busy_s)
        logger.info(
            "until measured: batches of at most %d, a drain rate of %.1f images/s (a warm pass of %d took %.1f ms)",
            batch, batch / busy_s, size, seconds * 1000,
        )  # fmt: skip

    def _log_loaded(self) -> None:
        s, info, spec = self.settings, self.engine_info, self.spec
        assert spec is not None
        logger.info(
            "loaded model %s version %s from %s: backend=%s device=%s dtype=%s input=%dx%d labels=%d "
            "max_batch_size=%d max_batch_delay_ms=%g max_queue_images=%d load=%.2fs",
            self.model_name, self.model_version, Path(s.model_dir), info.backend, info.device, info.dtype,
            *spec.crop_hw, len(self.labels), s.max_batch_size, s.max_batch_delay_ms, s.max_queue_images,
            self.load_seconds,
        )  # fmt: skip

    async def start(self) -> None:
        """Bind the batcher to the running event loop (idempotent; the first request also does it)."""
        if self._batcher is None:
            raise RuntimeError("load() must run before start()")
        self._batcher.start()

    async def close(self) -> None:
        """Stop accepting, finish what is queued, release the engine."""
        self.ready = False
        if self._batcher is not None:
            await self._batcher.close()
        if self._decode_pool is not None:
            self._decode_pool.shutdown(wait=True)
        if self.runtime is not None:
            self.runtime.close()

    # --- the request path ------------------------------------------------------------------------

    async def classify(
        self,
        images: Sequence[ImageInput],
        top_k: int | None = None,
        timeout_s: float | None = None,
        *,
        reservation: Reservation | None = None,
    ) -> list[list[Prediction]]:
        """Classify images; any bad image fails the whole call with :class:`InvalidInput`.

        ``reservation``: the images the HTTP middleware admitted for this request before its body was read
        (:meth:`Admission.reserve <predictor.admission.Admission.reserve>`), taken first.
        """
        return await self._run(images, top_k, timeout_s, reservation, per_image=False)

    async def classify_each(
        self,
        images: Sequence[ImageInput],
        top_k: int | None = None,
        timeout_s: float | None = None,
        *,
        reservation: Reservation | None = None,
    ) -> list[list[Prediction] | PredictorError]:
        """Classify images; each image gets its own outcome (a bad one does not fail the rest)."""
        return await self._run(images, top_k, timeout_s, reservation, per_image=True)

    def check_top_k(self, top_k: int | None) -> int:
        """Validate a requested top_k (:func:`predictor.limits.check_top_k`); None gives the default."""
        s = self.settings
        return check_top_k(top_k, s.default_top_k, s.max_top_k, len(self.labels))

    async def _run(
        self,
        images: Sequence[ImageInput],
        top_k: int | None,
        timeout_s: float | None,
        reservation: Reservation | None,
        *,
        per_image: bool,
    ) -> list:
        if not self.ready or self._batcher is None or self._decode_pool is None:
            raise NotReady("model is not ready: loading or shutting down")
        if self.broken is not None:
            raise self.broken_error()
        self._batcher.start()
        k = self.check_top_k(top_k)
        n = len(images)
        check_image_count(n, self.settings.max_images_per_request)
        timeout = timeout_s if timeout_s is not None else self.settings.request_timeout_ms / 1000
        deadline = time.monotonic() + timeout
        spec = self.spec
        assert spec is not None
        costs = [decode_cost_pixels(img, spec) for img in images]
        with self.admission.slots(n, reservation, pixels=sum(costs)):
            try:
                work = self._decode_and_infer(images, costs, k, deadline, per_image)
                return await asyncio.wait_for(work, timeout)
            except TimeoutError:
                raise DeadlineExceeded(f"request not answered within its deadline of {timeout * 1000:.0f} ms") from None

    async def _decode_and_infer(
        self, images: Sequence[ImageInput], costs: list[int], k: int, deadline: float, per_image: bool
    ) -> list:
        assert self._batcher is not None and self._decode_pool is not None
        prepare = self._prepare
        decoded = await self._decode_pool.run_flow([lambda img=img: prepare(img) for img in images], costs)
        for i, d in enumerate(decoded):
            if isinstance(d, BaseException) and not isinstance(d, PredictorError):
                raise d
            if not per_image and isinstance(d, PredictorError):
                raise d.for_image(i, len(images))
        good = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
        outcomes: list = list(decoded)
        if good:
            # Items decoded on the device can fail there alone (InvalidInput in their place).
            probs = await self._batcher.submit([decoded[i] for i in good], deadline, return_exceptions=True)
            for i, p in zip(good, probs, strict=True):
                if isinstance(p, InvalidInput | InsufficientMemory):  # this image alone failed
                    if not per_image:
                        raise p.for_image(i, len(images))
                    outcomes[i] = p
                elif isinstance(p, BaseException):
                    raise p
                else:
                    outcomes[i] = predictions(p, k, self.labels)
                    self._observe_top1(outcomes[i][0])
            answered = sum(1 for i in good if not isinstance(outcomes[i], BaseException))
            self.metrics.images.labels(self.model_name).inc(answered)
        return outcomes

    def _observe_top1(self, top1: Prediction) -> None:
        """Count one image's answer: its top-1 class (bounded, see :func:`class_series_names`) and confidence."""
        self.metrics.predictions.inc(top1.class_id)
        self.metrics.prediction_confidence.labels(self.model_name).observe(top1.score)

    def _prepare(self, img: ImageInput) -> Item:
        """One image input → a batch item (:mod:`predictor.inputs`; runs in the decode pool), timed."""
        spec, s = self.spec, self.settings
        assert spec is not None
        started = time.perf_counter()
        out = prepare_input(img, spec, s.max_image_pixels, s.jpeg_decode == "device")
        self.metrics.preprocess.labels(self.model_name).observe(time.perf_counter() - started)
        return out

    def _infer_batch(self, items: list[Item]) -> list[np.ndarray | PredictorError]:
        """Run the current engine on one batch, softmax each answer (on the inference thread).

        Out-of-memory errors are healed by splitting the batch, a broken device is latched
        (:class:`~predictor.engine.faults.DeviceGuard`).
        """
        engine = self._rt().engine
        assert engine is not None and self._guard is not None
        rows = self._guard.infer(engine, items)
        good = [i for i, r in enumerate(rows) if not isinstance(r, BaseException)]
        if good:
            for i, p in zip(good, softmax(np.stack([rows[i] for i in good])), strict=True):
                rows[i] = p
        return rows

    def _batch_cap_changed(self, new: int, old: int) -> None:
        """The memory's batch cap moved (on the inference thread; :class:`BatchCap` logs it)."""
        self._memory_cap = new
        self._apply_batch_cap()

    def _apply_batch_cap(self) -> None:
        """Tell the batcher and the gauge the cap: the lower of the memory's and the latency's."""
        cap = min(self._memory_cap, self._latency_cap.value)
        if self._batcher is not None and self._batcher.batch_cap != cap:
            self._batcher.set_batch_cap(cap)
        self.metrics.batch_cap.labels(self.model_name).set(cap)

    def _queue_depth_changed(self, depth: int) -> None:
        self.metrics.queue_depth.labels(self.model_name).set(depth)

    def _on_batch(self, stats: BatchStats) -> None:
        self.metrics.observe_batch(self.model_name, stats.size, stats.run_s, stats.queue_waits_s)
        if self._latency_cap.observe(stats.size, stats.run_s):  # a pass takes at most 1/8 of the budget
            self._apply_batch_cap()
