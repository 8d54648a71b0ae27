"""Device faults in a forward pass: out of memory heals by splitting the batch, a broken context does not.

* **Out of memory** (``torch.cuda.OutOfMemoryError``, ONNX Runtime's CUDA allocation failures, a CPU
  allocator refusal): the cached device memory is freed and the batch is retried as two halves, each
  halved again while it fails, down to one image. The largest size that worked becomes the batch cap
  (:class:`BatchCap`): the batcher forms no larger batches until a quiet period has passed, then the cap
  grows back a step at a time. An image that does not fit even alone fails alone
  (:class:`~predictor.errors.InsufficientMemory`, 507); its batch-mates are answered.
* **A broken CUDA context** (illegal address, uncorrectable ECC error, launch failure, device-side
  assert): every later call on the device fails too, so the engine is marked broken for good. The batch
  and every later request get :class:`~predictor.errors.EngineBroken` (503), and the server reports not
  live and not ready, so the kubelet restarts the container (the chart's liveness probe,
  ``/v2/health/live``, is our route: :mod:`predictor.routes`).

Errors are recognised by type where the library has one (``torch.cuda.OutOfMemoryError``) and by the
CUDA runtime's messages otherwise: torch (``torch.AcceleratorError``, a ``RuntimeError`` in older
releases) and ONNX Runtime (``RuntimeException``/``Fail``) both raise with the text of
``cudaGetErrorString`` in the message.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from predictor.errors import EngineBroken, InsufficientMemory, PredictorError

if TYPE_CHECKING:
    from predictor.engine.base import Engine, Item

logger = logging.getLogger(__name__)

OUT_OF_MEMORY_TEXTS = (
    "out of memory",  # torch's "CUDA out of memory", cudaErrorMemoryAllocation's "out of memory"
    "failed to allocate memory",  # ONNX Runtime's BFC arena
    "cudaerrormemoryallocation",
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "can't allocate memory",  # torch's DefaultCPUAllocator
)
"""Lower-case fragments of out-of-memory messages (torch, ONNX Runtime, cuBLAS, cuDNN)."""

BROKEN_CONTEXT_TEXTS = (
    "illegal memory access",  # cudaErrorIllegalAddress (700)
    "illegal address",
    "unspecified launch failure",  # cudaErrorLaunchFailure (719)
    "uncorrectable ecc error",  # cudaErrorECCUncorrectable (214)
    "device-side assert",  # cudaErrorAssert (710)
    "misaligned address",  # cudaErrorMisalignedAddress (716)
    "illegal instruction",  # cudaErrorIllegalInstruction (715)
    "hardware stack error",  # cudaErrorHardwareStackError (714)
    "invalid program counter",  # cudaErrorInvalidPc (718)
    "launch timed out",  # cudaErrorLaunchTimeout (702)
    "gpu has fallen off the bus",
)
"""Lower-case fragments of CUDA's *sticky* errors: after one, every call in the process fails."""


