"""The decision log: one line per event on stdout, as text for people or JSON for pipelines.

Every line carries the time (UTC), the InferenceService and the event: ``start``, ``wait`` (canary not
ready yet), ``traffic`` (the first step's patch), ``check`` (one verdict with the numbers it was made
on and the patch it led to), ``stopped`` (a signal), ``error`` and a final ``result``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TextIO

from classifier_canary.analysis import Decision, Measurement, RevisionStats
from classifier_canary.quality import js_divergence


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.0f}ms"


def _stats_text(role: str, r: RevisionStats, shed: bool) -> str:
    req = "no series" if r.requests is None else f"{r.requests:.0f} req"
    parts = [f"{role} {r.revision} {req}", f"err {_pct(r.error_ratio)}"]
    if shed:
        parts.append(f"shed {_pct(r.shed_ratio)}")
    parts.append(f"4xx {_pct(r.client_error_ratio)}")
    parts.append(f"p95 {_ms(r.p95_seconds)}")
    if r.versions:
        parts.append(f"version {','.join(r.versions)} {','.join(r.dtypes)}")
    return ", ".join(parts)


def _answers_json(m: Measurement | None) -> dict[str, Any] | None:
    """The answer comparison's numbers (class counts summed: a model's classes would fill the line)."""
    if m is None or m.answers is None:
        return None
    c, s = m.answers
    out: dict[str, Any] = {
        "canary_predictions": c.predictions,
        "stable_predictions": s.predictions,
        "canary_confidence": c.mean_confidence,
        "stable_confidence": s.mean_confidence,
        "class_divergence": None,
    }
    if (c.predictions or 0) > 0 and (s.predictions or 0) > 0:
        out["class_divergence"] = js_divergence(c.classes, s.classes)
    return out


def _answers_text(m: Measurement) -> str:
    a = _answers_json(m)
    parts = []
    if a is not None:
        conf = [f"{x:.3f}" if x is not None else "n/a" for x in (a["canary_confidence"], a["stable_confidence"])]
        js = "n/a" if a["class_divergence"] is None else f"{a['class_divergence']:.3f}"
        parts.append(f"answers: class mix JS {js}, confidence {conf[0]} vs {conf[1]}")
    r = m.reference
    if r is not None:
        agreement = "n/a" if r.agreement is None else f"{100 * r.agreement:.1f}%"
        parts.append(f"reference: {r.problem or f'agreement {agreement} of {r.images}, {len(r.changed)} changed'}")
    return "".join(f" | {p}" for p in parts)


class DecisionLog:
    """Writes decision lines; ``fmt`` is ``text`` or ``json``."""

    def __init__(self, fmt: str, isvc: str, out: TextIO | None = None, clock: Callable[[], float] = time.time):
        self.fmt, self.isvc, self.out, self.clock = fmt, isvc, out or sys.stdout, clock

    def emit(self, event: str, text: str, **fields: Any) -> None:
        """One line: ``text`` in text mode, ``fields`` in JSON mode."""
        when = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.fmt == "json":
            line = _compact({"time": when, "isvc": self.isvc, "event": event, **fields})
        else:
            line = f"{when} {self.isvc} {event:<8} {text}"
        self.out.write(line + "\n")
        self.out.flush()

    @staticmethod
    def _patch_text(patch: dict[str, Any] | None, applied: bool, stay: bool = False, failed: bool = False) -> str:
        if failed:
            return "patch not sent: the error follows"
        if patch is None:
            return "no patch" if stay else "no patch (the object is so already)"
        return f"patch {_compact(patch)}" if applied else f"patch (dry run, not sent) {_compact(patch)}"

    def traffic(self, step: int, steps: int, percent: int, patch: dict[str, Any] | None, applied: bool) -> None:
        self.emit(
            "traffic",
            f"step {step}/{steps}: canary gets {percent}% | {self._patch_text(patch, applied)}",
            step=step,
            steps=steps,
            traffic_percent=percent,
            patch=patch,
            applied=applied and patch is not None,
        )

    def check(
        self,
        d: Decision,
        steps: int,
        max_failed: int,
        patch: dict[str, Any] | None,
        applied: bool,
        failed: bool = False,
    ) -> None:
        """One verdict, with the numbers it was made on and the patch it led to."""
        m = d.measurement
        reasons = "; ".join(d.reasons)
        by = f" [{'+'.join(d.decided_by)}]" if d.decided_by else ""
        verdict = {
            "pass": f"PASS{by} -> {d.action.percent}%",
            "fail": f"FAIL{by} ({d.failed_checks}/{max_failed}), stay at {d.traffic_percent}%: {reasons}",
            "no-data": f"NO-DATA{by} ({d.no_data_checks}), stay at {d.traffic_percent}%: {reasons}",
            "hold": f"HOLD{by}, stay at {d.traffic_percent}%: {reasons}",
            "promote": f"PROMOTE{by}",
            "rollback": f"ROLLBACK{by}: {reasons}" if reasons else f"ROLLBACK{by}",
        }[d.verdict.value]
        numbers = ""
        if m is not None and (m.canary.revision or m.stable.revision):
            ratio = "n/a" if m.p95_ratio is None else f"x{m.p95_ratio:.2f}"
            numbers = (
                f" over {m.window_seconds:.0f}s: {_stats_text('canary', m.canary, True)} | "
                f"{_stats_text('stable', m.stable, False)} | p95 {ratio}{_answers_text(m)}"
            )
        patch_text = self._patch_text(patch, applied, stay=d.action.kind == "stay", failed=failed)
        text = (
            f"step {d.step}/{steps} at {d.traffic_percent}%{numbers} | {verdict} | "
            f"failed checks {d.failed_checks}/{max_failed} | {patch_text}"
        )
        self.emit(
            "check",
            text,
            step=d.step,
            steps=steps,
            traffic_percent=d.traffic_percent,
            window_seconds=None if m is None else m.window_seconds,
            canary=None if m is None else asdict(m.canary),
            stable=None if m is None else asdict(m.stable),
            p95_ratio=None if m is None else m.p95_ratio,
            answers=_answers_json(m),
            reference=None if m is None or m.reference is None else asdict(m.reference),
            verdict=d.verdict.value,
            decided_by=list(d.decided_by),
            checks=d.checks,
            reasons=list(d.reasons),
            next=d.action.kind,
            next_percent=d.action.percent,
            failed_checks=d.failed_checks,
            max_failed_checks=max_failed,
            no_data_checks=d.no_data_checks,
            patch=patch,
            applied=applied and patch is not None,
        )
