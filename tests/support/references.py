"""References the engine and GPU tests hold every backend to: the photo set and transformers' fp32 eager logits."""

from __future__ import annotations

import numpy as np
import torch

from predictor.preprocess import PreprocessSpec

MAX_PIXELS = 40_000_000
PHOTO_NAMES = ("chelsea", "coffee", "rocket", "motorcycle", "astronaut")


def reference_logits(model: torch.nn.Module, spec: PreprocessSpec, batch: np.ndarray, chunk: int = 32) -> np.ndarray:
    """fp32 eager logits of ``model`` for a uint8 NHWC batch, normalised by ``spec.normalize``."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(batch), chunk):
            x = torch.from_numpy(spec.normalize(batch[i : i + chunk]))
            out.append(model(pixel_values=x).logits.numpy())
    return np.concatenate(out)
