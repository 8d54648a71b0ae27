"""The classification pipeline: decode → batch → infer → top-k. Knows nothing of HTTP, KServe or Redis.

Decoding runs in a thread pool as soon as a request is admitted, so while the dedicated inference
thread runs one batch, the next batch's images are being decoded: the forward thread never waits on
decoding when work is queued. Admission is bounded in images (``max_queue_images``), counted from
arrival (decoding included) to the end of the forward pass; that count is the queue-depth gauge the
autoscaler reads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from predictor.batching import BatchStats, DynamicBatcher
from predictor.config import Settings
from predictor.engine import PendingCheck
from predictor.engine.base import Engine, EngineInfo
from predictor.engine.cache import model_content_hash
from predictor.engine.precision_check import Verdict
from predictor.errors import DeadlineExceeded, InvalidInput, NotReady, Overloaded, PredictorError
from predictor.metrics import PredictorMetrics
from predictor.postprocess import Prediction, predictions, softmax
from predictor.preprocess import EncodedJpeg, PreprocessSpec, decode_image, inspect_jpeg, prepare_array

logger = logging.getLogger(__name__)

ImageInput = bytes | np.ndarray
R = TypeVar("R")


class _Closing(Exception):
    """Raised inside the background precision check when the pipeline shuts down."""


def _warmup_jpeg() -> bytes:
    """A small JPEG, larger than any model input, for warming up the decode path."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (120, 90, 60)).save(buf, format="JPEG")
    return buf.getvalue()


def load_labels(model_dir: Path) -> list[str]:
    """Class labels from the model's ``config.json``, indexed by class id.

    Read as JSON (``id2label``, or timm's ``label_names``): importing transformers only for this cost
    ~1.3 s of every start. A config with neither falls back to ``AutoConfig``, which derives defaults.
    """
    import json

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    id2label = {int(k): str(v) for k, v in (cfg.get("id2label") or {}).items()}
    if not id2label and isinstance(cfg.get("label_names"), list):
        id2label = dict(enumerate(str(v) for v in cfg["label_names"]))
    if not id2label:
        from transformers import AutoConfig  # heavy import: only for configs without labels

        id2label = {int(k): str(v) for k, v in (AutoConfig.from_pretrained(str(model_dir)).id2label or {}).items()}
    n = max(id2label, default=-1) + 1
    return [id2label.get(i, f"class_{i}") for i in range(n)]


