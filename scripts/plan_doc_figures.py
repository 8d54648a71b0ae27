#!/usr/bin/env python3
"""Every planner figure quoted in docs/capacity.md and README.md, produced by a run.

Runs fixed-seed ``python -m predictor plan`` processes (and the engine cross-check's scenarios through both
engines), keeps the figures the docs quote in ``docs/plan-figures.json`` together with a fingerprint of
everything that decides them (the planner's code and data, the chart, the traffic files, the scenarios),
and writes the generated blocks of the docs, between ``<!-- plan-figures:NAME -->`` and
``<!-- /plan-figures:NAME -->``. ``tests/docs/test_plan_figures.py`` fails when a block differs from what
the JSON renders, when the fingerprint no longer matches the sources, or when a quick run gives another
result.

    .venv/bin/python scripts/plan_doc_figures.py           # run everything (minutes), update the JSON and docs
    .venv/bin/python scripts/plan_doc_figures.py --check   # no runs: exit 1 if the docs or the JSON are stale
    .venv/bin/python scripts/plan_doc_figures.py --render  # no runs: write the docs' blocks from the JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "plan-figures.json"
DOCS = (ROOT / "docs" / "capacity.md", ROOT / "README.md")
FINGERPRINTED = ("classifier_plan", "chart/templates", "chart/values.yaml", "chart/values.schema.json", "chart/ci")
FINGERPRINTED_FILES = (
    "predictor/config.py",
    "chart/Chart.yaml",
    "tests/plan/test_engine_agreement.py",
)
DEFAULT, SPOT = "chart/ci/default-values.yaml", "chart/ci/gpu-spot-knative-canary-values.yaml"
CPU, L4, SEED = "cpu-epyc-2c-efficientnet-lite0", "estimate-l4-resnet50", "seed-figures-t4"
KEYS = (
    "requests_offered",
    "requests_served",
    "requests_refused",
    "requests_timed_out",
    "requests_timed_out_waking",
    "p95_ms",
    "slo_attainment",
    "peak_ready_replicas",
    "peak_nodes",
    "time_to_first_ready_s_after_idle",
    "wakes_from_zero",
    "wake_overshoot",
    "cost_usd",
    "cost_per_month_if_repeated_usd",
    "baseline_cost_per_month_usd",
    "savings_ratio",
    "engine",
)
RUNS: dict[str, dict[str, Any]] = {
    "quiet-default-cpu": {"traffic": "quiet", "values": [DEFAULT], "capacity": CPU, "quick": True},
    "spike-default-cpu": {"traffic": "spike", "values": [DEFAULT], "capacity": CPU, "quick": True},
    "peak-default-cpu": {"traffic": "peak", "values": [DEFAULT], "capacity": CPU, "quick": True},
    "black-friday-default-cpu": {"traffic": "black-friday", "values": [DEFAULT], "capacity": CPU},
    "black-friday-default-seed": {"traffic": "black-friday", "values": [DEFAULT], "capacity": SEED},
    "idle-night-spot-cpu": {"traffic": "idle-night", "values": [SPOT], "capacity": CPU},
    "idle-night-spot-l4": {"traffic": "idle-night", "values": [SPOT], "capacity": L4},
    "month-spot-cpu": {"traffic": "month", "values": [SPOT], "capacity": CPU},
}
"""Each run: ``python -m predictor plan --traffic docs/traffic/T.yaml --values ... --capacity C --slo-p95-ms 500
--assume seed=1`` (engine: auto)."""


def fingerprint() -> str:
    """sha256 over the files that decide the figures (paths and contents, in order)."""
    files: list[Path] = [ROOT / f for f in FINGERPRINTED_FILES]
    for d in FINGERPRINTED:
        p = ROOT / d
        files += sorted(x for x in p.rglob("*") if x.is_file() and "__pycache__" not in x.parts) if p.is_dir() else [p]
    files += sorted((ROOT / "docs" / "traffic").glob("*.yaml"))
    h = hashlib.sha256(json.dumps([RUNS, KEYS], sort_keys=True).encode())  # what is run and kept
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def command(run: dict[str, Any], out: Path) -> list[str]:
    argv = [sys.executable, "-m", "predictor", "plan", "--traffic", f"docs/traffic/{run['traffic']}.yaml"]
    for v in run["values"]:
        argv += ["--values", v]
    argv += ["--capacity", run["capacity"], "--slo-p95-ms", "500", "--assume", "seed=1"]
    return [*argv, "--out", str(out), "--no-plots", "--progress", "off"]


def run_plan(name: str) -> dict[str, Any]:
    """One run's figures (the summary's quoted keys)."""
    run = RUNS[name]
    with tempfile.TemporaryDirectory(prefix="plan-figures-") as tmp:
        out = Path(tmp) / name
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        r = subprocess.run(command(run, out), cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"{name}: plan failed: {r.stderr[-2000:]}")
        s = json.loads((out / "summary.json").read_text())
    return {k: s.get(k) for k in KEYS}


def run_agreement() -> dict[str, Any]:
    """The engine cross-check's scenarios through both engines (1 s steps)."""
    sys.path.insert(0, str(ROOT))
    from classifier_plan import simulate
    from classifier_plan.capacity import CapacityProfile
    from tests.plan.conftest import SYNTHETIC, make_setup
    from tests.plan.test_engine_agreement import SCENARIOS, slow_profile

    out: dict[str, Any] = {}
    for name, sc in SCENARIOS.items():
        prof = slow_profile() if sc.slow else CapacityProfile.model_validate(SYNTHETIC)
        with tempfile.TemporaryDirectory() as tmp:
            s = make_setup(Path(tmp), "helm", sc.values, prof, sc.min_replicas, **sc.assume)
        out[name] = {}
        for engine in ("request", "fluid"):
            summary = simulate.run(s, sc.traffic, sc.slo_ms, engine)[1]
            out[name][engine] = {k: summary.get(k) for k in KEYS}
    return out


