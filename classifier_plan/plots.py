"""PNG plots of a timeline (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifier_plan.results import COLUMNS

PLOTS = (  # overview.png (traffic, replicas and nodes together) comes first
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
        from classifier_plan.errors import PlanInputError

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


def _smooth(v: np.ndarray, points: int = 600) -> np.ndarray:
    """A moving average over ``len(v) / points`` rows (per-second Poisson counts are noise at a day's scale)."""
    w = max(1, len(v) // points)
    if w == 1:
        return v
    return np.convolve(np.nan_to_num(v), np.ones(w) / w, mode="same")


def _overview(c: dict[str, np.ndarray], x: np.ndarray, out: Path, unit: str) -> str:
    """``overview.png``: traffic, replicas and nodes on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 6.4), dpi=100, sharex=True)
    a0, a1, a2 = axes
    a0.plot(x, _smooth(c["offered_rps"]) * 60, lw=1, label="offered")
    a0.plot(x, _smooth(c["served_rps"]) * 60, lw=1, label="served")
    a0.plot(x, _smooth(c["refused_rps"] + c["timed_out_rps"]) * 60, lw=1, label="refused or timed out")
    a0.set_ylabel("requests / min")
    a1.plot(x, c["desired_replicas"], drawstyle="steps-post", label="desired")
    a1.plot(x, c["ready_replicas"], drawstyle="steps-post", label="ready")
    a1.set_ylabel("pods")
    a2.stackplot(x, c["nodes_spot"], c["nodes_on_demand"], labels=["spot", "on-demand"], alpha=0.8, step="post")
    a2.set_ylabel("nodes")
    a2.set_xlabel(unit)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "overview.png")
    plt.close(fig)
    return "overview.png"


def write_plots(table: np.ndarray, out: Path, slo_ms: float) -> list[str]:
    """Write :data:`PLOTS` into ``out``; returns the file names."""
    c = {name: table[:, i] for i, name in enumerate(COLUMNS)}
    t = c["t_s"] / 3600.0
    x = t if len(t) and t[-1] > 2 else c["t_s"] / 60.0
    series = {
        "traffic.png": [("offered", _smooth(c["offered_rps"])), ("served", _smooth(c["served_rps"]))],
        "replicas.png": [
            ("desired", c["desired_replicas"]),
            ("ready", c["ready_replicas"]),
            ("starting", c["starting_replicas"]),
        ],
        "nodes.png": [("spot", c["nodes_spot"]), ("on-demand", c["nodes_on_demand"])],
        "queue.png": [("images queued", c["queue_images"])],
        "latency.png": [("p95", c["p95_ms"])],
        "refused.png": [("refused", _smooth(c["refused_rps"])), ("timed out", _smooth(c["timed_out_rps"]))],
        "cost.png": [("cost", c["cost_usd"])],
    }
    names = [_overview(c, x, out, "hours" if len(t) and t[-1] > 2 else "minutes")]
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
