"""Which engine a plan runs on, and whether the fluid engine is faithful to it.

The request-level engine is the reference; the fluid engine is held to it by
``tests/plan/test_engine_agreement.py`` (steady load, overload while pods start, a full queue on slow pods,
Knative's scale to zero and wake: onto a new node within the chart's cold-start budget, with the activator's
per-pod containerConcurrency, a burst past its queue, multi-image requests, and past the revision timeout;
Standard-mode KEDA at zero; the KEDA HTTP add-on's wake and spike; spot reclaims) at 1 s and 5 s steps
(the fluid engine takes one-second steps by itself while requests wait for a pod or a pod holds a
backlog): served, refused and timed out within 2 points of the offered requests, p95 within 25 %, SLO
attainment within 4 points, replicas, nodes and cost within 10 %. What that check does not cover is not
chosen by ``--engine auto``: a step longer than 5 s, or one that is a large share of a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from classifier_plan.setup import SimSetup
from classifier_plan.traffic import TrafficProfile

REQUEST_ENGINE_MAX = 3_000_000
"""``--engine auto`` simulates request by request up to this many expected requests, else fluid."""
CHECKED_STEP_S = 5.0
"""The longest fluid step the engine cross-check holds at."""
TIMEOUT_STEPS = 10
"""A timeout (request or revision) must span at least this many one-second steps for its 504s to be faithful."""
AGREEMENT = (
    "checked against the request engine in tests/plan/test_engine_agreement.py at 1 s and 5 s steps: served, "
    "refused and timed out within 2 points of offered, p95 within 25 %, SLO attainment within 4 points, "
    "replicas, nodes and cost within 10 %"
)


@dataclass
class EngineChoice:
    """The engine, its step, and what the report says about the choice."""

    engine: str
    step_s: float
    notes: list[str] = field(default_factory=list)


def default_step_s(traffic: TrafficProfile) -> float:
    """1 s, or 5 s beyond two days of traffic."""
    return 5.0 if traffic.duration > 2 * 86400 else 1.0


def fluid_caveats(setup: SimSetup, step_s: float) -> list[str]:
    """Why the fluid engine at ``step_s`` would not be faithful for this chart (empty: it is)."""
    plan, out = setup.plan, []
    if step_s > CHECKED_STEP_S:
        out.append(f"the fluid step {step_s:g} s is longer than the {CHECKED_STEP_S:g} s the cross-check holds at")
    # 504s come from backlogs and from the activator, which the engine steps through one second at a time.
    timeout_s = plan.settings.request_timeout_ms / 1000.0
    if timeout_s < TIMEOUT_STEPS:
        out.append(f"request_timeout_ms ({timeout_s:g} s) is under {TIMEOUT_STEPS} one-second steps")
    if plan.knative and plan.knative.revision_timeout_s < TIMEOUT_STEPS:
        out.append(
            f"the revision timeout ({plan.knative.revision_timeout_s:g} s) is under {TIMEOUT_STEPS} one-second steps"
        )
    if plan.http_addon and plan.http_addon.condition_wait_s < TIMEOUT_STEPS:
        out.append(
            f"the interceptor's conditionWait ({plan.http_addon.condition_wait_s:g} s) is under {TIMEOUT_STEPS} "
            "one-second steps"
        )
    return out


def choose_engine(setup: SimSetup, traffic: TrafficProfile, engine: str, step_s: float | None) -> EngineChoice:
    """``--engine`` and ``--step-s`` resolved: auto takes the request engine up to
    :data:`REQUEST_ENGINE_MAX` expected requests, else the fluid engine where it is faithful (at a 1 s step
    if the default is not), else the request engine, and says why."""
    step = step_s or default_step_s(traffic)
    if engine == "request":
        return EngineChoice("request", step)
    expected = traffic.expected_requests()
    if engine == "fluid":
        caveats = fluid_caveats(setup, step)
        notes = [f"fluid engine forced by --engine fluid, although: {c}" for c in caveats]
        return EngineChoice("fluid", step, notes or [f"fluid engine ({AGREEMENT})"])
    if expected <= REQUEST_ENGINE_MAX:
        return EngineChoice("request", step)
    caveats = fluid_caveats(setup, step)
    if caveats and step_s is None and not fluid_caveats(setup, 1.0):
        return EngineChoice(
            "fluid", 1.0, [f"fluid engine at a 1 s step, not {step:g} s, because {caveats[0]} ({AGREEMENT})"]
        )
    if caveats:
        return EngineChoice(
            "request",
            step,
            [
                f"request engine although {expected:,.0f} requests are expected (auto takes fluid above "
                f"{REQUEST_ENGINE_MAX:,}): the fluid engine is not faithful here: " + "; ".join(caveats)
            ],
        )
    return EngineChoice("fluid", step, [f"fluid engine: {expected:,.0f} requests expected ({AGREEMENT})"])
