"""A backend that exists only in the tests: an :class:`~predictor.engine.base.Engine` subclass and one
:func:`~predictor.engine.registry.register` call, and nothing else changed.

:class:`FakeEngine` needs no runtime and no weights: it answers each image with the class whose index is
the image's mean pixel value (rounded, modulo the number of labels), so a test knows the answer without
running the model, and an answer with that class proves that this engine served it.

``python -m tests.support.fake_backend serve --backend fake --flag value ...`` is the real server
(``python -m predictor``) in a process where this backend is registered, as a new module in
``predictor/engine/`` and its line in ``registry.py`` would register it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from predictor.engine import registry
from predictor.engine.base import Engine, EngineInfo
from predictor.preprocess import PreprocessSpec

NAME = "fake"
DEVICE = "cpu"
PRECISION = "fp32"


def num_labels(model_dir: Path) -> int:
    """How many classes the model directory's ``config.json`` names."""
    return len(json.loads((model_dir / "config.json").read_text())["id2label"])


def expected_class(pixels: np.ndarray, labels: int) -> int:
    """The class :class:`FakeEngine` answers for ``uint8 [H,W,3]`` pixels."""
    return round(float(pixels.mean())) % labels


class FakeEngine(Engine):
    """Answers the class :func:`expected_class` names, with logits 10 for it and 0 for every other."""

    def __init__(self, spec: PreprocessSpec, model_dir: Path) -> None:
        super().__init__(spec)
        self.model_dir = model_dir
        self.labels = 0
        self.closed = False

    @property
    def info(self) -> EngineInfo:
        """The fake backend on the CPU, in float32."""
        return EngineInfo(NAME, DEVICE, "float32")

    def load(self) -> None:
        """Read how many classes there are (the only thing this engine needs from the model)."""
        self.labels = num_labels(self.model_dir)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``[N, labels]``; a normalised float32 batch answers class 0."""
        kind = self.check_batch(batch)
        logits = np.zeros((len(batch), self.labels), dtype=np.float32)
        for row, image in enumerate(batch):
            logits[row, expected_class(image, self.labels) if kind == "uint8" else 0] = 10.0
        return logits

    def close(self) -> None:
        """Nothing to release; recorded so a test can see it."""
        self.closed = True


BACKEND = registry.Backend(NAME, {DEVICE: (PRECISION,)}, lambda a: FakeEngine(a.spec, a.model_dir))
"""The one line a real backend adds to ``registry.py``."""


def register() -> None:
    """Register the fake backend (once per registry)."""
    if NAME not in registry.BACKENDS:
        registry.register(BACKEND)


if __name__ == "__main__":
    from predictor.__main__ import main

    register()
    main()
