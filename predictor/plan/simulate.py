"""Run one scenario with either engine and summarise it."""

from __future__ import annotations

from typing import Any, Literal

from predictor.plan.progress import Mode
from predictor.plan.progress import make as make_progress
from predictor.plan.results import Recorder, summarize
from predictor.plan.setup import SimSetup
from predictor.plan.traffic import TrafficProfile

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
            from predictor.plan.fluid import FluidEngine

            eng: Any = FluidEngine(setup, traffic, slo_ms, step_s=step_s)
        else:
            from predictor.plan.des import DesEngine

            eng = DesEngine(setup, traffic, slo_ms)
        cost = eng.run(bar)
    finally:
        if bar is not None:
            bar.close()
    summary = summarize(eng.rec, cost, setup.prices.hours_per_month, eng.baseline())
    return eng.rec, summary
