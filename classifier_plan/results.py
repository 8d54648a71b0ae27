"""What a simulation produces: the timeline (one row per step), request outcomes, latency, cost.

Both engines fill a :class:`Recorder`; :func:`summarize` turns it into ``summary.json``'s numbers.
Latencies go into a log-spaced histogram (1.6 % wide bins from 0.1 ms to 20 min), so a run of millions of
requests (or the fluid engine's distributions) costs the same memory as a short one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COLUMNS = (
    "t_s",
    "offered_rps",
    "served_rps",
    "refused_rps",
    "timed_out_rps",
    "desired_replicas",
    "ready_replicas",
    "starting_replicas",
    "nodes_spot",
    "nodes_on_demand",
    "queue_images",
    "p95_ms",
    "cost_usd",
)
_LO_MS, _HI_MS, _BINS = 0.1, 1.2e6, 1000
_EDGES = np.geomspace(_LO_MS, _HI_MS, _BINS + 1)
_MID = np.sqrt(_EDGES[:-1] * _EDGES[1:])


class LatencyHistogram:
    """Counts of answered requests by latency (ms)."""

    def __init__(self) -> None:
        self._counts = np.zeros(_BINS, dtype=float)
        self._pending: list[tuple[np.ndarray, np.ndarray | float]] = []

    def add(self, latencies_ms: np.ndarray, weight: np.ndarray | float = 1.0) -> None:
        """Count ``latencies_ms`` (each with ``weight``); buffered, binned in bulk."""
        if len(latencies_ms):
            self._pending.append((latencies_ms, weight))
            if len(self._pending) >= 2000:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        lat = np.concatenate([np.asarray(v, dtype=float) for v, _ in self._pending])
        w = np.concatenate([np.broadcast_to(np.asarray(w, dtype=float), np.shape(v)) for v, w in self._pending])
        self._pending.clear()
        idx = np.clip(np.searchsorted(_EDGES, lat, side="right") - 1, 0, _BINS - 1)
        self._counts += np.bincount(idx, weights=w, minlength=_BINS)

    @property
    def counts(self) -> np.ndarray:
        self._flush()
        return self._counts

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def quantile(self, q: float) -> float | None:
        """Latency (ms) below which a share ``q`` of the answers fall (None when empty)."""
        total = self.total
        if total <= 0:
            return None
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, q * total, side="left"))
        return float(_MID[min(i, _BINS - 1)])

    def count_below(self, ms: float) -> float:
        """Answers faster than ``ms`` (bins entirely below it, plus the straddling bin pro rata)."""
        i = int(np.searchsorted(_EDGES, ms, side="right") - 1)
        if i < 0:
            return 0.0
        if i >= _BINS:
            return self.total
        lo, hi = _EDGES[i], _EDGES[i + 1]
        return float(self.counts[:i].sum() + self.counts[i] * (ms - lo) / (hi - lo))


@dataclass
class Recorder:
    """Timeline rows and totals of one run."""

    duration_s: float
    slo_ms: float
    rows: list[tuple[float, ...]] = field(default_factory=list)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    offered: float = 0.0
    served: float = 0.0
    refused: float = 0.0
    timed_out: float = 0.0
    failed: float = 0.0
    wake_waits_s: list[float] = field(default_factory=list)
    timed_out_waking: float = 0.0  # held for a pod (activator, interceptor) past the holder's timeout
    refused_waking: float = 0.0  # held for a pod, then refused (the holder's queue full, or the pod's queue)
    refused_no_pods: float = 0.0  # arrived while no pod was ready and nothing held them (503)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, values: tuple[float, ...]) -> None:
        self.rows.append(values)

    def table(self) -> np.ndarray:
        return np.array(self.rows, dtype=float).reshape(-1, len(COLUMNS))


def aggregate(table: np.ndarray, step_s: float) -> np.ndarray:
    """Rows combined into ``step_s`` buckets: rates and gauges averaged, p95 the max, cost the last."""
    if len(table) == 0 or step_s <= 0:
        return table
    t = table[:, 0]
    bucket = np.floor(t / step_s)
    out = []
    for b in np.unique(bucket):
        rows = table[bucket == b]
        agg = rows.mean(axis=0)
        agg[0] = b * step_s
        p95 = rows[:, COLUMNS.index("p95_ms")]
        agg[COLUMNS.index("p95_ms")] = np.nanmax(p95) if np.isfinite(p95).any() else math.nan
        agg[COLUMNS.index("cost_usd")] = rows[-1, COLUMNS.index("cost_usd")]
        out.append(agg)
    return np.array(out)


def summarize(
    rec: Recorder, cost: dict[str, float], hours_per_month: float, baseline: dict[str, Any]
) -> dict[str, Any]:
    """``summary.json``: outcomes, latency, SLO attainment, replicas, cold-start waits, cost and savings."""
    table = rec.table()
    h = rec.latency
    within = h.count_below(rec.slo_ms)
    month = hours_per_month * 3600.0 / rec.duration_s
    per_month = cost["typical"] * month
    base = baseline["cost_per_month_usd"]
    col = {c: i for i, c in enumerate(COLUMNS)}
    return {
        "requests_offered": round(rec.offered),
        "requests_served": round(rec.served),
        "requests_refused": round(rec.refused),
        "requests_timed_out": round(rec.timed_out),
        "requests_failed": round(rec.failed),
        "p50_ms": _r(h.quantile(0.50)),
        "p95_ms": _r(h.quantile(0.95)),
        "p99_ms": _r(h.quantile(0.99)),
        "slo_p95_ms": rec.slo_ms,
        "slo_attainment": round(within / rec.offered, 5) if rec.offered else 1.0,
        "slo_met": bool(rec.offered == 0 or within / rec.offered >= 0.95),
        "peak_ready_replicas": int(table[:, col["ready_replicas"]].max()) if len(table) else 0,
        "peak_nodes": int((table[:, col["nodes_spot"]] + table[:, col["nodes_on_demand"]]).max()) if len(table) else 0,
        "time_to_first_ready_s_after_idle": _r(max(rec.wake_waits_s)) if rec.wake_waits_s else None,
        "wakes_from_zero": len(rec.wake_waits_s),
        "requests_timed_out_waking": round(rec.timed_out_waking),
        "requests_refused_no_pods": round(rec.refused_no_pods),
        "requests_refused_waking": round(rec.refused_waking),
        "cost_usd": round(cost["typical"], 4),
        "cost_usd_range": [round(cost["high"], 4), round(cost["low"], 4)],  # high spot discount = low cost
        "cost_per_month_if_repeated_usd": round(per_month, 2),
        "cost_per_month_if_repeated_usd_range": [round(cost["high"] * month, 2), round(cost["low"] * month, 2)],
        "baseline_cost_per_month_usd": round(base, 2),
        "baseline": baseline,
        "savings_ratio": round(1.0 - per_month / base, 4) if base > 0 else None,
        "duration_s": rec.duration_s,
        **rec.extra,
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)
