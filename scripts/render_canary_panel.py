"""Render the dashboard's canary-vs-stable panels from a real canary run into docs/img/canary.png.

Runs the canary test stack (``tests/support/canary_stack.py``: the embedded model served as a stable
revision and three canaries, a real Prometheus scraping them with the PodMonitor's labels), then three
analyses one after the other with ``python -m predictor canary`` on the chart's InferenceService in a
file: the healthy canary (promoted), the refusing one (a queue smaller than a request: every answer a
400, rolled back by the client-error check) and the slow one (2 s batch delay: rolled back), each under
``bench.loadgen`` load on the stable and that canary. The panels "Success and error rate" (2xx, 5xx,
4xx), "Error ratio (5xx)" and "Latency p50 / p95 / p99" by revision are taken from the
dashboard *rendered by the chart*, evaluated with Prometheus' ``query_range`` over the run, and drawn
with every decision of the tool marked. Needs ``prometheus``, ``helm``, ``kubectl`` and matplotlib.

    .venv/bin/python scripts/render_canary_panel.py                  # about 2 minutes on 2 cores
    .venv/bin/python scripts/render_canary_panel.py --step_interval 10 --out /tmp/canary.png
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import DEFAULT_MODEL_DIR  # noqa: E402
from tests.support.canary_stack import KNATIVE_PROFILE, CanaryStack, render, run_tool  # noqa: E402

PANELS = ("Success and error rate by revision", "Error ratio (5xx) by revision", "Latency p50 / p95 / p99 by revision")
RUNS = (("healthy", "promoted"), ("refusing", "rolled back"), ("slow", "rolled back"))
COLORS = {"stable": "#5794f2", "healthy": "#ff9830", "refusing": "#f2495c", "slow": "#b877d9"}
SHORT = {
    "pass": "PASS",
    "fail": "FAIL",
    "no-data": "NO DATA",
    "hold": "HOLD",
    "promote": "PROMOTE",
    "rollback": "ROLLBACK",
}


def dashboard_panels() -> list[dict]:
    """The chart's dashboard panels that compare revisions (from the rendered ConfigMap); of the latency
    panel only its p95 target, the one the tool judges."""
    objects = render(KNATIVE_PROFILE, "demo")
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard"))
    dashboard = json.loads(next(iter(cm["data"].values())))
    panels = [p for title in PANELS for p in dashboard["panels"] if p["title"] == title]
    for p in panels:
        if p["title"].startswith("Latency"):
            p["targets"] = [t for t in p["targets"] if "histogram_quantile(0.95," in t["expr"]]
            p["title"] += " (p95 target)"
    return panels


def analyse(stack: CanaryStack, canary: str, work: Path, step_interval: float) -> list[tuple[float, str]]:
    """One analysis under load; returns (time, label) of each decision."""
    isvc = stack.knative_file(canary, work / f"isvc-{canary}.yaml")
    args = stack.tool_args(
        isvc,
        stack.kn_name,
        "--steps",
        "10,25,50,100",
        "--step-interval",
        f"{step_interval:g}",
        "--min-requests",
        "5",
        "--max-p95-ratio",
        "3",
        "--log-format",
        "json",
    )
    with stack.load("stable", canary):
        result = run_tool(args, timeout_s=600)
    print(f"{canary}: exit {result.returncode}\n" + "\n".join(result.stdout.splitlines()[1:]), flush=True)
    marks = []
    for e in result.events():
        when = datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        if e["event"] == "traffic":
            marks.append((when, f"{canary}: {e['traffic_percent']}%"))
        elif e["event"] == "check":
            nxt = f" -> {e['next_percent']}%" if e["next"] == "traffic" else ""
            marks.append((when, SHORT[e["verdict"]] + nxt))
    return marks


def legend(fmt: str, labels: dict[str, str], roles: dict[str, str]) -> str:
    """The panel's legend format filled in, each revision named with its role in the run."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "")
    for revision, role in roles.items():
        text = text.replace(revision, f"{revision.rsplit('-', 1)[-1]} {role}")
    return text


def plot(
    panels: list[dict],
    data: dict,
    span: tuple[float, float],
    marks: list,
    roles: dict[str, str],
    out: Path,
    subtitle: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    start, end = span
    fig, axes = plt.subplots(len(panels), 1, figsize=(16, 3.4 * len(panels)), sharex=True)
    fig.patch.set_facecolor("#111217")
    for ax, panel in zip(axes, panels, strict=True):
        ax.set_facecolor("#181b1f")
        ax.tick_params(colors="#ccc", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color("#444")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_title(f"{panel['title']}  [{unit}]" if unit else panel["title"], color="#eee", fontsize=10, loc="left")
        for i, target in enumerate(panel["targets"]):
            for series in data[(panel["id"], target["refId"])]:
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) * (100 if unit == "percentunit" else 1) for _, v in series["values"]]
                role = roles.get(series["metric"].get("revision", ""), "")
                ax.plot(
                    xs,
                    ys,
                    linewidth=1.4,
                    linestyle=("-", "--", ":")[i % 3],
                    color=COLORS.get(role.split(" ")[0]),
                    label=legend(target.get("legendFormat", ""), series["metric"], roles),
                )
        if unit == "s":
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if unit == "percentunit":
            ax.set_ylim(-2, 105)
        for t, label in marks:
            color = "#e05050" if "ROLLBACK" in label or "FAIL" in label else "#50c878" if "PROMOTE" in label else "#777"
            ax.axvline(t - start, color=color, linewidth=0.8, linestyle=":")
            if ax is axes[0]:
                ax.text(
                    t - start,
                    1.0,
                    label,
                    rotation=90,
                    fontsize=7,
                    color=color,
                    va="top",
                    ha="right",
                    transform=ax.get_xaxis_transform(),
                )
        ax.set_xlim(0, end - start)
        ax.legend(
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.005, 1.0),
            facecolor="#222",
            labelcolor="#ddd",
            edgecolor="#444",
        )
        ax.grid(color="#2a2d33", linewidth=0.5)
    axes[-1].set_xlabel("seconds", color="#aaa", fontsize=8)
    fig.suptitle(
        f"Canary vs stable: the chart's dashboard panels during three analyses — {subtitle}", color="#eee", fontsize=11
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor=fig.get_facecolor())
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--step_interval", type=float, default=8.0, help="seconds per step of each analysis")
    p.add_argument("--rate_interval", default="8s", help="what $__rate_interval stands for")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "canary.png")
    args = p.parse_args(argv)

    panels = dashboard_panels()
    with tempfile.TemporaryDirectory(prefix="render-canary-") as tmp:
        work = Path(tmp)
        stack = CanaryStack(work, args.model_dir)
        try:
            stack.start()
            start = time.time()
            marks = []
            for canary, _ in RUNS:
                marks += analyse(stack, canary, work, args.step_interval)
            time.sleep(2)  # the last scrapes land: this only pads the plot's right edge
            end = time.time()
            data = {}
            for panel in panels:
                for target in panel["targets"]:
                    expr = target["expr"].replace("$namespace", "ml").replace("$isvc", stack.kn_name)
                    expr = expr.replace("$__rate_interval", args.rate_interval)
                    data[(panel["id"], target["refId"])] = stack.prometheus.query_range(expr, start, end, 1.0)
        finally:
            stack.stop()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"EfficientNet-Lite0 on CPU, steps 10/25/50/100 every {args.step_interval:g}s, {when}"
    roles = {stack.revision(name): name if name == "stable" else f"{name} canary" for name in stack.targets}
    plot(panels, data, (start, end), marks, roles, args.out, subtitle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
