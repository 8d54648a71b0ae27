"""The step/verdict state machine of a canary analysis: pure, no I/O, no clock.

Each check judges the traffic since the previous judgement: ``pass`` moves to the next step (the last
step, 100, is the promotion), ``fail`` counts a failed check and stays at the step, ``no-data`` (a
revision answered fewer than ``min_requests``) waits one more interval with the window growing, and
``max_no_data_checks`` such waits in a row count as one failed check. ``max_failed_checks`` failed
checks in a row (or over the whole run, ``count_failed_checks=total``) roll the canary back. A problem
reaching Prometheus is a failed check (or, with ``on_monitoring_outage=hold``, an uncounted hold); a
query that returns no series is a failed check with its reason, never a pass.

A window is judged by named checks, and every verdict says which decided: ``monitoring`` (Prometheus
answered), ``http`` (the predictor's own counters: errors, 503s, 4xx, p95), ``outside`` (queue-proxy's
view of the revision and pod restarts), ``model`` (version and dtype served), ``answers`` (the live
class-mix and confidence comparison) and ``reference`` (the reference set). Promotion needs them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from classifier_canary.config import CanaryConfig
from classifier_canary.quality import AnswerStats, live_quality
from classifier_canary.reference import ReferenceResult, reference_reasons


class Verdict(StrEnum):
    """What one check concluded."""

    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no-data"
    HOLD = "hold"
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
    proxy_requests: float | None = None
    """Requests queue-proxy (Knative) counted for the revision in the window; ``None``: no such series."""
    proxy_error_ratio: float | None = None
    proxy_p95_seconds: float | None = None
    restarts: float | None = None
    """Container restarts of the revision's pods in the window (kube-state-metrics); ``None``: no series."""


@dataclass(frozen=True)
class Measurement:
    """Canary and stable over one window, or the ``problem`` that kept them from being measured."""

    window_seconds: float
    canary: RevisionStats
    stable: RevisionStats
    problem: str | None = None
    missing: tuple[str, ...] = ()
    """Queries that returned no series for a revision, as ``"<role> <what>: <query>"``."""
    answers: tuple[AnswerStats, AnswerStats] | None = None
    """Canary's and stable's top-1 answers; ``None``: not compared (``skip_live_quality``)."""
    reference: ReferenceResult | None = None
    """The reference set's result at this check; ``None``: no reference set."""

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
    decided_by: tuple[str, ...] = ()
    """The checks that decided: those that failed (or lacked data), or every check run when all passed."""
    checks: dict[str, str] = field(default_factory=dict, compare=False)
    """Each check run and its outcome (``ok``, ``fail``, ``no-data``)."""


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _ms(x: float) -> str:
    return f"{1000 * x:.0f}ms"


Outcome = Literal["ok", "fail", "no-data"]


@dataclass(frozen=True)
class Check:
    """One named check of a window."""

    name: str
    outcome: Outcome
    reasons: tuple[str, ...] = ()


def run_checks(m: Measurement, cfg: CanaryConfig) -> list[Check]:
    """Every check of one measurement, in order (only ``monitoring`` when Prometheus did not answer)."""
    if m.problem:
        return [Check("monitoring", "fail", (m.problem,))]
    checks = [Check("monitoring", "ok"), _http_check(m, cfg)]
    outside = _outside_reasons(m, cfg)
    checks.append(Check("outside", "fail" if outside else "ok", tuple(outside)))
    model = _model_reasons(m.canary, cfg)
    checks.append(Check("model", "fail" if model else "ok", tuple(model)))
    if m.answers is not None:
        outcome, reasons = live_quality(*m.answers, cfg)
        checks.append(Check("answers", outcome, tuple(reasons)))
    if m.reference is not None:
        reasons = reference_reasons(m.reference, cfg)
        checks.append(Check("reference", "fail" if reasons else "ok", tuple(reasons)))
    return checks


def _http_check(m: Measurement, cfg: CanaryConfig) -> Check:
    if m.missing:
        return Check("http", "fail", tuple(f"no series for {q}" for q in m.missing))
    few = [
        f"{role} {r.revision} answered {r.requests:.1f} requests < min {cfg.min_requests}"
        for role, r in (("canary", m.canary), ("stable", m.stable))
        if r.requests is not None and r.requests < cfg.min_requests
    ]
    if few:
        return Check("http", "no-data", tuple(few))
    reasons = _threshold_reasons(m, cfg)
    return Check("http", "fail" if reasons else "ok", tuple(reasons))


