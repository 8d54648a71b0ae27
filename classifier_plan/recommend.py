"""``--recommend``: the cheapest values (of a few autoscaling knobs) whose simulation meets the SLO.

A coordinate search, two rounds: each knob in turn takes each of its candidates (the others held), every
candidate is rendered with the real chart (so it is a valid values file) and simulated with the same
engine, traffic, capacity and assumptions; a candidate is kept when it meets the SLO (95 % of offered
requests answered within it) and costs less per month. The winner is written as an override file
(``recommended-values.yaml``, only the keys that changed) and its summary beside it; simulating the
user's values plus that file again gives the same result (the simulation is deterministic for a seed).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

import yaml

from classifier_plan.assumptions import Assumptions
from classifier_plan.chart import parse_objects, read_plan, render
from classifier_plan.errors import PlanInputError
from classifier_plan.setup import SimSetup
from classifier_plan.values import deep_merge, write_values

Say = Callable[[str], None]


_MISSING = object()


def _lookup(values: dict[str, Any], key: str) -> Any:
    """The value at dotted ``key``, or ``_MISSING``."""
    node: Any = values
    for k in key.split("."):
        if not isinstance(node, dict) or k not in node:
            return _MISSING
        node = node[k]
    return node


def _get(values: dict[str, Any], key: str) -> Any:
    value = _lookup(values, key)
    return None if value is _MISSING else value


def _nested(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for k in parts[:-1]:
        node = node.setdefault(k, {})
    node[parts[-1]] = value
    return out


def _has(values: dict[str, Any], key: str) -> bool:
    """Whether ``key`` (dotted) is a value of ``values``, null included."""
    return _lookup(values, key) is not _MISSING


def _max_replicas(eff: dict[str, Any], needed: int, wake_needed: int) -> list[int]:
    """maxReplicas (Knative's max-scale) candidates: multiples of the peak's pods, the current value, and what
    the load after a wake from zero needs (a cap that stops the wake's panic overshoot)."""
    cur_max = int(_get(eff, "autoscaling.maxReplicas") or 1)
    return sorted(
        {max(1, needed), math.ceil(1.25 * needed), math.ceil(1.5 * needed), 2 * needed, cur_max}
        | ({wake_needed, wake_needed + 1} if wake_needed else set())
    )


def _knative_knobs(eff: dict[str, Any], needed: int, a: Assumptions) -> tuple[dict[str, list[Any]], list[str]]:
    """Knative-only candidates (target, metric, activation-scale, initial-scale) and what was not tried."""
    out: dict[str, list[Any]] = {}
    cur = _get(eff, "autoscaling.knative.target")
    out["autoscaling.knative.target"] = sorted({8, 16, 32, 64} | ({cur} if cur else set()))
    # rps counts each request held during a wake once; concurrency counts it for the whole cold start.
    out["autoscaling.knative.metric"] = ["concurrency", "rps"]
    # activation-scale: the least pods while there is traffic (Knative accepts 2 and up); null removes it.
    out["autoscaling.knative.activationScale"] = [None, *sorted({2, needed} - {0, 1})]
    notes: list[str] = []
    initial = [None] if (_get(eff, "autoscaling.knative.initialScale") or 0) > 1 else []
    if a.knative_allow_zero_initial_scale:
        initial.append(0)
    elif _get(eff, "autoscaling.minReplicas") == 0:
        notes.append(
            "`autoscaling.knative.initialScale: 0` (deploy without starting a pod) not tried: Knative honours it "
            'only with `allow-zero-initial-scale: "true"` in its config-autoscaler (pass `--assume '
            "knative_allow_zero_initial_scale=true` where your cluster has it)."
        )
    if initial:
        out["autoscaling.knative.initialScale"] = initial
    return out, notes


def knobs(
    chart_defaults: dict[str, Any],
    user: dict[str, Any],
    plan: Any,
    needed: int,
    assumptions: Assumptions | None = None,
    wake_needed: int = 0,
) -> tuple[dict[str, list[Any]], list[str]]:
    """Candidate values per chart key, for the keys this chart has (checked against its values.yaml), and
    lines on candidates left out (and why)."""
    eff = deep_merge(chart_defaults, user)
    mins = sorted({1, 2, max(1, math.ceil(needed / 4))} | ({0} if plan.mode == "knative" else set()))
    out: dict[str, list[Any]] = {
        "autoscaling.maxReplicas": _max_replicas(eff, needed, wake_needed),
        "autoscaling.minReplicas": mins,
    }
    notes: list[str] = []
    if plan.mode == "knative":
        kn, notes = _knative_knobs(eff, needed, assumptions or Assumptions())
        out.update(kn)
    elif plan.autoscaler == "keda":
        cur = _get(eff, "autoscaling.standard.keda.queueDepthTarget")
        out["autoscaling.standard.keda.queueDepthTarget"] = sorted({4, 8, 16, 32} | ({cur} if cur else set()))
    elif plan.autoscaler == "hpa":
        cur = _get(eff, "autoscaling.standard.hpa.targetUtilization")
        out["autoscaling.standard.hpa.targetUtilization"] = sorted({40, 50, 60, 70, 80} | ({cur} if cur else set()))
    if _get(eff, "karpenter.nodePool.enabled"):
        out["karpenter.nodePool.capacityTypes"] = [["spot", "on-demand"], ["on-demand"]]
    return {k: v for k, v in out.items() if _has(chart_defaults, k)}, notes


class _Search:
    def __init__(
        self, args: argparse.Namespace, inp: dict[str, Any], engine: str, step: float, say: Say | None = None
    ) -> None:
        self.args, self.inp, self.engine, self.step, self.say = args, inp, engine, step, say
        self.tried: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        self.memo: dict[str, dict[str, Any] | None] = {}
        self.n = 0

    def evaluate(self, overrides: dict[str, Any]) -> dict[str, Any] | None:
        """The summary of the user's values plus ``overrides`` (None when they do not render); memoised."""
        key = json.dumps(overrides, sort_keys=True)
        if key not in self.memo:
            self.memo[key] = self._simulate(overrides)
        return self.memo[key]

    def _simulate(self, overrides: dict[str, Any]) -> dict[str, Any] | None:
        from classifier_plan import simulate

        override: dict[str, Any] = {}
        for k, v in overrides.items():
            override = deep_merge(override, _nested(k, v))
        self.n += 1
        f = write_values(override, self.inp["tmp"], f"candidate-{self.n}.yaml")
        try:
            plan = read_plan(parse_objects(render(self.inp["chart"], [*self.args.values, f], self.args.release)))
            setup = SimSetup(plan, self.inp["profile"], self.inp["prices"], self.inp["assumptions"])
        except PlanInputError:
            self.tried.append((overrides, None))
            self._tell(overrides, "does not render")
            return None
        _, summary = simulate.run(setup, self.inp["traffic"], self.args.slo_p95_ms, self.engine, self.step)  # type: ignore[arg-type]
        self.tried.append((overrides, summary))
        met = "meets" if summary["slo_met"] else "misses"
        monthly = summary["cost_per_month_if_repeated_usd"]
        attainment = 100 * summary["slo_attainment"]
        self._tell(overrides, f"{met} the SLO ({attainment:.2f} %), ${monthly:,.2f}/month if repeated")
        return summary

    def _tell(self, overrides: dict[str, Any], outcome: str) -> None:
        if self.say is not None:
            shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
            self.say(f"recommend: candidate {self.n} ({shown}): {outcome}")


def _better(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether summary ``a`` beats ``b``: meeting the SLO first, then cheaper, then higher attainment."""
    if a is None:
        return False
    if b is None:
        return True
    if a["slo_met"] != b["slo_met"]:
        return a["slo_met"]
    if a["slo_met"]:
        return a["cost_per_month_if_repeated_usd"] < b["cost_per_month_if_repeated_usd"] - 1e-9
    return a["slo_attainment"] > b["slo_attainment"] + 1e-9


def _needed_pods(inp: dict[str, Any]) -> int:
    """Pods for the traffic's peak at 80 % of a pod's capacity (the baseline's rule)."""
    setup = SimSetup(inp["plan"], inp["profile"], inp["prices"], inp["assumptions"])
    traffic = inp["traffic"]
    peak_img = float(traffic.per_second().max()) * traffic.mean_images
    return max(1, math.ceil(peak_img / (0.8 * setup.capacity(traffic.mean_images))))


def _wake(s: dict[str, Any]) -> str:
    """A summary's wake overshoot, for the table: ``asked / needed pods (+$extra)`` or ``none``."""
    over = s.get("wake_overshoot") or {}
    if not over.get("wakes"):
        return "none"
    return f"{over['pods_asked_max']} / {over['pods_needed_max']} pods (+${over['extra_cost_usd']:.2f})"


def _table(current: dict[str, Any], tried: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> list[str]:
    """Every candidate's attainment, cost and wake overshoot, yours first."""
    lines = [
        "| values | SLO attainment | met | $/month if repeated | wake overshoot (asked / needed) |",
        "|---|---:|---|---:|---|",
    ]
    for ov, s in [({}, current), *tried]:
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in ov.items()) or "(yours)"
        if s is None:
            lines.append(f"| {shown} | does not render | | | |")
        else:
            lines.append(
                f"| {shown} | {100 * s['slo_attainment']:.2f} % | {s['slo_met']} | "
                f"{s['cost_per_month_if_repeated_usd']:,.2f} | {_wake(s)} |"
            )
    return lines


def _files(args: argparse.Namespace, name: str, best: dict[str, Any], summary: dict[str, Any]) -> dict[str, str]:
    """``recommended-values.yaml`` (only the keys that change; a null removes a key) and its summary."""
    override: dict[str, Any] = {}
    for k, v in best.items():
        override = deep_merge(override, _nested(k, v))
    header = (
        f"# Recommended by `python -m predictor plan --recommend` for {name} at p95 <= {args.slo_p95_ms:g} ms:\n"
        f"# use after your values: helm upgrade ... -f <your values> -f recommended-values.yaml\n"
    )
    return {
        "recommended-values.yaml": header + yaml.safe_dump(override, sort_keys=False),
        "recommended-summary.json": json.dumps(summary, indent=2, default=float) + "\n",
    }


def _verdict(best: dict[str, Any], summary: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The recommendation's closing lines."""
    if best and summary["slo_met"]:
        wake = ""
        if (current.get("wake_overshoot") or {}).get("wakes"):
            wake = f" Wake overshoot: yours {_wake(current)}, recommended {_wake(summary)}."
        return [
            "",
            "**Recommended** (`recommended-values.yaml`): "
            + ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in best.items())
            + f" -> SLO attainment {100 * summary['slo_attainment']:.2f} %, "
            f"${summary['cost_per_month_if_repeated_usd']:,.2f}/month if repeated.{wake}",
        ]
    if current["slo_met"]:
        return ["", "Your values already meet the SLO and no candidate was cheaper: nothing to change."]
    return [
        "",
        "**No candidate met the SLO**: more capacity per pod (a faster GPU, larger batches) or a larger "
        "maxReplicas range is needed.",
    ]


def recommend(
    args: argparse.Namespace,
    inp: dict[str, Any],
    current: dict[str, Any],
    engine: str,
    step: float,
    say: Say | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Search; returns report lines and the files to add to ``--out`` (none when nothing beats yours).

    ``say`` gets one line per simulated candidate (progress on stderr).
    """
    chart_defaults = yaml.safe_load((inp["chart"] / "values.yaml").read_text()) or {}
    wake_needed = int((current.get("wake_overshoot") or {}).get("pods_needed_max") or 0)
    space, left_out = knobs(
        chart_defaults, inp["values"], inp["plan"], _needed_pods(inp), inp["assumptions"], wake_needed
    )
    effective = deep_merge(chart_defaults, inp["values"])
    search = _Search(args, inp, engine, step, say)
    best: dict[str, Any] = {}
    best_summary: dict[str, Any] = current
    for _round in range(2):
        for key, candidates in space.items():
            for value in candidates:
                # Keys back at the value in force are dropped: the user's own values are not simulated again.
                trial = {k: v for k, v in {**best, key: value}.items() if v != _get(effective, k)}
                if trial == best or not trial:
                    continue
                s = search.evaluate(trial)
                if _better(s, best_summary):
                    best, best_summary = trial, s  # type: ignore[assignment]
    lines = [
        f"Searched {len(search.tried)} candidates ({engine} engine), knobs: " + ", ".join(f"`{k}`" for k in space),
        *[f"\n{n}" for n in left_out],
        "",
        *_table(current, search.tried),
        *_verdict(best, best_summary, current),
    ]
    files = _files(args, inp["traffic"].name, best, best_summary) if best and best_summary["slo_met"] else {}
    return lines, files
