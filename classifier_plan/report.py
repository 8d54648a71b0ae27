"""``report.md``, ``timeline.csv`` and ``summary.json`` of one plan."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from classifier_plan.assumptions import Assumptions
from classifier_plan.chart import ChartPlan
from classifier_plan.results import COLUMNS
from classifier_plan.setup import SimSetup
from classifier_plan.units import fmt_duration
from classifier_plan.values import ValueCheck

NOT_MODELLED_ALWAYS = (
    "canary traffic splits (all traffic is simulated on the stable predictor; a Standard-mode canary's fixed "
    "replicas are not counted)",
    "the Redis queue worker (queue mode) and its KEDA ScaledObject",
    "Knative's queue-proxy limit (containerConcurrency > 0) on requests routed straight to a pod, and "
    "target-burst-capacity keeping the activator in the path once it holds no request (the activator's "
    "per-pod limit is simulated while it holds requests: during and after a wake from zero)",
    "memory-based HPA metrics (memory does not follow load in this model)",
    "Karpenter consolidation of under-utilised nodes that still run pods (only empty nodes are removed), drift and "
    "expireAfter",
    "CPU/memory requests and limits do not change a pod's speed: the capacity profile's pod is simulated as measured",
)


def write_timeline(table: np.ndarray, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for row in table:
            w.writerow([_cell(c, v) for c, v in zip(COLUMNS, row, strict=True)])


def _cell(col: str, v: float) -> str:
    if math.isnan(v):
        return ""
    if col in ("desired_replicas", "ready_replicas", "starting_replicas", "nodes_spot", "nodes_on_demand"):
        return f"{v:g}" if v != int(v) else str(int(v))
    return f"{v:.4f}" if col == "cost_usd" else f"{v:.3f}"


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2, default=float) + "\n")


def scale_events(table: np.ndarray, limit: int = 25) -> list[str]:
    """Lines like ``00:05:02  desired 1 -> 4`` when the desired count changes, and ready milestones."""
    c = {name: i for i, name in enumerate(COLUMNS)}
    out: list[str] = []
    prev_d = prev_r = None
    for row in table:
        d, r = int(row[c["desired_replicas"]]), int(row[c["ready_replicas"]])
        stamp = _clock(row[c["t_s"]])
        if prev_d is not None and d != prev_d:
            out.append(f"{stamp}  desired {prev_d} -> {d} (ready {r})")
        if prev_r is not None and r != prev_r:
            out.append(f"{stamp}  ready {prev_r} -> {r}")
        prev_d, prev_r = d, r
    if len(out) > limit:
        out = [*out[: limit - 1], f"... {len(out) - limit + 1} more changes in timeline.csv"]
    return out


def _clock(t: float) -> str:
    h, rem = divmod(int(t), 3600)
    return f"{h:02d}:{rem // 60:02d}:{rem % 60:02d}"


def _plan_lines(plan: ChartPlan) -> list[str]:
    p, st = plan.pod, plan.settings
    lines = [
        f"- mode **{plan.mode}**, autoscaler **{plan.autoscaler}**, replicas {plan.min_replicas}..{plan.max_replicas}",
        f"- predictor: max_batch_size {st.max_batch_size}, max_batch_delay_ms {st.max_batch_delay_ms:g}, "
        f"max_queue_images {st.max_queue_images}, max_queue_wait_ms {st.max_queue_wait_ms}, "
        f"request_timeout_ms {st.request_timeout_ms}",
        f"- pod: {p.gpus} GPU, {p.cpu_request:g} CPU, {p.memory_request / 2**30:.1f} GiB requested; model from "
        f"`{p.storage_uri or 'the image'}`; grace {p.termination_grace_s:g} s",
    ]
    if p.gpu_resource and not p.gpu_resource.endswith("/gpu"):
        lines.append(
            f"- GPU share `{p.gpu_resource}`: simulated as a whole GPU per pod (MIG slices and time-sliced "
            "replicas per node are not modelled, so node counts and cost are upper bounds)"
        )
    if plan.knative:
        k = plan.knative
        lines.append(
            f"- KPA: metric {k.metric}, target {k.target}, containerConcurrency {k.container_concurrency}, "
            f"scale-down-delay {fmt_duration(k.scale_down_delay_s)}, revision timeout {k.revision_timeout_s:g} s, "
            f"activation-scale {k.activation_scale or 'none'}, initial-scale "
            f"{'the cluster default' if k.initial_scale is None else k.initial_scale}"
        )
    for m in plan.hpa_metrics:
        what = f"{m.aggregation}({m.signal})" if m.query else m.signal
        lines.append(
            f"- HPA metric {what}, target {m.target:g} ({m.target_type})" + (f": `{m.query}`" if m.query else "")
        )
    lines += _keda_lines(plan)
    if plan.nodepool:
        n = plan.nodepool
        lines.append(
            f"- NodePool: capacity types {list(n.capacity_types)}, families {list(n.families)}, limits "
            f"{dict(n.limits)}, consolidateAfter {fmt_duration(n.consolidate_after_s)}"
        )
    return lines


def _keda_lines(plan: ChartPlan) -> list[str]:
    """KEDA's part: the HTTP add-on's interceptor and scaler, or the ScaledObject KServe makes."""
    if plan.http_addon:
        h = plan.http_addon
        return [
            f"- KEDA HTTP add-on: {h.metric} at the interceptor, target {h.target:g} per pod"
            + (f" over {fmt_duration(h.window_s)}" if h.metric == "requestRate" else "")
            + f"; the interceptor holds requests up to {h.condition_wait_s:g} s for a ready pod, then sends them all "
            f"at once; KEDA wakes the Deployment as soon as the metric is above 0 and takes it to zero "
            f"{h.scaledown_s:g} s after"
        ]
    if plan.keda:
        return [f"- KEDA: polling {plan.keda.polling_s:g} s, cooldown {plan.keda.cooldown_s:g} s (KServe sets neither)"]
    return []


def _assumption_rows(a: Assumptions) -> list[str]:
    rows = ["| assumption | value | meaning |", "|---|---|---|"]
    for name, field in Assumptions.model_fields.items():
        rows.append(f"| `{name}` | {getattr(a, name)} | {field.description or ''} |")
    return rows


def _totals(s: dict[str, Any]) -> list[str]:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    return [
        "| | |",
        "|---|---|",
        f"| requests offered | {s['requests_offered']:,} |",
        f"| served / refused (503) / timed out (504) / failed | {s['requests_served']:,} / {s['requests_refused']:,} / "
        f"{s['requests_timed_out']:,} / {s['requests_failed']:,} |",
        f"| latency p50 / p95 / p99 (answered) | {s['p50_ms']} / {s['p95_ms']} / {s['p99_ms']} ms |",
        f"| SLO: answered within {s['slo_p95_ms']:g} ms | {pct(s['slo_attainment'])} of offered "
        f"({'met' if s['slo_met'] else 'NOT met'}: needs 95 %) |",
        f"| peak ready replicas / nodes | {s['peak_ready_replicas']} / {s['peak_nodes']} |",
        f"| longest wait for a first pod after idle | {s['time_to_first_ready_s_after_idle']} s "
        f"({s['wakes_from_zero']} wake-ups) |",
        f"| waiting for a pod: timed out / refused after being held / refused (nothing held them) | "
        f"{s['requests_timed_out_waking']:,} / {s['requests_refused_waking']:,} / {s['requests_refused_no_pods']:,} |",
        f"| cost of this run | ${s['cost_usd']:.2f} (spot range ${s['cost_usd_range'][0]:.2f}-"
        f"${s['cost_usd_range'][1]:.2f}) |",
        f"| per month if this {fmt_duration(s['duration_s'])} scenario repeated back to back | "
        f"${s['cost_per_month_if_repeated_usd']:,.2f} |",
        f"| baseline: {s['baseline']['pods']} pods for the peak, {s['baseline']['nodes']} x "
        f"{s['baseline']['instance_type']} on-demand 24/7 | "
        f"${s['baseline_cost_per_month_usd']:,.2f} / month |",
        f"| savings vs baseline | {pct(s['savings_ratio'])} |",
    ]


def _cost_arithmetic(s: dict[str, Any], hours_per_month: float) -> list[str]:
    hours = s["duration_s"] / 3600.0
    b = s["baseline"]
    lines = [
        "- node hours: " + ", ".join(f"{k} {v:g} h" for k, v in s.get("node_hours", {}).items()),
        f"- per month if repeated (this run's cost as if the scenario ran back to back for {hours_per_month:g} h; "
        f"meaningful only where the traffic is a typical day or week, not a one-off peak) = ${s['cost_usd']:.4f} x "
        f"{hours_per_month:g} h / {hours:.4g} h = ${s['cost_per_month_if_repeated_usd']:,.2f}",
        f"- baseline = {b['nodes']} x ${b['usd_per_h']}/h x {hours_per_month:g} h = ${b['cost_per_month_usd']:,.2f}",
    ]
    if s["savings_ratio"] is not None:
        lines.append(
            f"- savings = 1 - {s['cost_per_month_if_repeated_usd']:,.2f} / {b['cost_per_month_usd']:,.2f} = "
            f"{100 * s['savings_ratio']:.1f} %"
        )
    return lines


def wake_warnings(s: dict[str, Any], plan: ChartPlan) -> list[str]:
    """Loud lines for requests lost while no pod was ready (a wake from zero that took too long, a burst its
    holder could not pass on, or nothing that holds requests at zero)."""
    out = []
    holder = "the interceptor" if plan.http_addon else "the activator"
    if s["requests_timed_out_waking"]:
        if plan.http_addon:
            timeout = f"the HTTPScaledObject's conditionWait {plan.http_addon.condition_wait_s:g} s"
        else:
            timeout = f"revision timeout {plan.knative.revision_timeout_s if plan.knative else math.nan:g} s"
        out.append(
            f"**WAKE TIMEOUTS: {s['requests_timed_out_waking']:,} requests timed out at {holder} while the "
            f"predictor woke from zero** ({timeout}; the longest wake took "
            f"{s['time_to_first_ready_s_after_idle']} s: node launch, image pull, model load and cold start). "
            "Raise `autoscaling.coldStartSeconds` above the cold start (the chart sizes the holder's timeout "
            "from it), keep `autoscaling.minReplicas` >= 1, or keep a node warm (a longer `consolidateAfter`)."
        )
    over = s.get("wake_overshoot") or {}
    if over.get("wakes"):
        out.append(
            f"**WAKE OVERSHOOT: {over['wakes']} of {over['of_wakes']} wakes from zero asked for up to "
            f"{over['pods_asked_max']} pods ({over['nodes_asked_max']} nodes) where the load after the wake needs "
            f"{over['pods_needed_max']}: {over['extra_node_hours']:g} extra node-hours, "
            f"${over['extra_cost_usd']:.2f} of this run (${over['extra_cost_per_month_if_repeated_usd']:,.2f}/month "
            'if repeated)** (each wake: "Wakes from zero" below). ' + _overshoot_cause(plan)
        )
    if s.get("requests_refused_waking"):
        why = (
            "the interceptor sends every held request at once when the first pod is ready, and that pod's queue "
            "(`settings.max_queue_images`, and what drains within `settings.max_queue_wait_ms`) refuses what does "
            "not fit; Knative's activator would pace them by "
            "containerConcurrency"
            if plan.http_addon
            else "beyond 10,000 waiting requests the activator answers 503 at once, and a pod's queue refuses "
            "what its containerConcurrency lets through but its queue (`settings.max_queue_images`, and what drains "
            "within `settings.max_queue_wait_ms`) cannot hold"
        )
        out.append(
            f"**REFUSED ON WAKE: {s['requests_refused_waking']:,} requests held during a wake were refused (503)**: "
            f"{why}. Keep `autoscaling.minReplicas` >= 1 for traffic that arrives in bursts after idle periods, "
            "or shorten the wake."
        )
    if s.get("scaling_blind"):
        seen = "; ".join(
            f"{b['signal']}: at most {b['most_per_pod']:g} per pod, target {b['target_per_pod']:g}"
            for b in s["scaling_blind"]
        )
        out.append(
            f"**SCALING BLIND: {s['requests_refused']:,} requests were refused (503), and the autoscaler could not "
            f"see it** ({seen}): a pod admits only what drains within `settings.max_queue_wait_ms`, so the signal "
            "it is scaled on never exceeds its target and an overload is refused instead of scaled out. Set the "
            "target below what a pod admits, or scale on what grows with the offered load (`metric: rps`, CPU or "
            "GPU utilisation, the HTTP add-on's `requestRate`)."
        )
    if s["requests_refused_no_pods"]:
        out.append(
            f"**REFUSED AT ZERO: {s['requests_refused_no_pods']:,} requests were refused (503) while no pod was "
            "ready**: in Standard mode nothing holds requests or wakes the Deployment from zero (its metrics come "
            "from the pods). Use Knative mode or the KEDA HTTP add-on (`autoscaling.standard.autoscaler: "
            "httpAddon`) for scale to zero, or `autoscaling.minReplicas` >= 1."
        )
    return out


def _overshoot_cause(plan: ChartPlan) -> str:
    """Why a wake asks for more than its load, and what caps it, for this chart's KPA settings."""
    kn = plan.knative
    if kn is None:
        return "Cap it with `autoscaling.maxReplicas`."
    if kn.activation_scale and kn.activation_scale > 1:
        floor = f" `activation-scale` {kn.activation_scale} keeps at least that many pods while traffic lasts."
    else:
        floor = ""
    if kn.metric == "rps":
        return "Cap it with `autoscaling.maxReplicas` (Knative's max-scale)." + floor
    return (
        "The requests the activator holds during the cold start count as in-flight concurrency, so the KPA "
        "panics and asks for ceil(held / target) pods, up to `autoscaling.maxReplicas` (Knative's max-scale), "
        "and panic mode and `scale-down-delay` keep them. A lower `maxReplicas`, `autoscaling.knative.metric: rps` "
        "(each held request counts once), or `autoscaling.minReplicas: 1` (no wake) stop it; `--recommend` "
        "tries them." + floor
    )