class Pipeline:
    """Classify images with dynamic batching over one inference engine.

    Args:
        settings: the predictor settings.
        metrics: where to record metrics; a fresh private registry when omitted.
        engine: an engine to use instead of :func:`predictor.engine.load_engine`'s (tests).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: PredictorMetrics | None = None,
        engine: Engine | None = None,
    ) -> None:
        if metrics is None:
            from prometheus_client import CollectorRegistry

            metrics = PredictorMetrics(CollectorRegistry())
        self.settings = settings
        self.metrics = metrics
        self.model_name = settings.model_name
        self.model_version = settings.model_version
        self.labels: list[str] = []
        self.spec: PreprocessSpec | None = None
        self._engine = engine
        self._admitted = 0
        self._decode_pool: ThreadPoolExecutor | None = None
        self._device_decode = False
        self._device_fallbacks = 0
        self._batcher: DynamicBatcher[np.ndarray, np.ndarray] | None = None
        self.load_seconds = 0.0
        self.precision_verdict: Verdict | None = None
        """The precision check (None when none ran: explicit precision, no reduced one, or still running)."""
        self.precision_check_done = threading.Event()
        """Set once no precision check is running any more (at once when none was needed)."""
        self._pending_check: PendingCheck | None = None
        self._check_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.ready = False

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def engine_info(self) -> EngineInfo:
        """Backend, device and dtype in use."""
        if self._engine is None:
            raise NotReady("model is not loaded")
        return self._engine.info

    def load(self) -> None:
        """Read the model directory, build and warm up the engine (synchronous, heavy)."""
        started = time.monotonic()
        s = self.settings
        model_dir = Path(s.model_dir)
        if not (model_dir / "config.json").exists():
            raise FileNotFoundError(
                f"{model_dir} is not a model directory (no config.json); pass --model_dir or set STORAGE_URI"
            )
        self.spec = PreprocessSpec.from_model_dir(model_dir)
        self.labels = load_labels(model_dir)
        if not self.model_version:
            self.model_version = model_content_hash(model_dir)[:12]
        self._batcher = DynamicBatcher(
            self._infer_batch,
            max_batch_size=s.max_batch_size,
            max_batch_delay_ms=s.max_batch_delay_ms,
            max_queue_size=s.max_queue_images,
            on_batch=self._on_batch,
            thread_name="inference",
        )
        # Load and warm up on the inference thread itself: thread-bound state (CUDA streams,
        # OpenMP pools) is then created where every later forward pass runs.
        if self._engine is None:
            from predictor.engine import load_engine

            loaded = load_engine(s, self.spec, run=self._batcher.run_on_handler_thread, defer=True)
            self._engine, self.precision_verdict = loaded.engine, loaded.verdict
            self._pending_check = loaded.pending
        else:
            self._batcher.run_on_handler_thread(self._engine.load)
        engine = self._engine
        self._device_decode = s.jpeg_decode == "device"
        if self._device_decode:
            self._check_device_decode(engine)
        self._batcher.run_on_handler_thread(lambda: engine.warmup(engine.warmup_sizes(s.max_batch_size)))
        if self._device_decode:  # the device decoder's first call initialises its library (nvJPEG)
            self._warm_up_device_decode()
        self._decode_pool = ThreadPoolExecutor(
            max_workers=s.decode_threads or s.usable_cores(), thread_name_prefix="decode"
        )
        # Decode one sample too, so the first request does not pay the decode path's lazy imports (~1 s).
        self._decode_pool.submit(self._prepare, _warmup_jpeg()).result()
        self.load_seconds = time.monotonic() - started
        self.ready = True
        info = engine.info
        m = self.metrics
        m.model_info.labels(self.model_name, self.model_version, info.device, info.dtype, info.backend).set(1)
        if self._pending_check is not None:
            self._check_thread = threading.Thread(target=self._run_precision_check, name="precision-check", daemon=True)
            self._check_thread.start()
        else:
            self.precision_check_done.set()
        m.load_seconds.labels(self.model_name).set(self.load_seconds)
        m.queue_capacity.labels(self.model_name).set(s.max_queue_images)
        m.queue_depth.labels(self.model_name).set(0)
        logger.info(
            "loaded model %s version %s from %s: backend=%s device=%s dtype=%s input=%dx%d labels=%d "
            "max_batch_size=%d max_batch_delay_ms=%g max_queue_images=%d load=%.2fs",
            self.model_name,
            self.model_version,
            model_dir,
            info.backend,
            info.device,
            info.dtype,
            *self.spec.crop_hw,
            len(self.labels),
            s.max_batch_size,
            s.max_batch_delay_ms,
            s.max_queue_images,
            self.load_seconds,
        )

    def _run_precision_check(self) -> None:
        """Check the deferred reduced precision while fp32 serves; switch engines if it keeps the answers.

        The candidate loads on this (check) thread; every forward pass of the check, each warm-up batch
        size and the switch itself run on the inference thread one at a time, between served batches, so
        serving never waits more than one such step and no batch sees a half-switched engine.
        """
        assert self._pending_check is not None and self._batcher is not None
        run = self._on_inference_thread
        try:
            verdict, candidate = self._pending_check.run(self._engine, run)  # type: ignore[arg-type]
            self.precision_verdict = verdict
            if candidate is None:
                return
            for size in candidate.warmup_sizes(self.settings.max_batch_size):
                run(lambda size=size: candidate.warmup([size]))
            old = self._engine
            assert old is not None

            def switch() -> None:
                self._engine = candidate
                old.close()

            run(switch)
            m, new_info, old_info = self.metrics, candidate.info, old.info
            m.model_info.remove(self.model_name, self.model_version, old_info.device, old_info.dtype, old_info.backend)
            m.model_info.labels(
                self.model_name, self.model_version, new_info.device, new_info.dtype, new_info.backend
            ).set(1)
            logger.info("now serving %s %s on %s", new_info.backend, new_info.dtype, new_info.device)
        except _Closing:
            logger.info("precision check stopped: shutting down")
        except Exception:
            logger.exception("precision check failed; serving stays in fp32")
        finally:
            self.precision_check_done.set()

    def _on_inference_thread(self, fn: Callable[[], R]) -> R:
        if self._closing.is_set():
            raise _Closing
        assert self._batcher is not None
        try:
            return self._batcher.run_on_handler_thread(fn)
        except RuntimeError as e:  # the inference thread's executor is gone: the process is exiting
            if "cannot schedule new futures" in str(e):
                raise _Closing from None
            raise

    def stop_background_work(self) -> None:
        """Stop a running precision check at its next step (server shutdown; :meth:`close` does it too)."""
        self._closing.set()

    def _warm_up_device_decode(self) -> None:
        """Decode the warm-up JPEG on the device; fail the load if the device decoder could not."""
        assert self._batcher is not None
        warm = inspect_jpeg(_warmup_jpeg(), self.settings.max_image_pixels)
        if warm is None:
            raise RuntimeError("the warm-up JPEG did not pass the device-decode header checks")
        before = self._device_fallbacks
        self._batcher.run_on_handler_thread(lambda: self._infer_batch([warm, warm]))
        if self._device_fallbacks != before:
            raise RuntimeError(
                f"jpeg_decode=device: the device decoder could not decode a plain baseline JPEG on "
                f"{self._engine.device} (see the log); set jpeg_decode=cpu"  # type: ignore[union-attr]
            )

    def _device_fallback(self, reason: str) -> None:
        """One JPEG left the device path for the CPU decoder: count it, log the first one."""
        self._device_fallbacks += 1
        self.metrics.jpeg_device_fallbacks.labels(self.model_name, reason).inc()
        if self._device_fallbacks == 1:
            logger.warning(
                "jpeg_decode=device: a JPEG was decoded on the CPU instead (%s); later ones are only counted "
                "in classifier_jpeg_device_fallbacks_total",
                reason,
            )

    @staticmethod
    def _check_device_decode(engine: Engine) -> None:
        from predictor.engine.torch_engine import TorchEngine

        if not isinstance(engine, TorchEngine):
            raise ValueError(
                f"jpeg_decode=device decodes into the torch backend's device tensors, but the engine is "
                f"{engine.info.backend}: set backend=torch (a CUDA device is where it pays off) or jpeg_decode=cpu"
            )

    async def start(self) -> None:
        """Bind the batcher to the running event loop (idempotent; the first request also does it)."""
        if self._batcher is None:
            raise RuntimeError("load() must run before start()")
        self._batcher.start()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is admitted; True when drained within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self._admitted > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self._admitted == 0

    async def close(self) -> None:
        """Stop accepting, finish what is queued, release the engine."""
        self.ready = False
        self._closing.set()
        if self._check_thread is not None:  # it stops at its next forward pass
            await asyncio.get_running_loop().run_in_executor(None, self._check_thread.join, 60)
        if self._batcher is not None:
            await self._batcher.close()
        if self._decode_pool is not None:
            self._decode_pool.shutdown(wait=True)
        if self._engine is not None:
            self._engine.close()

    # --- work ------------------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Images admitted and not yet inferred."""
        return self._admitted

    async def classify(
        self, images: Sequence[ImageInput], top_k: int | None = None, timeout_s: float | None = None
    ) -> list[list[Prediction]]:
        """Classify images; any bad image fails the whole call with :class:`InvalidInput`."""
        outcomes = await self._run(images, top_k, timeout_s, per_image=False)
        return outcomes  # type: ignore[return-value]

    async def classify_each(
        self, images: Sequence[ImageInput], top_k: int | None = None, timeout_s: float | None = None
    ) -> list[list[Prediction] | PredictorError]:
        """Classify images; each image gets its own outcome (a bad one does not fail the rest)."""
        return await self._run(images, top_k, timeout_s, per_image=True)

    def check_top_k(self, top_k: int | None) -> int:
        """Validate a requested top_k; None gives the default."""
        if top_k is None:
            return self.settings.default_top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= self.settings.max_top_k:
            raise InvalidInput(f"top_k must be an integer from 1 to {self.settings.max_top_k}, got {top_k!r}")
        return min(top_k, len(self.labels))

    def _check_count(self, n: int) -> None:
        if n == 0:
            raise InvalidInput("no images in the request: send at least one")
        if n > self.settings.max_images_per_request:
            raise InvalidInput(f"{n} images in one request, over the limit of {self.settings.max_images_per_request}")

    async def _run(
        self, images: Sequence[ImageInput], top_k: int | None, timeout_s: float | None, *, per_image: bool
    ) -> list:
        if not self.ready or self._batcher is None or self._decode_pool is None:
            raise NotReady("model is not ready: loading or shutting down")
        self._batcher.start()
        k = self.check_top_k(top_k)
        n = len(images)
        self._check_count(n)
        if self._admitted + n > self.settings.max_queue_images:
            raise Overloaded(
                f"inference queue is full ({self._admitted} of {self.settings.max_queue_images} images "
                "waiting); retry after the Retry-After interval"
            )
        timeout = timeout_s if timeout_s is not None else self.settings.request_timeout_ms / 1000
        deadline = time.monotonic() + timeout
        self._admit(n)
        try:
            return await asyncio.wait_for(self._decode_and_infer(images, k, deadline, per_image), timeout)
        except TimeoutError:
            raise DeadlineExceeded(f"request not answered within its deadline of {timeout * 1000:.0f} ms") from None
        finally:
            self._admit(-n)

    async def _decode_and_infer(self, images: Sequence[ImageInput], k: int, deadline: float, per_image: bool) -> list:
        loop = asyncio.get_running_loop()
        assert self._batcher is not None
        decoded = await asyncio.gather(
            *(loop.run_in_executor(self._decode_pool, self._prepare, img) for img in images),
            return_exceptions=True,
        )
        for d in decoded:
            if isinstance(d, BaseException) and not isinstance(d, PredictorError):
                raise d
            if not per_image and isinstance(d, PredictorError):
                if len(images) > 1:
                    idx = decoded.index(d)
                    raise type(d)(f"image {idx}: {d.message}")
                raise d
        good = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
        outcomes: list = list(decoded)
        if good:
            # Items decoded on the device can fail there alone (InvalidInput in their place).
            probs = await self._batcher.submit([decoded[i] for i in good], deadline, return_exceptions=True)
            for i, p in zip(good, probs, strict=True):
                if isinstance(p, InvalidInput):
                    if not per_image:
                        raise InvalidInput(f"image {i}: {p.message}" if len(images) > 1 else p.message)
                    outcomes[i] = p
                elif isinstance(p, BaseException):
                    raise p
                else:
                    outcomes[i] = predictions(p, k, self.labels)
            answered = sum(1 for i in good if not isinstance(outcomes[i], BaseException))
            self.metrics.images.labels(self.model_name).inc(answered)
        return outcomes

    def _prepare(self, img: ImageInput) -> np.ndarray | EncodedJpeg:
        """Bytes → decoded uint8 HWC; arrays are checked and resized (runs in the decode pool).

        With ``jpeg_decode=device``, a JPEG only has its header checked here and is decoded with its
        batch on the inference thread (:mod:`predictor.device_decode`).
        """
        assert self.spec is not None
        started = time.perf_counter()
        out: np.ndarray | EncodedJpeg | None
        if isinstance(img, bytes | bytearray | memoryview):
            data = bytes(img)
            out = inspect_jpeg(data, self.settings.max_image_pixels) if self._device_decode else None
            if out is None:
                out = decode_image(data, self.spec, self.settings.max_image_pixels)
        elif isinstance(img, np.ndarray):
            out = self._prepare_array(img)
        else:
            raise InvalidInput(f"unsupported image input of type {type(img).__name__}")
        self.metrics.preprocess.labels(self.model_name).observe(time.perf_counter() - started)
        return out

    def _prepare_array(self, arr: np.ndarray) -> np.ndarray:
        assert self.spec is not None
        h, w = self.spec.crop_hw
        if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
            if arr.shape[0] * arr.shape[1] > self.settings.max_image_pixels:
                raise InvalidInput(f"image of {arr.shape[0]}x{arr.shape[1]} pixels is over the limit")
            return prepare_array(arr, self.spec)
        if arr.dtype == np.float32 and arr.shape == (3, h, w):
            if not np.isfinite(arr).all():
                raise InvalidInput("FP32 input contains NaN or infinity")
            return np.ascontiguousarray(arr)
        raise InvalidInput(
            f"tensor image of dtype {arr.dtype} and shape {list(arr.shape)} is not accepted: send UINT8 "
            f"[H,W,3] RGB pixels or normalised FP32 [3,{h},{w}]"
        )

    def _infer_batch(self, arrays: list[np.ndarray | EncodedJpeg]) -> list[np.ndarray | InvalidInput]:
        """Stack, run the engine, softmax (on the inference thread)."""
        assert self._engine is not None and self.spec is not None
        if any(isinstance(a, EncodedJpeg) for a in arrays):
            return self._infer_device_batch(arrays)
        if all(a.dtype == np.uint8 for a in arrays):
            batch = np.stack(arrays)
        else:
            batch = np.stack([a if a.dtype == np.float32 else self.spec.normalize(a[None])[0] for a in arrays])
        logits = self._engine.infer(batch)
        if logits.shape[0] != len(arrays):
            raise RuntimeError(f"engine returned {logits.shape[0]} rows for {len(arrays)} images")
        return list(softmax(np.asarray(logits)))

    def _infer_device_batch(self, items: list[np.ndarray | EncodedJpeg]) -> list[np.ndarray | InvalidInput]:
        """A batch with JPEGs to decode on the engine's device; undecodable ones get their error back.

        uint8 pixels (decoded here or by the pool) run as one forward pass; normalised FP32 tensor inputs,
        if any, as a second one (they are never re-quantised).
        """
        import torch

        from predictor.device_decode import decode_batch

        assert self._engine is not None and self.spec is not None
        device = self._engine.device  # type: ignore[attr-defined]  # TorchEngine (checked at load)
        jpegs = [i for i, a in enumerate(items) if isinstance(a, EncodedJpeg)]
        decoded = decode_batch(
            [items[i] for i in jpegs], self.spec, device, self.settings.max_image_pixels, self._device_fallback
        )
        out: list = list(items)
        for i, d in zip(jpegs, decoded, strict=True):
            out[i] = d
        for i, a in enumerate(items):
            if isinstance(a, np.ndarray) and a.dtype == np.uint8:
                out[i] = torch.from_numpy(np.ascontiguousarray(a)).to(device)
        groups = (
            [i for i, o in enumerate(out) if isinstance(o, torch.Tensor)],
            [i for i, o in enumerate(out) if isinstance(o, np.ndarray)],  # FP32 [3,H,W]
        )
        for group, stack in zip(groups, (torch.stack, np.stack), strict=True):
            if not group:
                continue
            logits = np.asarray(self._engine.infer(stack([out[i] for i in group])))
            if logits.shape[0] != len(group):
                raise RuntimeError(f"engine returned {logits.shape[0]} rows for {len(group)} images")
            for i, p in zip(group, softmax(logits), strict=True):
                out[i] = p
        return out

    def _admit(self, n: int) -> None:
        self._admitted += n
        self.metrics.queue_depth.labels(self.model_name).set(self._admitted)

    def _on_batch(self, stats: BatchStats) -> None:
        m, name = self.metrics, self.model_name
        m.batch_size.labels(name).observe(stats.size)
        m.inference.labels(name).observe(stats.run_s)
        hist = m.queue_wait.labels(name)
        for w in stats.queue_waits_s:
            hist.observe(w)