def is_context_broken(exc: BaseException) -> bool:
    """Whether ``exc`` is a CUDA error that leaves the process's context unusable."""
    if isinstance(exc, PredictorError) or not isinstance(exc, Exception):
        return False
    text = str(exc).lower()
    return any(t in text for t in BROKEN_CONTEXT_TEXTS)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a (device or host) out-of-memory error a smaller batch may avoid."""
    if isinstance(exc, PredictorError) or not isinstance(exc, Exception) or is_context_broken(exc):
        return False
    torch = sys.modules.get("torch")  # only an engine that imported torch can raise its error type
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(t in text for t in OUT_OF_MEMORY_TEXTS)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an error's message, shortened for logs and answers."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BatchCap:
    """The most images per forward pass right now: ``max_batch_size``, or less since memory ran out.

    :meth:`lower` sets it to the largest batch that worked; after ``recovery_s`` without another
    out-of-memory error it grows by a quarter (at least one image) per quiet period, back to
    ``max_batch_size``. A raise that runs out of memory again within one period doubles the period
    (up to 16 times), so a GPU that is simply too small is not probed every minute.

    Args:
        max_batch_size: the configured most images per forward pass.
        recovery_s: quiet seconds before the cap grows one step.
        on_change: called with the new cap (and the old one) whenever it changes.
        clock: monotonic seconds (tests give their own).
    """

    MAX_BACKOFF = 16

    def __init__(
        self,
        max_batch_size: int,
        recovery_s: float,
        on_change: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if recovery_s <= 0:
            raise ValueError(f"recovery_s must be > 0, got {recovery_s}")
        self.max_batch_size = max_batch_size
        self.recovery_s = recovery_s
        self.value = max_batch_size
        self._on_change = on_change
        self._clock = clock
        self._last_change = clock()
        self._raised = False
        self._backoff = 1

    @property
    def period_s(self) -> float:
        """The quiet time the next raise waits for (``recovery_s`` times the back-off)."""
        return self.recovery_s * self._backoff

    def lower(self, worked: int) -> None:
        """Memory ran out; ``worked`` is the largest batch that then succeeded (0: none did)."""
        new = max(1, min(worked, self.value))
        if self._raised and self._clock() - self._last_change < self.period_s:
            self._backoff = min(self.MAX_BACKOFF, self._backoff * 2)
        self._raised = False
        self._set(new)

    def quiet(self) -> None:
        """A forward pass succeeded: grow the cap one step if a whole quiet period has passed."""
        if self.value >= self.max_batch_size or self._clock() - self._last_change < self.period_s:
            return
        if self._raised:  # the previous raise held for a whole period
            self._backoff = 1
        self._raised = True
        self._set(min(self.max_batch_size, self.value + max(1, self.value // 4)))

    def _set(self, new: int) -> None:
        old, self.value = self.value, new
        self._last_change = self._clock()
        if new == old:
            return
        if new < old:
            logger.warning(
                "device memory ran out: batches capped at %d images (was %d, max_batch_size=%d); raised again "
                "after %.0fs without another out-of-memory error",
                new, old, self.max_batch_size, self.period_s,
            )  # fmt: skip
        else:
            logger.info("no out-of-memory error for a while: batch cap raised to %d (was %d)", new, old)
        if self._on_change is not None:
            self._on_change(new, old)


class DeviceGuard:
    """Runs an engine's forward passes, healing out-of-memory errors and latching a broken context.

    Args:
        cap: the batch cap that out-of-memory errors lower.
        on_out_of_memory: called with the batch size of every forward pass that ran out of memory.
        on_broken: called once, with the reason, when the context breaks.
    """

    def __init__(
        self,
        cap: BatchCap,
        on_out_of_memory: Callable[[int], None] | None = None,
        on_broken: Callable[[str], None] | None = None,
    ) -> None:
        self.cap = cap
        self.broken: str | None = None
        """Why the device is unusable (None while it is fine)."""
        self._on_oom = on_out_of_memory
        self._on_broken = on_broken
        self._lock = threading.Lock()

    def broken_error(self) -> EngineBroken:
        """The 503 every request gets once the context is broken."""
        return EngineBroken(
            f"the inference device is unusable ({self.broken}); this replica reports not live and is being "
            "restarted: retry, another replica will answer"
        )

    def infer(self, engine: Engine, items: Sequence[Item]) -> list:
        """``engine.infer_items(items)``, with out-of-memory recovery (see the module docstring).

        Returns:
            One row (logits) or one error per item, in order: :class:`InsufficientMemory` for an image
            that did not fit alone, the engine's own per-item errors as they were.

        Raises:
            EngineBroken: the context is (or just became) unusable.
        """
        if self.broken is not None:
            raise self.broken_error()
        result = self._try(engine, items)
        if not isinstance(result, Exception):
            self.cap.quiet()
            return result
        worked = [0]  # the largest part that succeeded while splitting
        rows = self._split(engine, items, result, worked)
        self.cap.lower(worked[0])
        return rows

    def _try(self, engine: Engine, items: Sequence[Item]) -> list | Exception:
        """The rows, or the out-of-memory error that stopped them; any other error is raised."""
        try:
            return list(engine.infer_items(items))
        except Exception as e:
            if is_context_broken(e):
                self._break(engine, e)
            if not is_out_of_memory(e):
                raise
            return e

    def _split(self, engine: Engine, items: Sequence[Item], error: Exception, worked: list[int]) -> list:
        """Rows for ``items`` after their batch ran out of memory: halves, recursively, down to one."""
        n = len(items)
        if self._on_oom is not None:
            self._on_oom(n)
        logger.debug("out of memory in a batch of %d (%s): splitting", n, first_line(error))
        engine.release_memory()
        if n == 1:
            return [
                InsufficientMemory(
                    f"the {engine.info.device} device ran out of memory for this image even in a batch of its own "
                    f"({first_line(error)}); images batched with it were answered. Retry later; if it "
                    "keeps failing, give the pod more device memory (gpu_memory_fraction, a larger MIG slice)"
                )
            ]
        rows: list = []
        for half in (items[: n // 2], items[n // 2 :]):
            part = self._try(engine, half)
            if isinstance(part, Exception):
                part = self._split(engine, half, part, worked)
            else:
                worked[0] = max(worked[0], len(half))
            rows.extend(part)
        return rows

    def _break(self, engine: Engine, error: Exception) -> None:
        with self._lock:
            first = self.broken is None
            if first:
                self.broken = f"{engine.info.device}: {first_line(error)}"
        if first:
            logger.critical(
                "the inference device is unusable (%s): answering 503, reporting not live and not ready until "
                "the container is restarted",
                self.broken,
            )
            if self._on_broken is not None:
                self._on_broken(self.broken)  # type: ignore[arg-type]
        raise self.broken_error() from error