def _wake_rows(s: dict[str, Any]) -> list[str]:
    """The table of wakes from zero (``summary.json``'s ``wakes``)."""
    wakes = s.get("wakes") or []
    if not wakes:
        return []
    rows = [
        "## Wakes from zero",
        "",
        "Pods and nodes each wake asked for against what the offered load after it needs (pods for its peak at "
        "80 % of a pod's capacity); extra = node-time beyond that until the nodes were back down to it.",
        "",
        "| at | first pod ready after | pods asked / needed | nodes asked / needed | extra node-hours | "
        "extra cost | timed out waiting |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for w in wakes:
        flag = " **overshoot**" if w["pods_asked"] > w["pods_needed"] else ""
        ready = "never" if w["first_ready_after_s"] is None else f"{w['first_ready_after_s']:g} s"
        rows.append(
            f"| {_clock(w['at_s'])} | {ready} | {w['pods_asked']} / {w['pods_needed']}{flag} | "
            f"{w['nodes_asked']} / {w['nodes_needed']} | {w['extra_node_hours']:g} | ${w['extra_cost_usd']:.2f} | "
            f"{w['timed_out']:,} |"
        )
    total = (s.get("wake_overshoot") or {}).get("of_wakes", len(wakes))
    if total > len(wakes):
        rows.append(f"| ... {total - len(wakes)} more (the totals above count them) | | | | | | |")
    return [*rows, ""]


def write_report(
    path: Path,
    ctx: dict[str, Any],
    setup: SimSetup,
    summary: dict[str, Any],
    table: np.ndarray,
    checks: list[ValueCheck],
    plots: list[str],
    recommendation: list[str],
) -> None:
    """The human-readable report."""
    plan = setup.plan
    lines = [
        f"# Capacity plan: {ctx['traffic_name']}",
        "",
        f"`{ctx['command']}`",
        "",
        f"- traffic: `{ctx['traffic']}` ({ctx['traffic_description']}), {fmt_duration(summary['duration_s'])}",
        f"- values: {', '.join(f'`{v}`' for v in ctx['values']) or '(chart defaults)'}; chart `{ctx['chart']}`",
        f"- capacity: `{ctx['capacity']}` ({setup.profile.label}); one pod serves "
        f"{ctx['pod_capacity']:.1f} img/s at batches of {setup.batch_cap} (max_batch_size "
        f"{plan.settings.max_batch_size}; a pass within an eighth of the queue-wait budget) and admits up to "
        f"{setup.queue_limit_images():.0f} images (the queue-wait budget at that rate, at most max_queue_images)",
        f"- prices: {setup.prices.source}, {setup.prices.region}, {setup.prices.date}",
        f"- engine: {summary['engine']}"
        + (f", step {summary.get('fluid_step_s')} s" if summary["engine"] == "fluid" else ""),
        "",
        "## Result",
        "",
        *[f"{w}\n" for w in wake_warnings(summary, plan)],
        *(
            [f"Flags (`summary.json` `flags`): {', '.join(f'`{f}`' for f in summary['flags'])}", ""]
            if summary.get("flags")
            else []
        ),
        *_totals(summary),
        "",
        *_wake_rows(summary),
        "## What the chart deploys (read from `helm template`)",
        "",
        *_plan_lines(plan),
        "",
        "## What happened",
        "",
        "```",
        *(scale_events(table) or ["no scaling"]),
        "```",
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
        "## Cost arithmetic",
        "",
        *_cost_arithmetic(summary, setup.prices.hours_per_month),
        "",
    ]
    if recommendation:
        lines += ["## Recommendation (`--recommend`)", "", *recommendation, ""]
    lines += ["## Notes", "", *([f"- {n}" for n in setup.notes] or ["- none"]), ""]
    lines += ["## Values not modelled", ""]
    nm = [c for c in checks if c.status == "not modelled"]
    lines += [f"- `{c.key}` = `{c.value}`: changes the manifests, not what is simulated" for c in nm] or [
        "- none of your values"
    ]
    lines += [f"- {u}" for u in plan.unmodelled]
    if plan.canary:
        lines.append(f"- canary {dict(plan.canary)}: all traffic simulated on the stable predictor")
    lines += ["", "Never simulated:", "", *[f"- {n}" for n in NOT_MODELLED_ALWAYS], ""]
    modelled = [c for c in checks if c.status != "not modelled"]
    if modelled:
        lines += ["Your other values: " + ", ".join(f"`{c.key}` ({c.status})" for c in modelled), ""]
    lines += ["## Assumptions", "", *_assumption_rows(setup.assumptions), ""]
    lines += ["## Pod model", "", "```json", json.dumps(setup.pod_model.model_dump(), indent=1), "```", ""]
    lines += ["Chart plan as read: `" + json.dumps(asdict(plan), default=str)[:3000] + "`", ""]
    path.write_text("\n".join(lines))