def summarize(checks: list[Check]) -> tuple[Outcome, list[str], tuple[str, ...]]:
    """The window's outcome, its reasons and the checks that decided it."""
    for outcome in ("fail", "no-data"):
        deciding = [c for c in checks if c.outcome == outcome]
        if deciding:
            return outcome, [r for c in deciding for r in c.reasons], tuple(c.name for c in deciding)  # type: ignore[return-value]
    return "ok", [], tuple(c.name for c in checks)


def evaluate(m: Measurement, cfg: CanaryConfig) -> tuple[Outcome, list[str]]:
    """Judge one measurement against the thresholds: ``ok``, ``fail`` or ``no-data``, and the reasons."""
    outcome, reasons, _ = summarize(run_checks(m, cfg))
    return outcome, reasons


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
    out += _latency_reasons("canary p95", c.p95_seconds, s.p95_seconds, cfg)
    return out


def _latency_reasons(what: str, canary: float | None, stable: float | None, cfg: CanaryConfig) -> list[str]:
    """The p95 rule: slower than the stable by the ratio *and* by the absolute margin."""
    if canary is None or stable is None:
        return []
    ratio = canary / stable if stable > 0 else (1.0 if canary <= 0 else math.inf)
    if ratio > cfg.max_p95_ratio and canary - stable > cfg.min_p95_increase_seconds:
        return [
            f"{what} {_ms(canary)} is x{ratio:.2f} the stable's {_ms(stable)} > x{cfg.max_p95_ratio:g} "
            f"and +{_ms(canary - stable)} > +{_ms(cfg.min_p95_increase_seconds)}"
        ]
    return []


def _outside_reasons(m: Measurement, cfg: CanaryConfig) -> list[str]:
    """What clients see in front of the process (queue-proxy) and pod restarts: judged when exported."""
    c, s = m.canary, m.stable
    out = []
    if c.restarts is not None and c.restarts >= 0.5:  # increase() extrapolates: 1 restart can read 0.9
        out.append(f"canary pods restarted {c.restarts:.0f} times in the window")
    if c.proxy_requests is not None and c.proxy_requests >= cfg.min_requests:
        if c.proxy_error_ratio is not None and c.proxy_error_ratio > cfg.max_error_ratio:
            out.append(
                f"queue-proxy: canary error ratio {_pct(c.proxy_error_ratio)} > {_pct(cfg.max_error_ratio)} "
                "(5xx that clients got in front of the predictor)"
            )
        out += _latency_reasons("queue-proxy: canary p95", c.proxy_p95_seconds, s.proxy_p95_seconds, cfg)
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
        self._last_checks: tuple[dict[str, str], tuple[str, ...]] = ({}, ())
        """The checks of the window being judged and those that decided it, for its :class:`Decision`."""

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
        return Decision(
            Verdict.ROLLBACK, Action("rollback"), 0, 0, self.failed_checks, 0, (reason,), decided_by=("ready",)
        )

    def before_traffic(self, reference: ReferenceResult) -> Decision | None:
        """The reference set before the first step: a rollback decision when it fails, else ``None``."""
        reasons = reference_reasons(reference, self.cfg)
        if not reasons:
            return None
        self.done = True
        m = Measurement(0, RevisionStats(""), RevisionStats(""), reference=reference)
        return Decision(
            Verdict.ROLLBACK, Action("rollback"), 0, 0, self.failed_checks, 0, tuple(reasons), True, m,
            decided_by=("reference",), checks={"reference": "fail"},
        )  # fmt: skip

    def judge(self, m: Measurement) -> Decision:
        """Judge the window that just ended and say what to do next."""
        if self.done:
            raise RuntimeError("the analysis is finished")
        checks = run_checks(m, self.cfg)
        outcome, reasons, decided = summarize(checks)
        self._last_checks = ({c.name: c.outcome for c in checks}, decided)
        if m.problem and self.cfg.on_monitoring_outage == "hold":
            reasons = [*reasons, "on_monitoring_outage=hold: traffic stays, the check is not counted"]
            return self._decision(Verdict.HOLD, Action("stay"), reasons, m, new_window=False)
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
        if self.cfg.count_failed_checks == "consecutive":
            self.failed_checks = 0
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
            self._last_checks[1],
            self._last_checks[0],
        )
