"""``python -m predictor plan``: render the chart, simulate the traffic, write the plan into ``--out``.

Bad input (a file that is missing or has unknown keys, negative rates, values that do not render) exits
with code 2 and one line naming the file, the key and what is accepted; ``--out`` is then untouched.
Everything is written into a temporary directory beside ``--out`` and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from classifier_plan.errors import PlanInputError
from classifier_plan.fidelity import REQUEST_ENGINE_MAX  # noqa: F401  (re-exported: the documented threshold)


def default_chart() -> Path:
    """The chart beside the package (a source checkout), else ``./chart``."""
    here = Path(__file__).resolve().parents[1] / "chart"
    return here if (here / "Chart.yaml").exists() else Path("chart")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``plan`` subcommand's flags."""
    p.add_argument(
        "--values",
        metavar="FILE",
        type=Path,
        action="append",
        default=[],
        help="chart values file (repeatable, in order)",
    )
    p.add_argument(
        "--traffic", metavar="FILE", type=Path, required=True, help="traffic profile YAML (see docs/traffic/)"
    )
    p.add_argument(
        "--capacity",
        metavar="FILE|NAME",
        default="bench/results/capacity.json",
        help="capacity profile: a capacity.json (make bench-capacity) or a packaged profile name",
    )
    p.add_argument(
        "--slo-p95-ms",
        metavar="MS",
        type=float,
        default=500.0,
        help="latency SLO in ms: 95 %% of requests answered within it",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        required=True,
        help="directory for report.md, plots, timeline.csv, summary.json",
    )
    p.add_argument(
        "--engine",
        choices=("auto", "request", "fluid"),
        default="auto",
        help="request: every request simulated; fluid: rates per step; auto: request up to 3 million expected "
        "requests, else fluid",
    )
    p.add_argument(
        "--step-s",
        metavar="SECONDS",
        type=float,
        default=None,
        help="fluid engine step in seconds (default: 1, 5 beyond 2 days)",
    )
    p.add_argument(
        "--timeline-step-s",
        type=float,
        default=None,
        help="timeline.csv row spacing in seconds (default: 1, 60 beyond a day)",
    )
    p.add_argument("--prices", metavar="FILE", type=Path, default=None, help="price file overriding the packaged one")
    p.add_argument("--assume", action="append", default=[], metavar="KEY=VALUE", help="override an assumption")
    p.add_argument("--assumptions", metavar="FILE", type=Path, default=None, help="YAML file of assumptions")
    p.add_argument(
        "--chart", metavar="DIR", type=Path, default=None, help="chart directory (default: the repository's chart/)"
    )
    p.add_argument("--release", metavar="NAME", default="image-classifier", help="release name to render with")
    p.add_argument(
        "--allow-untrusted-capacity",
        action="store_true",
        help="plan on a capacity profile marked untrusted (measured on a busy machine); the report says so",
    )
    p.add_argument("--recommend", action="store_true", help="also search the cheapest values that meet the SLO")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress on stderr: auto = a bar on a terminal (runs over an hour simulated), a line every 30 s "
        "of wall clock elsewhere, one line per --recommend candidate",
    )


def main(args: argparse.Namespace) -> int:
    """Run a plan; returns the exit code (2 for bad input)."""
    try:
        return _run(args)
    except PlanInputError as e:
        print(f"plan: error: {e}", file=sys.stderr)
        return 2


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point for ``python -m predictor plan`` once argparse has parsed the flags (same as :func:`main`)."""
    return main(args)


def _check_flags(args: argparse.Namespace) -> None:
    if not args.slo_p95_ms > 0:
        raise PlanInputError("--slo-p95-ms", "", f"must be > 0 ms, got {args.slo_p95_ms}")
    for flag in ("step_s", "timeline_step_s"):
        v = getattr(args, flag)
        if v is not None and not v > 0:
            raise PlanInputError(f"--{flag.replace('_', '-')}", "", f"must be > 0 seconds, got {v}")
    if args.out.exists() and not args.out.is_dir():
        raise PlanInputError("--out", str(args.out), "exists and is not a directory")


def load_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Every input file read and checked, the chart rendered: nothing simulated yet."""
    from classifier_plan.assumptions import load_assumptions
    from classifier_plan.capacity import load_capacity
    from classifier_plan.chart import parse_objects, read_plan, render
    from classifier_plan.prices import load_prices
    from classifier_plan.traffic import load_traffic
    from classifier_plan.values import read_values, write_values

    _check_flags(args)
    if not args.no_plots:
        from classifier_plan.plots import require_matplotlib

        require_matplotlib()
    traffic = load_traffic(args.traffic)
    profile = load_capacity(args.capacity)
    if not profile.trusted and not args.allow_untrusted_capacity:
        raise PlanInputError(
            f"--capacity {args.capacity}",
            "trusted",
            "the profile is marked untrusted (measured while other tenants kept the machine busy: "
            + "; ".join(profile.untrusted_reasons or ["no reason recorded"])
            + "): re-measure on a quiet machine (make bench-capacity), or pass --allow-untrusted-capacity",
        )
    prices = load_prices(args.prices)
    assumptions = load_assumptions(args.assumptions, args.assume)
    chart = args.chart or default_chart()
    if not (chart / "Chart.yaml").exists():
        raise PlanInputError("--chart", str(chart), "no Chart.yaml there: pass --chart with the chart directory")
    values = read_values(args.values)
    tmp = Path(tempfile.mkdtemp(prefix="plan-inputs-"))
    merged = write_values(values, tmp, "values.yaml")
    plan = read_plan(parse_objects(render(chart, args.values, args.release)))  # errors name the user's files
    rendered = render(chart, [merged], args.release)  # what classify() compares against
    return {
        "traffic": traffic,
        "profile": profile,
        "prices": prices,
        "assumptions": assumptions,
        "chart": chart,
        "values": values,
        "merged": merged,
        "rendered": rendered,
        "plan": plan,
        "tmp": tmp,
    }


