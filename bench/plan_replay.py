"""Replay the seed's scenarios through the planner and time the engines (numbers for docs/capacity.md).

Runs ``python -m predictor plan`` (a real process each time, as a user would) for every scenario in
``docs/traffic`` against chart values profiles and capacity profiles, and prints one Markdown row per
run: pods, latency, SLO, cost, savings, and how long the simulation took on this machine.

Usage::

    python -m bench.plan_replay --capacity bench/results/capacity.json --capacity estimate-l4-resnet50
    python -m bench.plan_replay --scenarios black-friday,month --values chart/ci/gpu-spot-knative-canary-values.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import REPO_ROOT

SCENARIOS = ("quiet", "spike", "peak", "black-friday", "idle-night", "diurnal-day", "month")


def plan(values: Path | None, scenario: str, capacity: str, out: Path, engine: str, extra: list[str]) -> dict[str, Any]:
    """One planner run; returns its summary plus the wall time."""
    cmd = [sys.executable, "-m", "predictor", "plan", "--traffic", f"docs/traffic/{scenario}.yaml"]
    cmd += ["--capacity", capacity, "--out", str(out), "--engine", engine, "--no-plots", *extra]
    if values is not None:
        cmd += ["--values", str(values)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    return {**summary, "wall_s": round(wall, 1), "command": " ".join(cmd[1:])}


def row(values: str, scenario: str, capacity: str, s: dict[str, Any]) -> str:
    savings = "n/a" if s["savings_ratio"] is None else f"{100 * s['savings_ratio'] + 0.0:.0f} %".replace("-0 %", "0 %")
    first = s["time_to_first_ready_s_after_idle"]
    return (
        f"| {scenario} | {values} | {capacity} | {s['engine']} | {s['requests_offered']:,} | "
        f"{s['peak_ready_replicas']} | "
        f"{s['p95_ms']} | {100 * s['slo_attainment']:.2f} % | {s['requests_refused']:,} | "
        f"{'-' if first is None else first} | ${s['cost_per_month_if_repeated_usd']:,.0f} | "
        f"${s['baseline_cost_per_month_usd']:,.0f} | "
        f"{savings} | {s['wall_s']} s |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plan_replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--capacity", action="append", default=[], help="capacity profile (repeatable)")
    p.add_argument("--values", action="append", type=Path, default=[], help="values profile (repeatable)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--engine", default="auto")
    p.add_argument("--slo-p95-ms", default="500")
    a = p.parse_args(argv)
    capacities = a.capacity or ["bench/results/capacity.json"]
    values = a.values or [REPO_ROOT / "chart" / "ci" / "default-values.yaml"]
    print(
        "| scenario | values | capacity | engine | requests | peak pods | p95 ms | within SLO | refused | "
        "first pod after idle (s) | $/month if repeated | baseline $/month | savings | simulated in |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="plan-replay-") as tmp:
        for v in values:
            for cap in capacities:
                for sc in a.scenarios.split(","):
                    out = Path(tmp) / f"{v.stem}-{Path(cap).stem}-{sc}"
                    s = plan(v, sc, cap, out, a.engine, ["--slo-p95-ms", a.slo_p95_ms])
                    print(row(v.name.removesuffix("-values.yaml"), sc, Path(cap).stem, s), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
