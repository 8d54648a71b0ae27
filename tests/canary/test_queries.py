"""The tool's PromQL is the chart's: its recording rules over 5 minutes are exactly what the chart renders."""

from __future__ import annotations

import re

import pytest

from classifier_canary.config import format_duration, parse_duration
from classifier_canary.queries import check_queries, inline, recording_rules, tool_rules
from tests.support.canary_stack import KNATIVE_PROFILE, NAMESPACE, STANDARD_PROFILE, render


@pytest.mark.parametrize(("profile", "release"), [(KNATIVE_PROFILE, "demo"), (STANDARD_PROFILE, "std")])
def test_recording_rules_over_5m_are_the_charts(profile, release):
    objects = render(profile, release)
    (isvc,) = [o["metadata"]["name"] for o in objects if o["kind"] == "InferenceService"]
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    group = next(g for g in rule["spec"]["groups"] if g["name"].endswith(".recording"))
    chart = {r["record"]: r["expr"] for r in group["rules"]}
    assert recording_rules(NAMESPACE, isvc, 300) == chart
    assert list(recording_rules(NAMESPACE, isvc, 300)) == list(chart), "same order"


def test_the_window_follows_the_step_interval():
    rules = recording_rules("ml", "x", 90)
    assert list(rules) == [
        "revision:classifier_requests:rate1m30s",
        "revision:classifier_request_errors:rate1m30s",
        "revision:classifier_request_error_ratio:rate1m30s",
        "revision:classifier_request_duration_seconds:p95_1m30s",
        "revision:classifier_predictions:rate1m30s",
        "revision:classifier_prediction_confidence:mean1m30s",
    ]
    assert all("[1m30s]" in e for e in rules.values() if "rate(" in e)


def test_inline_expands_every_recorded_reference():
    q = check_queries("ml", "x", 300)
    for expr in (q.requests_rate, q.error_ratio, q.shed_ratio, q.client_error_ratio, q.p95_seconds):
        assert not re.search(r"revision:\w+:\w+", expr), expr
    sel = 'namespace="ml", isvc="x"'
    requests = f"sum by (namespace, isvc, revision) (rate(classifier_requests_total{{{sel}}}[5m]))"
    errors = f'sum by (namespace, isvc, revision) (rate(classifier_requests_total{{{sel}, code=~"5.."}}[5m]))'
    assert q.error_ratio == f"({errors} or 0 * ({requests})) / ({requests})"
    rules = recording_rules("ml", "x", 300) | tool_rules("ml", "x", 300)
    assert inline(rules, "revision:classifier_request_shed_ratio:rate5m") == q.shed_ratio
    assert 'code="503"' in q.shed_ratio
    clients = (
        f'sum by (namespace, isvc, revision) (rate(classifier_requests_total{{{sel}, code=~"4..", code!="499"}}[5m]))'
    )
    assert q.client_error_ratio == f"({clients} or 0 * ({requests})) / ({requests})"


@pytest.mark.parametrize(
    ("text", "seconds"), [("10m", 600), ("30s", 30), ("1h30m", 5400), ("2.5s", 2.5), ("45", 45), ("250ms", 0.25)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10x", "m5", "5 m", "-1m"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (300, 600, 5, 90, 3600, 3725, 0.2)] == [
        "5m",
        "10m",
        "5s",
        "1m30s",
        "1h",
        "1h2m5s",
        "1s",
    ]


def test_outside_queries_read_queue_proxy_and_restarts_by_the_charts_labels():
    q = check_queries("ml", "x", 300)
    sel = 'namespace="ml", isvc="x"'
    assert q.proxy_requests_rate == f"sum by (namespace, isvc, revision) (rate(revision_request_count{{{sel}}}[5m]))"
    assert f'revision_request_count{{{sel}, response_code_class="5xx"}}' in q.proxy_error_ratio
    assert q.proxy_p95_seconds.endswith(") / 1000")  # queue-proxy's latencies are milliseconds
    assert "revision_request_latencies_bucket" in q.proxy_p95_seconds
    # kube-state-metrics' series carry the pod, not the revision: joined through the pod's model info
    assert 'increase(kube_pod_container_status_restarts_total{namespace="ml"}[5m])' in q.restarts
    assert f"group_left (isvc, revision) max by (namespace, pod, isvc, revision) (classifier_model_info{{{sel}}})" in (
        q.restarts
    )
