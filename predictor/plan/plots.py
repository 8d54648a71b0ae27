"""PNG plots of a timeline (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from predictor.plan.results import COLUMNS

PLOTS = (
    ("traffic.png", "Traffic: offered and served (req/s)"),
    ("replicas.png", "Replicas: desired, ready, starting"),
    ("nodes.png", "Nodes by capacity type"),
    ("queue.png", "Images queued (all pods and the activator)"),
    ("latency.png", "p95 latency of answered requests (ms)"),
    ("refused.png", "Refused (503) and timed out (504) requests (req/s)"),
    ("cost.png", "Cost so far (USD)"),
)

INSTALL_HINT = (
    "plots need matplotlib: pip install 'image-classifier[plan]' (or pip install matplotlib), or pass --no-plots"
)


def require_matplotlib() -> None:
    """Fail early, before simulating, when plots are wanted and matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        from predictor.plan.errors import PlanInputError

        raise PlanInputError("--plots", "", INSTALL_HINT) from e


def _axes(title: str, t_h: np.ndarray):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("hours" if t_h[-1] > 2 else "minutes")
    ax.grid(alpha=0.3)
    return plt, fig, ax


def write_plots(table: np.ndarray, out: Path, slo_ms: float) -> list[str]:
    """Write :data:`PLOTS` into ``out``; returns the file names."""
    c = {name: table[:, i] for i, name in enumerate(COLUMNS)}
    t = c["t_s"] / 3600.0
    x = t if len(t) and t[-1] > 2 else c["t_s"] / 60.0
    series = {
        "traffic.png": [("offered", c["offered_rps"]), ("served", c["served_rps"])],
        "replicas.png": [
            ("desired", c["desired_replicas"]),
            ("ready", c["ready_replicas"]),
            ("starting", c["starting_replicas"]),
        ],
        "nodes.png": [("spot", c["nodes_spot"]), ("on-demand", c["nodes_on_demand"])],
        "queue.png": [("images queued", c["queue_images"])],
        "latency.png": [("p95", c["p95_ms"])],
        "refused.png": [("refused", c["refused_rps"]), ("timed out", c["timed_out_rps"])],
        "cost.png": [("cost", c["cost_usd"])],
    }
    names = []
    for name, title in PLOTS:
        plt, fig, ax = _axes(title, t if len(t) else np.zeros(1))
        if name == "nodes.png":
            ax.stackplot(x, *[v for _, v in series[name]], labels=[k for k, _ in series[name]], alpha=0.8)
        else:
            for label, v in series[name]:
                ax.plot(x, v, label=label, lw=1.2, drawstyle="steps-post" if "replicas" in name else "default")
        if name == "latency.png":
            ax.axhline(slo_ms, color="red", ls="--", lw=1, label=f"SLO {slo_ms:g} ms")
            ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        names.append(name)
    return names
