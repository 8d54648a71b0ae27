"""Requests held while no pod is ready: Knative's activator and the KEDA HTTP add-on's interceptor.

The holder's rules (:mod:`classifier_plan.holder`) are checked request by request against pods that only
count what they were sent; then whole plans: the chart's HTTP add-on profile (Standard mode, minReplicas 0)
reaches zero and wakes, and Knative's activator never hands a pod more than containerConcurrency requests.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import simpy
import yaml

from classifier_plan import simulate
from classifier_plan.assumptions import Assumptions
from classifier_plan.capacity import CapacityProfile
from classifier_plan.chart import plan_from_values
from classifier_plan.des import DesEngine
from classifier_plan.des.holding import HeldRequests
from classifier_plan.des.tally import Request, Tally
from classifier_plan.holder import ACTIVATOR_QUEUE_DEPTH, Holder, holder_of
from classifier_plan.prices import load_prices
from classifier_plan.results import COLUMNS, Recorder
from classifier_plan.setup import SimSetup
from classifier_plan.traffic import TrafficProfile

from .conftest import CHART, SYNTHETIC, chart_plan, make_setup

COL = {c: i for i, c in enumerate(COLUMNS)}
HTTP_PROFILE = CHART / "ci" / "standard-keda-http-values.yaml"


class CountingPod:
    """A pod that takes what fits its queue of ``queue`` requests and refuses the rest (like PodQueue.admit)."""

    def __init__(self, tally: Tally, queue: int = 1000) -> None:
        self.tally, self.queue = tally, queue
        self.inflight = 0
        self.got: list[Request] = []

    def admit(self, req: Request) -> None:
        if self.inflight >= self.queue:
            self.tally.outcome(req, "refused")
            return
        self.inflight += 1
        self.got.append(req)


def held(holder: Holder, n: int) -> tuple[HeldRequests, Tally, Recorder, list[Request]]:
    tally, rec = Tally(simpy.Environment()), Recorder(60.0, 500.0)
    h = HeldRequests(holder, tally, rec, random.Random(1))
    reqs = [Request(float(i), 1) for i in range(n)]
    for r in reqs:
        tally.arrived()
        h.hold(r, r.t0)
    return h, tally, rec, reqs


def test_the_activator_hands_each_pod_at_most_its_container_concurrency_oldest_first() -> None:
    h, _, _, reqs = held(Holder("activator", 300.0, 3, ACTIVATOR_QUEUE_DEPTH, bounds_answer=True), 10)
    a, b = CountingPod(h.tally), CountingPod(h.tally)
    h.release([a], now=10.0)  # the first pod is ready: 3 go, 7 wait
    assert (a.inflight, len(h)) == (3, 7) and a.got == reqs[:3]
    assert [r.deadline for r in a.got] == [300.0, 301.0, 302.0]  # the revision timeout still runs
    h.release([a, b], now=11.0)  # a second pod: 3 more
    assert (a.inflight, b.inflight, len(h)) == (3, 3, 4) and b.got == reqs[3:6]
    a.inflight -= 1  # one answered: its slot takes the oldest still waiting
    h.release([a, b], now=12.0)
    assert a.got[-1] is reqs[6] and (a.inflight, b.inflight, len(h)) == (3, 3, 3)


def test_with_a_limit_of_three_or_less_the_activator_fills_the_first_pod_with_room() -> None:
    h, _, _, _ = held(Holder("activator", 300.0, 2, ACTIVATOR_QUEUE_DEPTH, first_available=True), 3)
    a, b = CountingPod(h.tally), CountingPod(h.tally)
    h.release([a, b], now=10.0)
    assert (a.inflight, b.inflight) == (2, 1)


def test_a_refused_request_frees_its_slot_and_the_next_one_is_sent_at_once() -> None:
    """A pod whose own queue fills before its containerConcurrency does refuses the excess; the activator
    keeps sending (the slot is free again), so every held request is answered at once."""
    h, tally, rec, _ = held(Holder("activator", 300.0, 256, ACTIVATOR_QUEUE_DEPTH), 300)
    pod = CountingPod(tally, queue=100)
    h.release([pod], now=10.0)
    assert (pod.inflight, len(h), tally.outcomes["refused"], rec.refused_waking) == (100, 0, 200, 200)


def test_held_requests_time_out_after_the_holders_timeout_and_the_queue_has_a_depth() -> None:
    h, tally, rec, _ = held(Holder("activator", 5.0, 4, 6), 8)  # 0..7 s, queue of 6: the last two refused
    assert (len(h), tally.outcomes["refused"], rec.refused_waking) == (6, 2, 2)
    h.expire(now=7.5)  # arrived at 0, 1, 2 s: waited 5 s or more
    assert (len(h), tally.outcomes["timed_out"], rec.timed_out_waking) == (3, 3, 3)


def test_the_interceptor_sends_every_held_request_at_once_and_the_pod_refuses_what_does_not_fit() -> None:
    h, tally, rec, _ = held(Holder("interceptor", 210.0, 0, math.inf), 10)
    pod = CountingPod(tally, queue=4)
    h.release([pod], now=10.0)
    assert (pod.inflight, len(h), tally.outcomes["refused"], rec.refused_waking) == (4, 0, 6, 6)
    # the interceptor's waiting goroutines race for the pod: not the oldest four (as the activator would send)
    assert {r.t0 for r in pod.got} != {0.0, 1.0, 2.0, 3.0}
    assert all(r.deadline == math.inf for r in pod.got)  # conditionWait is over: the pod's own deadline only


def test_the_holder_is_read_from_the_rendered_chart(tmp_path: Path, helm: str) -> None:
    kn = holder_of(
        chart_plan(tmp_path, {"autoscaling": {"minReplicas": 0, "knative": {"containerConcurrency": 2, "target": 2}}})
    )
    # minReplicas 0: the revision timeout covers coldStartSeconds 210 + request deadline 30 + margin 10
    assert kn == Holder("activator", 250.0, 2, ACTIVATOR_QUEUE_DEPTH, first_available=True, bounds_answer=True)
    plan, _ = plan_from_values(CHART, [HTTP_PROFILE])
    assert holder_of(plan) == Holder("interceptor", 210.0, 0, math.inf)  # conditionWait = coldStartSeconds
    assert holder_of(chart_plan(tmp_path, {"deploymentMode": "Standard"})) is None


@pytest.mark.parametrize("engine", ["request", "fluid"])
def test_the_http_add_on_profile_scales_to_zero_and_wakes_with_the_wait_of_a_cold_start(engine: str) -> None:
    """Standard mode, minReplicas 0, the chart's HTTP add-on profile: idle for 20 minutes (the pod goes after
    scaledownPeriod, then its node), then 0.5 requests/s. The interceptor holds them while a new node and pod
    start (~3 minutes), then every one is served: none refused forever, none timed out."""
    plan, _ = plan_from_values(CHART, [HTTP_PROFILE])
    s = SimSetup(plan, CapacityProfile.model_validate(SYNTHETIC), load_prices(), Assumptions(seed=3))
    traffic = TrafficProfile.model_validate(
        {
            "name": "idle-then-wake",
            "duration": "30m",
            "segments": [{"kind": "points", "interpolation": "step", "points": [[0, 0], ["20m", 30], ["26m", 0]]}],
        }
    )
    rec, sm = simulate.run(s, traffic, 60_000.0, engine)
    ready = rec.table()[:, COL["ready_replicas"]]
    assert ready[0] == 1 and ready[6 * 60 : 20 * 60].max() == 0  # gone scaledownPeriod (300 s) after the start
    assert ready[25 * 60] == 1  # woken by the requests at the interceptor
    assert sm["wakes_from_zero"] == 1
    assert sm["requests_served"] == sm["requests_offered"] > 150
    assert sm["requests_refused"] == sm["requests_timed_out"] == sm["requests_refused_no_pods"] == 0
    a = s.assumptions
    new_node = a.karpenter_batch_max_s + a.node_launch_s + a.image_pull_s  # before the pod's own start
    assert new_node <= sm["time_to_first_ready_s_after_idle"] <= plan.http_addon.condition_wait_s
    # about half the requests arrived during the wake and waited for it: the slowest answers carry it
    assert sm["p95_ms"] >= 0.8 * 1000.0 * sm["time_to_first_ready_s_after_idle"]


def test_knatives_activator_keeps_each_pod_within_container_concurrency_through_a_wake(
    tmp_path: Path, helm: str, profile
) -> None:
    """40 requests/s during a wake onto a new node, containerConcurrency 8: ~7,000 requests wait at the
    activator and reach the pods 8 at a time; none is refused or times out (the chart's budget covers it)."""
    values = {
        "autoscaling": {
            "minReplicas": 0,
            "maxReplicas": 2,
            "knative": {"scaleDownDelay": "0s", "containerConcurrency": 8, "target": 4},
        }
    }
    s = make_setup(tmp_path, helm, values, profile, seed=4)
    traffic = TrafficProfile.model_validate(
        {
            "name": "burst-after-idle",
            "duration": "18m",
            "segments": [{"kind": "points", "interpolation": "step", "points": [[0, 0], ["13m", 2400], ["16m", 0]]}],
        }
    )
    eng = DesEngine(s, traffic, 60_000.0)
    most: list[int] = []
    eng.on_second = lambda _now: most.append(max((q.inflight for q in eng.pq.values()), default=0))
    eng.run()
    rec = eng.rec
    assert max(most) == 8  # the limit binds, and is never passed
    assert rec.served == rec.offered > 6000 and rec.refused == rec.timed_out == 0
    assert rec.wake_waits_s and rec.wake_waits_s[0] > 150.0  # a new node


def test_requests_the_interceptor_holds_and_the_woken_pod_refuses_are_flagged(tmp_path: Path, synthetic_path) -> None:
    """4 requests/s after an idle period on the HTTP add-on profile: ~700 wait for a new node, all reach the
    first pod at once, and its 256-image queue refuses the rest. The report says so in bold, names the
    interceptor, and `plan` warns on stderr."""
    import json

    from .test_cli import plan, traffic_file

    t = traffic_file(
        tmp_path,
        {
            "name": "burst-after-idle",
            "duration": "26m",
            "segments": [{"kind": "points", "interpolation": "step", "points": [[0, 0], ["18m", 240], ["22m", 0]]}],
        },
    )
    out = tmp_path / "plan"
    r = plan("--values", HTTP_PROFILE, "--traffic", t, "--capacity", synthetic_path, "--out", out, "--no-plots")
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["wakes_from_zero"] == 1 and s["requests_refused_no_pods"] == 0
    # nearly every refusal is of a held request (a few arrive while the woken pod's queue is still full)
    assert 300 <= s["requests_refused_waking"] <= s["requests_refused"] <= s["requests_refused_waking"] + 20
    assert "refused after being held" in r.stderr
    report = (out / "report.md").read_text()
    assert "REFUSED ON WAKE" in report and "the interceptor sends every held request at once" in report


def test_auto_keeps_the_request_engine_where_the_interceptor_gives_up_within_a_few_steps(
    tmp_path: Path, helm: str, profile
) -> None:
    """A conditionWait under ten one-second steps is not what the cross-check holds the fluid engine to."""
    from classifier_plan.fidelity import REQUEST_ENGINE_MAX, choose_engine

    values = yaml.safe_load(HTTP_PROFILE.read_text())
    values["autoscaling"]["coldStartSeconds"] = 5  # the chart's conditionWait
    s = make_setup(tmp_path, helm, values, profile)
    big = TrafficProfile.model_validate(
        {
            "name": "big",
            "duration": "1d",
            "segments": [{"kind": "points", "points": [[0, 2 * REQUEST_ENGINE_MAX / 1440.0]]}],
        }
    )
    choice = choose_engine(s, big, "auto", None)
    assert choice.engine == "request" and "conditionWait (5 s) is under 10 one-second steps" in choice.notes[0]
    default = make_setup(tmp_path, helm, yaml.safe_load(HTTP_PROFILE.read_text()), profile)
    assert choose_engine(default, big, "auto", None).engine == "fluid"
