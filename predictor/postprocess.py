"""Postprocessing: logits → probabilities → top-k predictions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """One class of one image's top-k."""

    label: str
    score: float
    class_id: int

    def as_dict(self) -> dict[str, object]:
        """JSON form: ``{"label", "score", "class_id"}``."""
        return {"label": self.label, "score": self.score, "class_id": self.class_id}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    x = logits.astype(np.float32, copy=False)
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def predictions(probs_row: np.ndarray, k: int, labels: list[str]) -> list[Prediction]:
    """Top-k :class:`Prediction` list of one image's probabilities, best first.

    Runs once per image on the event loop: one partition, one sort of the ``k`` survivors, and plain
    Python numbers (``tolist``) for the JSON encoder.
    """
    k = min(k, probs_row.shape[-1])
    idx = np.argpartition(probs_row, probs_row.shape[-1] - k)[-k:]
    idx = idx[np.argsort(-probs_row[idx], kind="stable")]
    ids, scores = idx.tolist(), probs_row[idx].tolist()
    return [Prediction(labels[i], s, i) for i, s in zip(ids, scores, strict=True)]
