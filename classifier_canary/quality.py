"""The live model-quality comparison: the canary's top-1 answers against the stable's over one window.

Both revisions see the same clients, so a canary serving the same model answers with the same class
mix and the same confidence. Their class mixes (``classifier_predictions_total`` by top-1 label) are
compared with the Jensen-Shannon divergence (base 2: 0 for the same mix, 1 for no class in common), and
their mean top-1 confidence (``classifier_prediction_confidence``) by its difference. A model that is
fast, error-free and wrong (a permuted label map, a bad checkpoint, a preprocessing change) passes every
HTTP check and fails these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from classifier_canary.config import CanaryConfig

Outcome = Literal["ok", "fail", "no-data"]


@dataclass(frozen=True)
class AnswerStats:
    """One revision's top-1 answers over a window; ``None`` where Prometheus had no series."""

    predictions: float | None = None
    classes: dict[str, float] = field(default_factory=dict)
    """Top-1 answers by class label over the window."""
    mean_confidence: float | None = None


def js_divergence(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two class counts (normalised here).

    Raises:
        ValueError: a count is negative, or one side has no answer.
    """
    sp, sq = sum(p.values()), sum(q.values())
    if sp <= 0 or sq <= 0 or any(v < 0 for v in (*p.values(), *q.values())):
        raise ValueError("both class counts need answers, and none may be negative")
    out = 0.0
    for k in p.keys() | q.keys():
        a, b = p.get(k, 0.0) / sp, q.get(k, 0.0) / sq
        m = (a + b) / 2
        if a > 0:
            out += a / 2 * math.log2(a / m)
        if b > 0:
            out += b / 2 * math.log2(b / m)
    return min(1.0, max(0.0, out))


def top_shift(canary: dict[str, float], stable: dict[str, float], n: int = 3) -> str:
    """The classes whose share moved most, as ``label 12%->0%`` (the evidence of a verdict)."""
    sc, ss = sum(canary.values()) or 1.0, sum(stable.values()) or 1.0
    moved = sorted(canary.keys() | stable.keys(), key=lambda k: -abs(canary.get(k, 0) / sc - stable.get(k, 0) / ss))[:n]
    return ", ".join(f"{k!r} {100 * stable.get(k, 0) / ss:.0f}%->{100 * canary.get(k, 0) / sc:.0f}%" for k in moved)


def live_quality(canary: AnswerStats, stable: AnswerStats, cfg: CanaryConfig) -> tuple[Outcome, list[str]]:
    """Judge the canary's answers against the stable's: ``ok``, ``fail`` or ``no-data`` and the reasons."""
    missing = [
        f"{role} has no classifier_predictions_total series (a predictor older than the prediction metrics? "
        "--skip-live-quality judges without them)"
        for role, r in (("canary", canary), ("stable", stable))
        if r.predictions is None
    ]
    if missing:
        return "fail", missing
    few = [
        f"{role} answered {r.predictions:.0f} images < min {cfg.min_quality_predictions} for the answer comparison"
        for role, r in (("canary", canary), ("stable", stable))
        if (r.predictions or 0) < cfg.min_quality_predictions
    ]
    if few:
        return "no-data", few
    out = []
    divergence = js_divergence(canary.classes, stable.classes)
    if divergence > cfg.max_class_divergence:
        out.append(
            f"class mix differs from the stable's: Jensen-Shannon {divergence:.3f} > {cfg.max_class_divergence:g} "
            f"({top_shift(canary.classes, stable.classes)})"
        )
    c, s = canary.mean_confidence, stable.mean_confidence
    if c is None or s is None:
        out.append("mean top-1 confidence has no value")
    elif abs(c - s) > cfg.max_confidence_shift:
        out.append(
            f"mean top-1 confidence {c:.3f} vs the stable's {s:.3f}: shift {c - s:+.3f} > ±{cfg.max_confidence_shift:g}"
        )
    return ("fail", out) if out else ("ok", [])
