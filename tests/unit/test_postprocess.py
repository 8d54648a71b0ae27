"""Softmax and top-k against numpy/scipy written the obvious way (an independent reference)."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax as scipy_softmax

from predictor.postprocess import predictions, softmax


def test_softmax_matches_scipy_and_survives_huge_logits() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 8, (4, 1000)).astype(np.float32)
    np.testing.assert_allclose(softmax(logits.copy()), scipy_softmax(logits.astype(np.float64), axis=-1), atol=1e-6)
    big = np.array([[1e4, 1e4 - 1, -1e4]], np.float32)
    out = softmax(big)
    assert np.isfinite(out).all() and abs(float(out.sum()) - 1) < 1e-6


def test_top_k_is_the_k_best_in_order_with_their_labels() -> None:
    rng = np.random.default_rng(4)
    probs = rng.random(50).astype(np.float32)
    labels = [f"c{i}" for i in range(50)]
    for k in (1, 5, 50):
        got = predictions(probs, k, labels)
        order = np.argsort(-probs, kind="stable")[:k]
        assert [p.class_id for p in got] == order.tolist()
        assert [p.label for p in got] == [labels[i] for i in order]
        assert [p.score for p in got] == probs[order].tolist()
    assert len(predictions(probs, 500, labels)) == 50
