"""The step/verdict state machine of a canary analysis: pure, no I/O, no clock.

Each check judges the traffic since the previous judgement: ``pass`` moves to the next step (the last
step, 100, is the promotion), ``fail`` counts a failed check and stays at the step, ``no-data`` (a
revision answered fewer than ``min_requests``) waits one more interval with the window growing, and
``max_no_data_checks`` such waits in a row count as one failed check. ``max_failed_checks`` failed
checks over the whole run roll the canary back. A problem reaching Prometheus, or a query that returns
no series, is a failed check with its reason, never a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from classifier_canary.config import CanaryConfig


class Verdict(StrEnum):
    """What one check concluded."""

    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no-data"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class RevisionStats:
    """One revision's numbers over a check window; ``None`` where Prometheus had no value."""

    revision: str
    requests: float | None = None
    error_ratio: float | None = None
    shed_ratio: float | None = None
    p95_seconds: float | None = None
    versions: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()
    client_error_ratio: float | None = None
    """Share of 4xx answers (499, a client that left, not counted)."""


@dataclass(frozen=True)
class Measurement:
    """Canary and stable over one window, or the ``problem`` that kept them from being measured."""

    window_seconds: float
    canary: RevisionStats
    stable: RevisionStats
    problem: str | None = None
    missing: tuple[str, ...] = ()
    """Queries that returned no series for a revision, as ``"<role> <what>: <query>"``."""

    @property
    def p95_ratio(self) -> float | None:
        """Canary p95 over stable p95, when both exist."""
        c, s = self.canary.p95_seconds, self.stable.p95_seconds
        if c is None or s is None:
            return None
        if s <= 0:
            return 1.0 if c <= 0 else math.inf
        return c / s


@dataclass(frozen=True)
class Action:
    """What to do to the InferenceService after a decision."""

    kind: Literal["traffic", "promote", "rollback", "stay"]
    percent: int | None = None


@dataclass(frozen=True)
class Decision:
    """The outcome of one check (or of the canary never becoming ready)."""

    verdict: Verdict
    action: Action
    step: int
    """1-based index of the step that was judged."""
    traffic_percent: int
    failed_checks: int
    no_data_checks: int
    reasons: tuple[str, ...] = ()
    new_window: bool = True
    """Whether the next check's window starts now (``False`` while waiting for more data)."""
    measurement: Measurement | None = field(default=None, compare=False)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _ms(x: float) -> str:
    return f"{1000 * x:.0f}ms"


def evaluate(m: Measurement, cfg: CanaryConfig) -> tuple[Literal["ok", "fail", "no-data"], list[str]]:
    """Judge one measurement against the thresholds: ``ok``, ``fail`` or ``no-data``, and the reasons."""
    if m.problem:
        return "fail", [m.problem]
    if m.missing:
        return "fail", [f"no series for {q}" for q in m.missing]
    few = [
        f"{role} {r.revision} answered {r.requests:.1f} requests < min {cfg.min_requests}"
        for role, r in (("canary", m.canary), ("stable", m.stable))
        if r.requests is not None and r.requests < cfg.min_requests
    ]
    if few:
        return "no-data", few
    reasons = _threshold_reasons(m, cfg) + _model_reasons(m.canary, cfg)
    return ("fail", reasons) if reasons else ("ok", [])


