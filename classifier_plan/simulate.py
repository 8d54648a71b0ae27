"""Run one scenario with either engine and summarise it."""

from __future__ import annotations

from typing import Any, Literal

from classifier_plan.blindspot import blind_targets
from classifier_plan.progress import Mode
from classifier_plan.progress import make as make_progress
from classifier_plan.results import Recorder, summarize
from classifier_plan.setup import SimSetup
from classifier_plan.traffic import TrafficProfile
from classifier_plan.wake import wake_findings

Engine = Literal["request", "fluid"]


def run(
    setup: SimSetup,
    traffic: TrafficProfile,
    slo_ms: float,
    engine: Engine = "request",
    step_s: float = 1.0,
    progress: Mode | bool = False,
) -> tuple[Recorder, dict[str, Any]]:
    """Simulate ``traffic`` against ``setup``; returns the recorder and ``summary.json``'s dict.

    ``progress``: ``"bar"`` (or True) a tqdm bar, ``"lines"`` a line every half minute, else nothing.
    """
    bar = make_progress(progress, traffic.duration, f"plan: simulating ({engine})")
    try:
        if engine == "fluid":
            from classifier_plan.fluid import FluidEngine

            eng: Any = FluidEngine(setup, traffic, slo_ms, step_s=step_s)
        else:
            from classifier_plan.des import DesEngine

            eng = DesEngine(setup, traffic, slo_ms)
        cost = eng.run(bar)
    finally:
        if bar is not None:
            bar.close()
    summary = summarize(eng.rec, cost, setup.prices.hours_per_month, eng.baseline())
    initial = eng.ctrl.initial_replicas()
    summary.update(wake_findings(eng.rec.table(), setup, summary, initial, traffic.mean_images))
    blind = blind_targets(setup, traffic.mean_images) if summary["requests_refused"] else []
    if blind:
        summary["flags"].append("scaling_blind")
        summary["scaling_blind"] = [
            {"signal": b.signal, "target_per_pod": round(b.target, 2), "most_per_pod": round(b.ceiling, 2)}
            for b in blind
        ]
    return eng.rec, summary
