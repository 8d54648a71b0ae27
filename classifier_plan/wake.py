"""Wakes from zero, read off a run's timeline: what each asked for against what the load after it needs.

A wake starts where the desired replicas leave 0. Under Knative the requests the activator holds while the
first pod starts count as in-flight concurrency for the whole cold start, so a long wake reads as a burst:
the KPA panics and asks for ``ceil(held / target)`` pods, up to ``max-scale`` (``maxReplicas``), each on
a new node, and panic mode plus ``scale-down-delay`` keep them for minutes after the backlog is served.
For each wake this module reports:

* ``pods_asked`` / ``nodes_asked``: the most pods (and nodes) from the wake's start until the desired count
  comes back down to what the load needs;
* ``pods_needed`` / ``nodes_needed``: what the offered load over that stretch needs, by the baseline's rule
  (pods for its peak at 80 % of a pod's capacity, at least 1 and ``minReplicas``; nodes on the cheapest
  type per pod);
* ``extra_node_hours`` / ``extra_cost_usd``: the node-time beyond ``nodes_needed`` from the wake's start
  until the nodes are back down to it (the empty nodes too, until they are removed), priced at the run's
  own node prices;
* ``timed_out``: requests that timed out from the wake's start until its first ready pod.

A wake *overshoots* when ``pods_asked > pods_needed``. :func:`wake_findings` adds the list, the totals and
the run's ``flags`` (``wake_timeouts``, ``wake_overshoot``, ``refused_at_zero``) to ``summary.json``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from classifier_plan.results import COLUMNS
from classifier_plan.setup import SimSetup

COL = {c: i for i, c in enumerate(COLUMNS)}
MAX_LISTED = 100
"""Wakes listed one by one in ``summary.json`` (a month of nightly wakes is 30); the totals count them all."""


def _nodes_per_pod_rule(setup: SimSetup) -> int:
    """Pods per node on the cheapest instance type per pod (on-demand), the baseline's choice."""
    s = setup
    best = min(s.candidates, key=lambda c: s.prices.instances[c].on_demand_usd_per_h / s.pods_per_node[c])
    return s.pods_per_node[best]


def _starts(desired: np.ndarray, initial: int) -> list[int]:
    """Rows where the desired replicas leave 0 (the row before the first is the run's initial count)."""
    prev = np.concatenate([[initial], desired[:-1]])
    return [int(i) for i in np.flatnonzero((prev == 0) & (desired > 0))]


class _Timeline:
    """The columns a wake is read from, with each row's length and cost."""

    def __init__(self, table: np.ndarray, duration_s: float) -> None:
        t = table[:, COL["t_s"]]
        self.dt = np.diff(np.append(t, max(duration_s, t[-1] + 1.0)))
        self.t = t
        self.desired = table[:, COL["desired_replicas"]]
        self.ready = table[:, COL["ready_replicas"]]
        self.nodes = table[:, COL["nodes_spot"]] + table[:, COL["nodes_on_demand"]]
        self.offered = table[:, COL["offered_rps"]]
        self.timed_out = table[:, COL["timed_out_rps"]] * self.dt
        cost = table[:, COL["cost_usd"]]
        self.dcost = np.diff(np.concatenate([[0.0], cost]))


def _one_wake(tl: _Timeline, i: int, stop: int, need: Any, per_node: int) -> dict[str, Any]:
    """The wake starting at row ``i`` (the next one starts at ``stop``); ``need(rates)`` gives pods for loads."""
    ready_rows = np.flatnonzero(tl.ready[i:stop] > 0)
    first_ready = i + int(ready_rows[0]) if len(ready_rows) else stop - 1
    needed_so_far = need(np.maximum.accumulate(tl.offered[i:stop]))
    d = tl.desired[i:stop]
    back = np.flatnonzero((np.arange(i, stop) > first_ready) & ((d <= needed_so_far) | (d == 0)))
    end = i + int(back[0]) if len(back) else stop - 1
    pods_needed = int(needed_so_far[end - i])
    nodes_needed = math.ceil(pods_needed / per_node)
    # the nodes beyond the need stay until they empty and go, unless the load asks for more pods again
    above = (tl.nodes[end:stop] <= nodes_needed) | (tl.desired[end:stop] > pods_needed)
    node_end = end + int(np.argmax(above)) if above.any() else stop - 1
    rows = slice(i, max(end, node_end) + 1)
    extra = np.clip(tl.nodes[rows] - nodes_needed, 0, None)
    share = np.divide(extra, tl.nodes[rows], out=np.zeros_like(extra), where=tl.nodes[rows] > 0)
    return {
        "at_s": round(float(tl.t[i]), 1),
        "first_ready_after_s": round(float(tl.t[first_ready] - tl.t[i]), 1) if len(ready_rows) else None,
        "pods_asked": int(tl.desired[i : end + 1].max()),
        "pods_needed": pods_needed,
        "nodes_asked": int(tl.nodes[rows].max()),
        "nodes_needed": nodes_needed,
        "extra_node_hours": round(float((extra * tl.dt[rows]).sum()) / 3600.0, 4),
        "extra_cost_usd": round(float((tl.dcost[rows] * share).sum()), 4),
        "timed_out": round(float(tl.timed_out[i : first_ready + 1].sum())),
    }


def wakes(table: np.ndarray, setup: SimSetup, initial: int, mean_images: float, duration_s: float) -> list[dict]:
    """Every wake from zero of the run whose timeline is ``table`` (``initial`` pods at its start)."""
    if len(table) == 0:
        return []
    plan = setup.plan
    capacity = setup.capacity(mean_images)
    floor = max(1, plan.min_replicas)

    def need(rates: np.ndarray) -> np.ndarray:
        return np.maximum(floor, np.ceil(rates * mean_images / (0.8 * capacity) - 1e-9)).astype(int)

    tl = _Timeline(table, duration_s)
    starts = _starts(tl.desired, initial)
    per_node = _nodes_per_pod_rule(setup)
    bounds = [*starts[1:], len(table)] if starts else []
    return [_one_wake(tl, i, stop, need, per_node) for i, stop in zip(starts, bounds, strict=True)]


def wake_findings(
    table: np.ndarray, setup: SimSetup, summary: dict[str, Any], initial: int, mean_images: float
) -> dict[str, Any]:
    """``summary.json``'s ``wakes``, ``wake_overshoot`` and ``flags`` for a run."""
    found = wakes(table, setup, initial, mean_images, summary["duration_s"])
    over = [w for w in found if w["pods_asked"] > w["pods_needed"]]
    month = setup.prices.hours_per_month * 3600.0 / summary["duration_s"]
    extra_cost = sum(w["extra_cost_usd"] for w in over)
    totals = {
        "wakes": len(over),
        "of_wakes": len(found),
        "pods_asked_max": max((w["pods_asked"] for w in over), default=0),
        "pods_needed_max": max((w["pods_needed"] for w in over), default=0),
        "nodes_asked_max": max((w["nodes_asked"] for w in over), default=0),
        "extra_node_hours": round(sum(w["extra_node_hours"] for w in over), 4),
        "extra_cost_usd": round(extra_cost, 4),
        "extra_cost_per_month_if_repeated_usd": round(extra_cost * month, 2),
    }
    flags = []
    if summary["requests_timed_out_waking"]:
        flags.append("wake_timeouts")
    if over:
        flags.append("wake_overshoot")
    if summary["requests_refused_no_pods"]:
        flags.append("refused_at_zero")
    return {"wakes": found[:MAX_LISTED], "wake_overshoot": totals, "flags": flags}