def _threshold_reasons(m: Measurement, cfg: CanaryConfig) -> list[str]:
    c, s = m.canary, m.stable
    out = []
    if c.error_ratio is None:
        out.append("canary error ratio has no value")
    elif c.error_ratio > cfg.max_error_ratio:
        out.append(f"canary error ratio {_pct(c.error_ratio)} > {_pct(cfg.max_error_ratio)}")
    if c.shed_ratio is None:
        out.append("canary shed (503) ratio has no value")
    elif c.shed_ratio > cfg.max_shed_ratio:
        out.append(f"canary shed (503) ratio {_pct(c.shed_ratio)} > {_pct(cfg.max_shed_ratio)}")
    # 4xx: both revisions see the same clients, so the canary is judged against the stable's share. A
    # canary that refuses what the stable accepts (a smaller input limit, a wrong model name, a schema
    # change) answers quickly and with no 5xx, and would pass every other check.
    if c.client_error_ratio is None or s.client_error_ratio is None:
        out.append("client-error (4xx) ratio has no value")
    elif c.client_error_ratio > s.client_error_ratio + cfg.max_client_error_increase:
        out.append(
            f"canary client-error (4xx) ratio {_pct(c.client_error_ratio)} > the stable's "
            f"{_pct(s.client_error_ratio)} + {_pct(cfg.max_client_error_increase)}"
        )
    for role, r in (("canary", c), ("stable", s)):
        if r.p95_seconds is None:
            out.append(f"{role} p95 has no value: no request of {r.revision} was answered and timed")
    ratio = m.p95_ratio
    if ratio is not None and ratio > cfg.max_p95_ratio:
        out.append(
            f"canary p95 {_ms(c.p95_seconds or 0)} is x{ratio:.2f} the stable's {_ms(s.p95_seconds or 0)} "
            f"> x{cfg.max_p95_ratio:g}"
        )
    return out


def _model_reasons(c: RevisionStats, cfg: CanaryConfig) -> list[str]:
    if not c.versions:
        return [f"canary {c.revision} exports no classifier_model_info: is it our predictor, and scraped?"]
    out = []
    if len(c.versions) > 1:
        out.append(f"canary pods serve different model versions: {', '.join(c.versions)}")
    if cfg.expect_version is not None and set(c.versions) != {cfg.expect_version}:
        out.append(f"canary serves model version {', '.join(c.versions)}, expected {cfg.expect_version}")
    if cfg.expect_dtype is not None and set(c.dtypes) != {cfg.expect_dtype}:
        out.append(f"canary serves dtype {', '.join(c.dtypes) or 'none'}, expected {cfg.expect_dtype}")
    return out


class Analysis:
    """Where a run stands: the current step, failed and no-data checks so far."""

    def __init__(self, cfg: CanaryConfig) -> None:
        self.cfg = cfg
        self.steps = cfg.steps
        self.index = 0
        self.failed_checks = 0
        self.no_data_checks = 0
        self.done = False

    @property
    def traffic_percent(self) -> int:
        """Canary share of the current step."""
        return self.steps[self.index]

    def start(self) -> Action:
        """The first action: send the first step's share to the canary."""
        return Action("traffic", self.steps[0])

    def canary_not_ready(self, reason: str) -> Decision:
        """The canary never became ready: roll back before any step."""
        self.done = True
        return Decision(Verdict.ROLLBACK, Action("rollback"), 0, 0, self.failed_checks, 0, (reason,))

    def judge(self, m: Measurement) -> Decision:
        """Judge the window that just ended and say what to do next."""
        if self.done:
            raise RuntimeError("the analysis is finished")
        outcome, reasons = evaluate(m, self.cfg)
        if outcome == "no-data":
            self.no_data_checks += 1
            if self.no_data_checks < self.cfg.max_no_data_checks:
                return self._decision(Verdict.NO_DATA, Action("stay"), reasons, m, new_window=False)
            reasons = [f"not enough data for {self.no_data_checks} checks in a row", *reasons]
            outcome = "fail"
        self.no_data_checks = 0
        if outcome == "fail":
            self.failed_checks += 1
            if self.failed_checks >= self.cfg.max_failed_checks:
                self.done = True
                return self._decision(Verdict.ROLLBACK, Action("rollback"), reasons, m)
            return self._decision(Verdict.FAIL, Action("stay"), reasons, m)
        judged = self.index
        self.index += 1
        if self.index == len(self.steps) - 1:
            self.done = True
            return self._decision(Verdict.PROMOTE, Action("promote"), [], m, step=judged)
        return self._decision(Verdict.PASS, Action("traffic", self.steps[self.index]), [], m, step=judged)

    def _decision(
        self,
        verdict: Verdict,
        action: Action,
        reasons: list[str],
        m: Measurement,
        *,
        new_window: bool = True,
        step: int | None = None,
    ) -> Decision:
        index = self.index if step is None else step
        return Decision(
            verdict,
            action,
            index + 1,
            self.steps[index],
            self.failed_checks,
            self.no_data_checks,
            tuple(reasons),
            new_window,
            m,
        )
