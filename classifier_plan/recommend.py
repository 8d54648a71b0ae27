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

from classifier_plan.chart import parse_objects, read_plan, render
from classifier_plan.errors import PlanInputError
from classifier_plan.setup import SimSetup
from classifier_plan.values import deep_merge, write_values

Say = Callable[[str], None]


def _get(values: dict[str, Any], key: str) -> Any:
    node: Any = values
    for k in key.split("."):
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def _nested(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for k in parts[:-1]:
        node = node.setdefault(k, {})
    node[parts[-1]] = value
    return out


def knobs(chart_defaults: dict[str, Any], user: dict[str, Any], plan: Any, needed: int) -> dict[str, list[Any]]:
    """Candidate values per chart key, for the keys this chart has (checked against its values.yaml)."""
    eff = deep_merge(chart_defaults, user)
    cur_max = int(_get(eff, "autoscaling.maxReplicas") or 1)
    maxes = sorted({max(1, needed), math.ceil(1.25 * needed), math.ceil(1.5 * needed), 2 * needed, cur_max})
    mins = sorted({1, 2, max(1, math.ceil(needed / 4))} | ({0} if plan.mode == "knative" else set()))
    out: dict[str, list[Any]] = {"autoscaling.maxReplicas": maxes, "autoscaling.minReplicas": mins}
    if plan.mode == "knative":
        cur = _get(eff, "autoscaling.knative.target")
        out["autoscaling.knative.target"] = sorted({8, 16, 32, 64} | ({cur} if cur else set()))
    elif plan.autoscaler == "keda":
        cur = _get(eff, "autoscaling.standard.keda.queueDepthTarget")
        out["autoscaling.standard.keda.queueDepthTarget"] = sorted({4, 8, 16, 32} | ({cur} if cur else set()))
    elif plan.autoscaler == "hpa":
        cur = _get(eff, "autoscaling.standard.hpa.targetUtilization")
        out["autoscaling.standard.hpa.targetUtilization"] = sorted({40, 50, 60, 70, 80} | ({cur} if cur else set()))
    if _get(eff, "karpenter.nodePool.enabled"):
        out["karpenter.nodePool.capacityTypes"] = [["spot", "on-demand"], ["on-demand"]]
    return {k: v for k, v in out.items() if _get(chart_defaults, k) is not None}


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
    setup = SimSetup(inp["plan"], inp["profile"], inp["prices"], inp["assumptions"])
    st, traffic = inp["plan"].settings, inp["traffic"]
    peak_img = float(traffic.per_second().max()) * traffic.mean_images
    needed = max(1, math.ceil(peak_img / (0.8 * setup.pod_model.capacity(st.max_batch_size, traffic.mean_images))))
    space = knobs(chart_defaults, inp["values"], inp["plan"], needed)
    effective = deep_merge(chart_defaults, inp["values"])
    search = _Search(args, inp, engine, step, say)
    best: dict[str, Any] = {}
    best_summary: dict[str, Any] | None = current
    for _round in range(2):
        for key, candidates in space.items():
            for value in candidates:
                trial = {**best, key: value}
                if trial == best or (key not in best and value == _get(effective, key)):
                    continue  # the values already in force
                s = search.evaluate(trial)
                if _better(s, best_summary):
                    best, best_summary = trial, s
    lines = [
        f"Searched {len(search.tried)} candidates ({engine} engine), knobs: " + ", ".join(f"`{k}`" for k in space),
        "",
    ]
    lines += ["| values | SLO attainment | met | $/month if repeated |", "|---|---:|---|---:|"]
    lines.append(
        f"| (yours) | {100 * current['slo_attainment']:.2f} % | {current['slo_met']} | "
        f"{current['cost_per_month_if_repeated_usd']:,.2f} |"
    )
    for ov, s in search.tried:
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in ov.items())
        if s is None:
            lines.append(f"| {shown} | does not render | | |")
        else:
            lines.append(
                f"| {shown} | {100 * s['slo_attainment']:.2f} % | {s['slo_met']} | "
                f"{s['cost_per_month_if_repeated_usd']:,.2f} |"
            )
    files: dict[str, str] = {}
    if best and best_summary is not None and best_summary["slo_met"]:
        override: dict[str, Any] = {}
        for k, v in best.items():
            override = deep_merge(override, _nested(k, v))
        header = (
            f"# Recommended by `python -m predictor plan --recommend` for {traffic.name} "
            f"at p95 <= {args.slo_p95_ms:g} ms:\n"
            f"# use after your values: helm upgrade ... -f <your values> -f recommended-values.yaml\n"
        )
        files["recommended-values.yaml"] = header + yaml.safe_dump(override, sort_keys=False)
        files["recommended-summary.json"] = json.dumps(best_summary, indent=2, default=float) + "\n"
        lines += [
            "",
            "**Recommended** (`recommended-values.yaml`): "
            + ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in best.items())
            + f" -> SLO attainment {100 * best_summary['slo_attainment']:.2f} %, "
            f"${best_summary['cost_per_month_if_repeated_usd']:,.2f}/month if repeated.",
        ]
    elif current["slo_met"]:
        lines += ["", "Your values already meet the SLO and no candidate was cheaper: nothing to change."]
    else:
        lines += [
            "",
            "**No candidate met the SLO**: more capacity per pod (a faster GPU, larger batches) or a larger "
            "maxReplicas range is needed.",
        ]
    return lines, files
