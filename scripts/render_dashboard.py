"""Render the chart's Grafana dashboard with real data into docs/img/dashboard.png.

Starts the predictor (the embedded EfficientNet-Lite0 by default) and a real Prometheus scraping it every
second with the labels a PodMonitor gives a pod in a cluster, drives a load through ``bench.loadgen``
(steady traffic with some undecodable images, a ramp, a burst past the queue that gets 503s, a cool
down), then evaluates every panel target of the dashboard *rendered from the chart* (``helm template``)
over the run with Prometheus' ``query_range`` and draws the panels in the dashboard's layout with
matplotlib. Needs ``prometheus`` (scripts/system_deps.sh), ``helm`` (make tools) and matplotlib (dev
dependencies); no Grafana.

    .venv/bin/python scripts/render_dashboard.py                 # about 2 minutes on 2 cores
    .venv/bin/python scripts/render_dashboard.py --phase_s 10 --out /tmp/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import DEFAULT_MODEL_DIR, start_server  # noqa: E402
from tests.observability.stack import (  # noqa: E402
    PROFILES,
    Identity,
    Prometheus,
    profile_name,
    render,
    scrape_job,
    substitute,
    wait_until,
)

GPU_PANEL = re.compile(r"\bgpu\b", re.IGNORECASE)


def dashboard_from_chart(profile: str = "default") -> tuple[str, dict]:
    """The dashboard JSON as the chart ships it (its ConfigMap), and the InferenceService name."""
    values = next(p for p in PROFILES if profile_name(p) == profile)
    objects = render(values)
    isvc = next(o["metadata"]["name"] for o in objects if o["kind"] == "InferenceService")
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard"))
    return isvc, json.loads(next(iter(cm["data"].values())))


def drive_load(url: str, phase_s: float) -> list[tuple[float, str]]:
    """Phases of load; returns (start time, label) marks for the plot."""
    from bench.loadgen import run_load

    phases = [
        ("steady, 20% bad images", {"concurrency": 2, "bad_ratio": 0.2}),
        ("ramp x4", {"concurrency": 4}),
        ("ramp x8, 2 images/request", {"concurrency": 8, "images_per_request": 2}),
        ("burst x32: 503s", {"concurrency": 32}),
        ("cool down", {"concurrency": 1}),
    ]
    marks = []
    for label, kwargs in phases:
        marks.append((time.time(), label))
        result = run_load(url, duration_s=phase_s, size=(480, 360), timeout_s=30, **kwargs)
        print(f"{label:28s} {result['req_per_s']:6.1f} req/s, errors {result['errors']}", flush=True)
    return marks


def legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "") or json.dumps(labels)


def plot(dashboard: dict, data: dict, start: float, end: float, marks: list, out: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(16, 3.1 * rows), squeeze=False)
    fig.patch.set_facecolor("#111217")
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_facecolor("#181b1f")
        for spine in ax.spines.values():
            spine.set_color("#444")
        ax.tick_params(colors="#ccc", labelsize=7)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_title(f"{panel['title']}  [{unit}]" if unit else panel["title"], color="#eee", fontsize=9, loc="left")
        drawn = 0
        for target in panel["targets"]:
            for series in data.get((panel["id"], target["refId"]), []):
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                if not any(math.isfinite(y) for y in ys):
                    continue
                if unit == "percentunit":
                    ys = [100 * y for y in ys]
                ax.plot(xs, ys, linewidth=1.2, label=legend(target.get("legendFormat", ""), series["metric"]))
                drawn += 1
        for t, _ in marks:
            ax.axvline(t - start, color="#555", linewidth=0.6, linestyle=":")
        ax.set_xlim(0, end - start)
        if drawn:
            ax.legend(fontsize=7, loc="upper left", facecolor="#222", labelcolor="#ddd", edgecolor="#444")
        else:
            text = "no GPU" if GPU_PANEL.search(panel["title"]) else "No data"
            ax.text(0.5, 0.5, text, color="#888", fontsize=16, ha="center", va="center", transform=ax.transAxes)
        ax.grid(color="#2a2d33", linewidth=0.5)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    axes.flat[0].set_xlabel("seconds", color="#aaa", fontsize=7)
    phase_text = "   ".join(f"{t - start:.0f}s: {label}" for t, label in marks)
    fig.suptitle(f"{dashboard['title']} — {subtitle}\nphases: {phase_text}", color="#eee", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor=fig.get_facecolor())
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--phase_s", type=float, default=20.0, help="seconds per load phase (5 phases)")
    p.add_argument("--max_queue_images", type=int, default=16, help="small, so that the burst gets 503s")
    p.add_argument("--rate_interval", default="10s", help="what $__rate_interval stands for")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "dashboard.png")
    args = p.parse_args(argv)

    isvc, dashboard = dashboard_from_chart()
    ident = Identity(isvc)
    with tempfile.TemporaryDirectory(prefix="render-dashboard-") as tmp:
        work = Path(tmp)
        server = start_server(args.model_dir, work, max_queue_images=args.max_queue_images, log_format="json")
        prometheus = Prometheus(work / "prometheus", [scrape_job("predictor", server.port, ident.labels())])
        try:
            prometheus.start().wait_ready()
            wait_until(lambda: prometheus.query("up == 1"), 30, "the first scrape")
            start = time.time()
            marks = drive_load(server.url, args.phase_s)
            time.sleep(3)  # let the last scrapes land: this only pads the plot's right edge
            end = time.time()
            data = {}
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    expr = substitute(target["expr"], isvc, rate_interval=args.rate_interval)
                    data[(panel["id"], target["refId"])] = prometheus.query_range(expr, start, end, 1.0)
            info = server.client.get(f"/v2/models/{server.model_name}").json()
        finally:
            prometheus.stop()
            server.stop()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"{info.get('name', 'classifier')} (EfficientNet-Lite0, CPU) under bench.loadgen, {when}"
    plot(dashboard, data, start, end, marks, args.out, subtitle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
