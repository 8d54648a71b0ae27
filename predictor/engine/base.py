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
from dataclasses import dataclass

import numpy as np

from predictor.preprocess import PreprocessSpec


@dataclass(frozen=True)
class EngineInfo:
    """What the start-up log line and the model-info metric report."""

    backend: str
    device: str
    dtype: str


class Engine(abc.ABC):
    """An inference backend: load once, then run forward passes on batches."""

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
            out = self.infer(np.zeros((n, h, w, 3), dtype=np.uint8))
            if out.shape[0] != n:
                raise RuntimeError(f"engine returned {out.shape[0]} rows for a batch of {n}")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory and threads."""
