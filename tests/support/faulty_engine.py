"""A real torch engine (on the CPU) with the memory of a small GPU: device faults on demand, for the tests.

:class:`MemoryLimitedEngine` runs the real model, but a forward pass of more than ``fits`` images, or
one holding a *huge* image (every pixel :data:`HUGE_RGB`), raises the real ``torch.cuda.OutOfMemoryError``
with CUDA's message, as the caching allocator does; with ``broken`` set it raises what torch raises after
an illegal memory access (``torch.AcceleratorError``, the sticky CUDA error 700).

``python -m tests.support.faulty_engine serve --flag value ...`` is the real server (``python -m
predictor``) with the torch backend building this engine; a JSON control file (env
:data:`CONTROL_ENV`) sets ``fits`` and ``broken`` and is read before every forward pass, so a test
changes the "GPU" while the server runs.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from predictor.engine.torch_engine import TorchEngine

HUGE_RGB = (7, 77, 177)
"""Colour of an image that never fits (stands for one whose device decode needs more memory than there is)."""
CONTROL_ENV = "FAULTY_ENGINE_CONTROL"
ILLEGAL_ADDRESS = (
    "CUDA error: an illegal memory access was encountered\n"
    "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might be "
    "incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1"
)


def is_huge(batch: np.ndarray) -> np.ndarray:
    """Which rows of a uint8 ``[N,H,W,3]`` batch are huge images."""
    return np.all(batch == np.array(HUGE_RGB, dtype=np.uint8), axis=(1, 2, 3))


class MemoryLimitedEngine(TorchEngine):
    """TorchEngine (CPU) that runs out of "device memory" above ``fits`` images or on a huge image.

    Records the size of every forward pass it was asked for (``calls``) and how often memory was
    released (``released``).
    """

    def __init__(self, *args: Any, fits: int = 1_000_000, control: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fits = fits
        self.broken = False
        self.break_at_call: int | None = None
        """From this forward pass on (1 = the first one asked for), the context is broken."""
        self.control = control
        self.calls: list[int] = []
        self.released = 0
        self._lock = threading.Lock()

    def _read_control(self) -> None:
        if self.control is None or not self.control.exists():
            return
        state = json.loads(self.control.read_text())
        self.fits = int(state.get("fits", self.fits))
        self.broken = bool(state.get("broken", self.broken))

    def infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """The real forward pass, unless this "GPU" cannot run it."""
        self._read_control()
        n = int(batch.shape[0])
        with self._lock:
            self.calls.append(n)
        if self.break_at_call is not None and len(self.calls) >= self.break_at_call:
            self.broken = True
        if self.broken:
            raise torch.AcceleratorError(ILLEGAL_ADDRESS)
        huge = isinstance(batch, np.ndarray) and batch.dtype == np.uint8 and bool(is_huge(batch).any())
        if n > self.fits or huge:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {n * 98:.2f} MiB. GPU 0 has a total capacity of 10.00 GiB "
                f"of which 40.06 MiB is free. Including non-PyTorch memory, this process has 9.90 GiB memory in use."
            )
        return super().infer(batch)

    def release_memory(self) -> None:
        """Counted, then the real thing (a no-op on the CPU)."""
        self.released += 1
        super().release_memory()


def _install() -> None:
    """Make the registry's torch backend build :class:`MemoryLimitedEngine` (CPU) in this process."""
    from predictor.engine import registry

    control = Path(os.environ[CONTROL_ENV]) if os.environ.get(CONTROL_ENV) else None
    torch_backend = registry.get("torch")

    def factory(a: registry.BuildArgs) -> MemoryLimitedEngine:
        return MemoryLimitedEngine(
            a.spec, a.model_dir, a.device, a.precision, a.threads, a.torch_compile, a.max_batch_size, control=control
        )

    registry.BACKENDS["torch"] = registry.Backend("torch", torch_backend.precisions, factory)


if __name__ == "__main__":
    _install()
    from predictor.__main__ import main

    main(sys.argv[1:])