def _run(args: argparse.Namespace) -> int:
    from classifier_plan import simulate
    from classifier_plan.fidelity import choose_engine
    from classifier_plan.progress import choose_mode
    from classifier_plan.results import aggregate
    from classifier_plan.setup import SimSetup
    from classifier_plan.values import classify

    inp = load_inputs(args)
    try:
        traffic, plan = inp["traffic"], inp["plan"]
        setup = SimSetup(plan, inp["profile"], inp["prices"], inp["assumptions"])
        checks = classify(inp["chart"], inp["values"], args.release, plan, inp["rendered"])
        choice = choose_engine(setup, traffic, args.engine, args.step_s)
        engine, step = choice.engine, choice.step_s
        setup.notes.extend(choice.notes)
        progress = choose_mode(args.progress, sys.stderr, traffic.duration)
        rec, summary = simulate.run(setup, traffic, args.slo_p95_ms, engine, step, progress)
        recommendation: list[str] = []
        extra_files: dict[str, str] = {}
        if args.recommend:
            from classifier_plan.recommend import recommend

            say = None if progress == "off" else lambda line: print(f"plan: {line}", file=sys.stderr, flush=True)
            recommendation, extra_files = recommend(args, inp, summary, engine, step, say)
            if "recommended-values.yaml" not in extra_files:
                print(
                    "plan: --recommend: no candidate met the SLO for less than your values; no "
                    "recommended-values.yaml written (report.md lists every candidate)",
                    file=sys.stderr,
                )
        tl_step = args.timeline_step_s or (60.0 if traffic.duration > 86400 else 1.0)
        table = rec.table()
        out_table = aggregate(table, tl_step) if tl_step > 1.0 else table
        _write_out(args, inp, setup, summary, out_table, checks, recommendation, extra_files)
    finally:
        shutil.rmtree(inp["tmp"], ignore_errors=True)
    lost = sum(summary[k] for k in ("requests_timed_out_waking", "requests_refused_waking", "requests_refused_no_pods"))
    if lost:
        print(
            f"plan: WARNING: {summary['requests_timed_out_waking']:,} requests timed out waiting for a wake from "
            f"zero, {summary['requests_refused_waking']:,} refused after being held for it, "
            f"{summary['requests_refused_no_pods']:,} refused while no pod was ready: see report.md",
            file=sys.stderr,
        )
    over = summary.get("wake_overshoot") or {}
    if over.get("wakes"):
        print(
            f"plan: WARNING: wake overshoot: {over['wakes']} of {over['of_wakes']} wakes from zero asked for up to "
            f"{over['pods_asked_max']} pods where the load after the wake needs {over['pods_needed_max']}: "
            f"{over['extra_node_hours']:g} extra node-hours, "
            f"${over['extra_cost_usd']:.2f} this run: see report.md",
            file=sys.stderr,
        )
    print(
        f"plan: {summary['requests_offered']:,} requests, p95 {summary['p95_ms']} ms, SLO "
        f"{'met' if summary['slo_met'] else 'NOT met'} ({100 * summary['slo_attainment']:.2f} %), peak "
        f"{summary['peak_ready_replicas']} pods, ${summary['cost_usd']:,.2f} for this run "
        f"(${summary['cost_per_month_if_repeated_usd']:,.2f}/month if repeated); wrote {args.out}",
        file=sys.stderr,
    )
    return 0


def _write_out(args, inp, setup, summary, table, checks, recommendation, extra_files) -> None:
    """Everything into a temporary sibling of ``--out``, then renamed into place."""
    from classifier_plan.report import write_report, write_summary, write_timeline

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        plots: list[str] = []
        if not args.no_plots:
            from classifier_plan.plots import write_plots

            plots = write_plots(table, tmp, args.slo_p95_ms)
        write_timeline(table, tmp / "timeline.csv")
        write_summary(summary, tmp / "summary.json")
        for name, text in extra_files.items():
            (tmp / name).write_text(text)
        ctx = {
            "command": "python -m predictor plan " + " ".join(shlex.quote(a) for a in sys.argv[2:])
            if len(sys.argv) > 2
            else "",
            "traffic": str(args.traffic),
            "traffic_name": inp["traffic"].name,
            "traffic_description": inp["traffic"].description.strip() or "no description",
            "values": [str(v) for v in args.values],
            "chart": str(inp["chart"]),
            "capacity": str(args.capacity),
            "pod_capacity": setup.capacity(inp["traffic"].mean_images),
        }
        write_report(tmp / "report.md", ctx, setup, summary, table, checks, plots, recommendation)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``; an existing ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
