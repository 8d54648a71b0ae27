"""The one interface every inference backend implements.

The pipeline hands an engine a batch in one of two forms and gets logits back:

* ``uint8`` ``[N, H, W, 3]`` (RGB, already resized and cropped to :attr:`Engine.input_hw`): the engine
  moves it to its device and normalises there (a quarter of the bytes of float32);
* ``float32`` ``[N, 3, H, W]``: already normalised model input, used as is.

``infer`` is called from one dedicated thread only (see :mod:`predictor.pipeline`), so an engine need
not be thread-safe, but it must not touch the event loop.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from predictor.errors import InvalidInput
from predictor.preprocess import EncodedJpeg, PreprocessSpec

Item = np.ndarray | EncodedJpeg
"""One image as the pipeline hands it over: ``uint8 [H,W,3]`` pixels at the model's size, normalised
``float32 [3,H,W]``, or (only to engines that :attr:`Engine.decodes_jpeg`) a JPEG left encoded."""


@dataclass(frozen=True)
class EngineInfo:
    """What the start-up log line and the model-info metric report."""

    backend: str
    device: str
    dtype: str


class Engine(abc.ABC):
    """An inference backend: load once, then run forward passes on batches."""

    decodes_jpeg = False
    """Whether :meth:`infer_items` takes :class:`~predictor.preprocess.EncodedJpeg` items (decoding them
    on the engine's device: ``jpeg_decode=device``)."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    @property
    def input_hw(self) -> tuple[int, int]:
        """Height and width of one model input image."""
        return self.spec.crop_hw

    @property
    @abc.abstractmethod
    def info(self) -> EngineInfo:
        """Backend, device and dtype actually in use (after :meth:`load`)."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights, export or compile, and allocate; heavy work belongs here."""

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one forward pass.

        Args:
            batch: ``uint8 [N,H,W,3]`` or normalised ``float32 [N,3,H,W]``.

        Returns:
            ``float32 [N, num_labels]`` logits, one row per input, in input order.
        """

    def check_batch(self, batch: np.ndarray) -> str:
        """The kind of a batch ``infer`` takes, ``"uint8"`` or ``"float32"``, after checking its shape.

        Raises:
            ValueError: the shape is not ``[N,H,W,3]`` (uint8) or ``[N,3,H,W]`` (float32) at the input size.
            TypeError: another dtype.
        """
        h, w = self.input_hw
        if batch.dtype == np.uint8:
            if batch.ndim != 4 or tuple(batch.shape[1:]) != (h, w, 3):
                raise ValueError(f"uint8 batch must be [N,{h},{w},3], got {list(batch.shape)}")
            return "uint8"
        if batch.dtype == np.float32:
            if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, h, w):
                raise ValueError(f"float32 batch must be [N,3,{h},{w}], got {list(batch.shape)}")
            return "float32"
        raise TypeError(f"batch dtype must be uint8 or float32, got {batch.dtype}")

    def infer_items(self, items: Sequence[Item]) -> list[np.ndarray | InvalidInput]:
        """Logits of each item, in order; an item that fails alone gets its :class:`InvalidInput` instead.

        Items of one kind run as one batch; uint8 pixels mixed with normalised float32 inputs are
        normalised on the CPU (float32 inputs are never re-quantised).
        """
        if any(isinstance(a, EncodedJpeg) for a in items):
            raise TypeError(f"{type(self).__name__} does not decode JPEGs: use jpeg_decode=cpu")
        if all(a.dtype == np.uint8 for a in items):  # type: ignore[union-attr]
            batch = np.stack(items)  # type: ignore[arg-type]
        else:
            batch = np.stack([a if a.dtype == np.float32 else self.spec.normalize(a[None])[0] for a in items])  # type: ignore[union-attr]
        return list(self.checked_infer(batch))

    def checked_infer(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`infer`, refusing an answer with another number of rows than the batch."""
        logits = np.asarray(self.infer(batch))
        if logits.shape[0] != len(batch):
            raise RuntimeError(f"engine returned {logits.shape[0]} rows for {len(batch)} images")
        return logits

    def warmup_sizes(self, max_batch_size: int) -> list[int]:
        """Batch sizes :meth:`warmup` should run before serving.

        Default: 1 and 2. On a CPU a batch size seen for the first time costs a little extra once, while
        warming up a full ``max_batch_size`` batch would cost a whole forward pass in every start.
        Engines with fixed shapes (padding to buckets) return every bucket.
        """
        return sorted({1, min(2, max_batch_size)})

    def warmup(self, batch_sizes: list[int]) -> None:
        """Run each batch size once so no request pays for first-call allocation or compilation."""
        h, w = self.input_hw
        for n in batch_sizes:
            self.checked_infer(np.zeros((n, h, w, 3), dtype=np.uint8))

    def release_memory(self) -> None:  # noqa: B027 - optional hook
        """Give cached device memory back after an out-of-memory error, before a smaller batch is tried."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory and threads."""
