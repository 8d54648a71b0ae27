"""What both engines share: the cluster, the control loop, the timeline row, cold-start waits, baseline.

An engine supplies the data plane (requests, or fluid flows) and implements :class:`Listener` and
:class:`~classifier_plan.control.Signals`; :class:`EngineBase` does the rest once per step.
"""

from __future__ import annotations

import math
from typing import Any

from classifier_plan.cluster import Cluster
from classifier_plan.control import Controller
from classifier_plan.holder import holder_of
from classifier_plan.results import Recorder
from classifier_plan.setup import SimSetup
from classifier_plan.traffic import TrafficProfile


class EngineBase:
    """The parts of a run that do not depend on how requests are modelled."""

    def __init__(self, setup: SimSetup, traffic: TrafficProfile, slo_ms: float) -> None:
        self.s, self.traffic = setup, traffic
        self.settings = setup.plan.settings
        self.rec = Recorder(traffic.duration, slo_ms)
        self.cluster = Cluster(setup, self)  # type: ignore[arg-type]
        self.ctrl = Controller(setup, self.cluster, self)  # type: ignore[arg-type]
        self.idle_since: float | None = None  # first arrival while no pod was ready
        self.holder = holder_of(setup.plan)  # Knative's activator, the HTTP add-on's interceptor, or None
        self.seed = setup.assumptions.seed

    # -- hooks for the engines
    def note_arrival_without_pods(self, now: float) -> None:
        if self.idle_since is None:
            self.idle_since = now

    def note_ready(self, now: float) -> None:
        if self.idle_since is not None:
            self.rec.wake_waits_s.append(now - self.idle_since)
            self.idle_since = None

    def control_step(self, now: float) -> None:
        """Lifecycle events and the autoscaler, for the second ending at ``now``."""
        self.cluster.advance(now)
        self.ctrl.tick(now)
        self.cluster.advance(now)

    def record_row(
        self, t: float, dt: float, counts: tuple[float, float, float, float], queue: float, p95: float
    ) -> None:
        offered, served, refused, timed_out = counts
        c = self.cluster
        spot, od = c.nodes_by_capacity()
        self.rec.row(
            (
                t,
                offered / dt,
                served / dt,
                refused / dt,
                timed_out / dt,
                c.replicas,
                c.count("ready"),
                c.count("pending") + c.count("starting"),
                spot,
                od,
                queue,
                p95,
                c.cost_usd["typical"],
            )
        )

    def baseline(self) -> dict[str, Any]:
        """Static provisioning: enough pods for the peak offered load at 80 % of a pod's capacity (at least
        ``minReplicas``), on on-demand nodes all month."""
        s, t = self.s, self.traffic
        capacity = s.capacity(t.mean_images)
        peak_img = float(t.per_second().max()) * t.mean_images
        pods = max(1, s.plan.min_replicas, math.ceil(peak_img / (0.8 * capacity)))
        best = min(s.candidates, key=lambda c: s.prices.instances[c].on_demand_usd_per_h / s.pods_per_node[c])
        nodes = math.ceil(pods / s.pods_per_node[best])
        price = s.prices.instances[best].on_demand_usd_per_h
        return {
            "what": "static: pods for the peak offered load at 80 % of a pod's capacity, on-demand nodes, 24/7",
            "pods": pods,
            "instance_type": best,
            "nodes": nodes,
            "usd_per_h": price,
            "cost_per_month_usd": nodes * price * s.prices.hours_per_month,
        }

    def finish(self) -> dict[str, Any]:
        """Totals into the recorder's extras; returns the cost dict."""
        c = self.cluster
        self.rec.extra.update(
            {
                "spot_interruptions": c.interruptions,
                "cold_starts": c.cold_starts,
                "node_hours": {k: round(v / 3600.0, 3) for k, v in sorted(c.node_seconds.items())},
            }
        )
        return dict(c.cost_usd)