# ---------------------------------------------------------------------------------------------- rendering
NONE = "\u2013"  # an en dash where a figure does not apply


def _money(v: float) -> str:
    return f"${v:,.0f}"


def _pct(v: float | None, digits: int = 2) -> str:
    return NONE if v is None else f"{round(100 * v, digits) + 0.0:.{digits}f} %"  # + 0.0: no "-0 %"


def render_seed_replay(d: dict[str, Any]) -> str:
    label = {
        "quiet-default-cpu": ("quiet (1-5/min)", "default", "cpu"),
        "spike-default-cpu": ("spike (3 → 120/min)", "default", "cpu"),
        "peak-default-cpu": ("peak (50 → 600/min)", "default", "cpu"),
        "black-friday-default-cpu": ("Black Friday (50 → 2,000/min)", "default", "cpu"),
        "black-friday-default-seed": ("Black Friday", "default", "seed"),
        "idle-night-spot-cpu": ("idle 02:00-06:00", "spot, min 0", "cpu"),
        "idle-night-spot-l4": ("idle 02:00-06:00", "spot, min 0", "L4"),
        "month-spot-cpu": ("month (diurnal, idle nights, a Black Friday)", "spot, min 0", "cpu"),
    }
    rows = [
        "| scenario | chart | pod | engine | requests | peak pods | p95 ms | within SLO | first pod after idle "
        "| timed out waking | cost of the run | $/month if repeated | baseline $/month | savings |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (scenario, chart, pod) in label.items():
        s = d["runs"][name]
        first = s["time_to_first_ready_s_after_idle"]
        rows.append(
            f"| {scenario} | {chart} | {pod} | {s['engine']} | {s['requests_offered']:,} | {s['peak_ready_replicas']} "
            f"| {s['p95_ms']:,} | {_pct(s['slo_attainment'])} | {NONE if first is None else f'{first:.0f} s'} "
            f"| {s['requests_timed_out_waking']:,} | ${s['cost_usd']:,.2f} "
            f"| {_money(s['cost_per_month_if_repeated_usd'])} "
            f"| {_money(s['baseline_cost_per_month_usd'])} | {_pct(s['savings_ratio'], 0)} |"
        )
    return "\n".join(rows)


def render_agreement(d: dict[str, Any]) -> str:
    rows = [
        "| scenario | engine | offered | served | refused | timed out | p95 ms | within SLO | peak pods | cost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, both in d["agreement"].items():
        for e in ("request", "fluid"):
            s = both[e]
            p95 = NONE if s["p95_ms"] is None else f"{s['p95_ms']:,}"
            rows.append(
                f"| {name if e == 'request' else ''} | {e} | {s['requests_offered']:,} | {s['requests_served']:,} "
                f"| {s['requests_refused']:,} | {s['requests_timed_out']:,} | {p95} | {_pct(s['slo_attainment'])} "
                f"| {s['peak_ready_replicas']} | ${s['cost_usd']:.4f} |"
            )
    return "\n".join(rows)


def render_idle_night(d: dict[str, Any]) -> str:
    s = d["runs"]["idle-night-spot-cpu"]
    return (
        f"the first pod after the idle night was ready {s['time_to_first_ready_s_after_idle']:.0f} s after the "
        f"first request (a new spot node), and {s['requests_timed_out_waking']:,} requests timed out at the "
        f"activator meanwhile; the day cost ${s['cost_usd']:.2f}"
    )


def render_wake_findings(d: dict[str, Any]) -> str:
    a, b = d["runs"]["idle-night-spot-cpu"], d["runs"]["month-spot-cpu"]
    return (
        f"{a['requests_timed_out_waking']:,} requests timed out at the activator on the idle-night day, "
        f"{b['requests_timed_out_waking']:,} over the month"
    )


def render_wake_overshoot(d: dict[str, Any]) -> str:
    a, b = d["runs"]["idle-night-spot-cpu"], d["runs"]["month-spot-cpu"]
    day, month = a.get("wake_overshoot"), b.get("wake_overshoot")
    if day is None or month is None:
        return "figures not produced yet: run scripts/plan_doc_figures.py"
    return (
        f"on the idle-night day {day['wakes']} of {day['of_wakes']} wakes overshot (up to {day['pods_asked_max']} "
        f"pods where {day['pods_needed_max']} were needed: {day['extra_node_hours']:g} extra node-hours, "
        f"${day['extra_cost_usd']:.2f}); over the month {month['wakes']} of {month['of_wakes']}, "
        f"${month['extra_cost_usd']:.2f} extra"
    )


BLOCKS = {
    "seed-replay": render_seed_replay,
    "engine-agreement": render_agreement,
    "idle-night": render_idle_night,
    "wake-findings": render_wake_findings,
    "wake-overshoot": render_wake_overshoot,
}


def render_docs(d: dict[str, Any], texts: dict[Path, str]) -> dict[Path, str]:
    """The docs with every generated block replaced by what ``d`` renders."""
    out = {}
    for path, text in texts.items():
        for name, fn in BLOCKS.items():
            pat = re.compile(rf"(<!-- plan-figures:{name} -->)(.*?)(<!-- /plan-figures:{name} -->)", re.S)
            inline = "\n" not in (pat.search(text).group(2) if pat.search(text) else "\n")
            body = fn(d) if inline else f"\n{fn(d)}\n"
            text = pat.sub(lambda m, b=body: m.group(1) + b + m.group(3), text)
        out[path] = text
    return out


def stale(d: dict[str, Any]) -> list[str]:
    """What is out of date (empty: the docs and the JSON match the sources)."""
    problems = []
    if d.get("fingerprint") != fingerprint():
        problems.append("docs/plan-figures.json was produced from other sources: run scripts/plan_doc_figures.py")
    texts = {p: p.read_text() for p in DOCS}
    for p, new in render_docs(d, texts).items():
        if new != texts[p]:
            problems.append(f"{p.relative_to(ROOT)}: a generated block differs from docs/plan-figures.json")
    for name in BLOCKS:
        if not any(f"<!-- plan-figures:{name} -->" in t for t in texts.values()):
            problems.append(f"no <!-- plan-figures:{name} --> block in the docs")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="run nothing; exit 1 if the docs or the JSON are stale")
    p.add_argument("--render", action="store_true", help="run nothing; write the docs' blocks from the JSON")
    a = p.parse_args(argv)
    if a.render:
        d = json.loads(FIGURES.read_text())
        for path, text in render_docs(d, {p: p.read_text() for p in DOCS}).items():
            path.write_text(text)
        return 0
    if a.check:
        problems = stale(json.loads(FIGURES.read_text()))
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    d: dict[str, Any] = {"fingerprint": fingerprint(), "runs": {}, "commands": {}}
    for name in RUNS:
        print(f"plan-figures: {name}", file=sys.stderr, flush=True)
        d["runs"][name] = run_plan(name)
        d["commands"][name] = " ".join(command(RUNS[name], Path("plan"))[1:]).replace(" --no-plots", "")
    print("plan-figures: engine agreement", file=sys.stderr, flush=True)
    d["agreement"] = run_agreement()
    FIGURES.write_text(json.dumps(d, indent=1) + "\n")
    for path, text in render_docs(d, {p: p.read_text() for p in DOCS}).items():
        path.write_text(text)
    print(f"wrote {FIGURES.relative_to(ROOT)} and the docs' generated blocks", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
