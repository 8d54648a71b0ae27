"""Every PromQL expression the chart ships, evaluated by a real Prometheus scraping a real predictor (and
queue worker) under load: it must evaluate, and, unless listed below with a reason, return data.

The expressions come from ``helm template`` of every ``chart/ci`` profile (Grafana panel targets and
variable queries from the dashboard ConfigMap, PrometheusRule records and alerts, KEDA Prometheus
triggers), never from a copy in this file.
"""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from predictor.gpu_metrics import FB_FREE, FB_USED, UTIL
from tests.observability.conftest import MAX_QUEUE_IMAGES, Stack
from tests.observability.stack import Query, finite_values, metric_names, selectors, substitute

# Expressions allowed to return no series under the test load (every other one must), with the reason.
# Their vector selectors must still return data (unless the metric is external and absent here), so a
# wrong metric name or label matcher inside them is still caught.
ALLOWED_EMPTY = {
    "alert:ClassifierNoReadyReplicas": "reads kube-state-metrics (no Kubernetes here); silent while pods are ready",
    "alert:ClassifierCanaryErrorRatioAboveStable": "needs two revisions taking traffic; one runs here",
    "alert:ClassifierQueueBacklogGrowing": "needs the queue to grow for the whole deriv() window; "
    "a short burst past a 4-image queue does not",
    "alert:ClassifierQueueNearlyFull": "needs a queue above 90 % of capacity at the moment of the query; the "
    "overload burst fills it only briefly",
    "alert:ClassifierWorkerBacklogGrowing": "needs a stream that keeps growing; the worker keeps up with 3 jobs",
    "alert:ClassifierHighLatencyP95": "p95 above the threshold depends on the machine's speed",
    "record:isvc:classifier_prediction_class_share:baseline": "the baseline ends 30 minutes ago; the test is younger",
    "record:isvc:classifier_prediction_confidence:baseline": "the baseline ends 30 minutes ago; the test is younger",
    "record:revision:classifier_prediction_class_shift:tvd30m": "compares with the baseline (30 minutes ago)",
    "alert:ClassifierConfidenceDrop": "compares with the baseline (30 minutes ago); tests/observability/rules",
    "alert:ClassifierClassMixShift": "compares with the baseline (30 minutes ago); tests/observability/rules",
}
# Metrics the chart may reference that no process of ours exports: they come from standard exporters.
EXTERNAL_METRICS = {
    "up": "Prometheus itself, one per scrape target",
    "kube_deployment_spec_replicas": "kube-state-metrics",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    UTIL: "NVIDIA DCGM exporter; predictor.gpu_metrics on a GPU node",
    FB_USED: "NVIDIA DCGM exporter; predictor.gpu_metrics on a GPU node",
    FB_FREE: "NVIDIA DCGM exporter; predictor.gpu_metrics on a GPU node",
}
ABSENT_HERE = {"kube_deployment_spec_replicas", "kube_deployment_status_replicas_available"}
# Recorded series that stay empty for the first 30 minutes (their baseline window ends 30 minutes ago);
# tests/observability/rules/drift.test.yaml shows them and the alerts reading them with data.
RECORDED_AFTER_30M = {
    "isvc:classifier_prediction_class_share:baseline",
    "isvc:classifier_prediction_confidence:baseline",
    "revision:classifier_prediction_class_shift:tvd30m",
}


def evaluations(stack: Stack) -> list[tuple[Query, str, str]]:
    """(query, isvc, PromQL) for every chart expression: dashboard ones once per InferenceService."""
    out = []
    for q in stack.chart.queries:
        if q.kind == "variable":
            continue  # Grafana's label_values(), not PromQL: see test_dashboard_variables_resolve
        isvcs = [i.isvc for i in stack.identities] if q.kind == "panel" else [q.isvc]
        out += [(q, isvc, substitute(q.expr, isvc)) for isvc in isvcs]
    return out


def test_the_load_hit_every_outcome(obs_stack: Stack):
    """The run the assertions below rely on: 200s, 400s from bad images, 503s from the small queue."""
    s = obs_stack.server
    assert s.metric("classifier_requests_total", code="200") >= 3
    assert s.metric("classifier_requests_total", code="400") >= 3
    assert s.metric("classifier_requests_total", code="503") >= 1
    assert s.metric("classifier_rejections_total", reason="queue_full") >= 1
    assert s.metric("classifier_queue_capacity") == MAX_QUEUE_IMAGES
    assert s.metric("classifier_requests_total", protocol="jobs", code="202") == obs_stack.jobs_submitted


def test_chart_ships_queries_of_every_kind(obs_stack: Stack):
    kinds = {q.kind for q in obs_stack.chart.queries}
    assert {"panel", "variable", "record", "alert", "keda"} <= kinds, kinds
    assert len(obs_stack.chart.of_kind("panel")) >= 15


def test_every_chart_expression_evaluates_and_returns_data(obs_stack: Stack):
    prom = obs_stack.prometheus
    errors, empty, report = [], [], []
    for q, isvc, expr in evaluations(obs_stack):
        try:
            result = prom.query(expr)
        except AssertionError as e:
            errors.append(f"{q.id} [{isvc}]: {e}\n    {expr}")
            continue
        values = finite_values(result)
        report.append(f"{len(result):3d} series {q.kind:8s} {q.name} [{isvc}]")
        key = f"{q.kind}:{q.name}"
        if not values and key not in ALLOWED_EMPTY:
            empty.append(f"{q.id} [{isvc}] ({profiles(q)}): {len(result)} series, none finite\n    {expr}")
    print("\n".join(report))
    assert not errors, "expressions Prometheus rejects:\n" + "\n".join(errors)
    assert not empty, "expressions without data under load:\n" + "\n".join(empty)


def test_selectors_inside_every_expression_match_series(obs_stack: Stack):
    """Each ``metric{matchers}`` inside each expression (allowed-empty ones included) selects series."""
    prom = obs_stack.prometheus
    missing = []
    for q, isvc, expr in evaluations(obs_stack):
        for sel in selectors(expr):
            if metric_names(sel) & ABSENT_HERE or sel.split("{")[0] in RECORDED_AFTER_30M:
                continue
            if not prom.query(sel):
                missing.append(f"{q.id} [{isvc}]: {sel}")
    assert not missing, "selectors matching nothing:\n" + "\n".join(sorted(set(missing)))


def test_allowed_empty_list_is_current(obs_stack: Stack):
    names = {f"{q.kind}:{q.name}" for q in obs_stack.chart.queries}
    assert set(ALLOWED_EMPTY) <= names, f"stale entries: {set(ALLOWED_EMPTY) - names}"


def test_rules_load_and_evaluate_in_prometheus(obs_stack: Stack):
    """Prometheus loaded every rule from the chart and evaluates each without error; the load makes the
    error-ratio alert pending (503s) and the stand-in GPU at 94 % makes the GPU memory alert pending."""
    groups = obs_stack.prometheus.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(obs_stack.chart.rules)
    bad = [f"{r['name']}: {r['health']} {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    assert not bad, bad
    alerts = obs_stack.prometheus.api("alerts")["alerts"]
    active = {(a["labels"]["alertname"], a["state"]) for a in alerts}
    names = {a for a, _ in active}
    assert "ClassifierHighErrorRatio" in names, active
    assert "ClassifierGpuMemoryHigh" in names, active
    assert {"ClassifierNoReadyReplicas", "ClassifierCanaryErrorRatioAboveStable"}.isdisjoint(names), active


def test_dashboard_variables_resolve(obs_stack: Stack):
    """Grafana's ``label_values(selector, label)`` variable queries, through the same API Grafana uses."""
    prom = obs_stack.prometheus
    for q in obs_stack.chart.of_kind("variable"):
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.expr.strip())
        assert m, q.expr
        for ident in obs_stack.identities:
            selector = substitute(m.group(1), ident.isvc)
            values = prom.api(f"label/{m.group(2)}/values", **{"match[]": selector})
            assert getattr(ident, m.group(2)) in values, (q.expr, values)


def scraped_names(text: str) -> set[str]:
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_every_metric_the_chart_names_is_exported(obs_stack: Stack):
    """Each metric name in the chart's PromQL is in a live scrape of the predictor or the worker, is
    recorded by a chart rule, or is a listed external metric."""
    live = scraped_names(obs_stack.server.metrics()) | scraped_names(obs_stack.worker_metrics())
    recorded = {r["record"] for r in obs_stack.chart.rules if "record" in r}
    referenced: dict[str, set[str]] = {}
    for q in obs_stack.chart.queries:
        for name in metric_names(q.expr):
            referenced.setdefault(name, set()).add(q.id)
    unknown = {
        name: sorted(where)
        for name, where in referenced.items()
        if name not in live and name not in recorded and name not in EXTERNAL_METRICS
    }
    assert not unknown, f"metrics no process exports: {unknown}"
    stale = set(EXTERNAL_METRICS) - set(referenced)
    assert not stale, f"external metrics the chart no longer uses: {stale}"
    # The classifier_* names the chart uses are ours, never external.
    assert not any(n.startswith("classifier_") for n in EXTERNAL_METRICS)
    # The worker's metrics are live too (the chart's worker alert reads one of them).
    assert {"classifier_worker_stream_length", "classifier_worker_jobs_total"} <= live


def test_gpu_series_come_only_from_a_gpu(obs_stack: Stack):
    """No GPU here: the predictor exports no DCGM series (GPU panels show "no GPU"); the GPU series the
    queries above found came from the stand-in exporters, and carry the consumer pod's labels."""
    assert not any(n.startswith("DCGM_") for n in scraped_names(obs_stack.server.metrics()))
    series = obs_stack.prometheus.query(f"{FB_USED}")
    assert {s["metric"]["pod"] for s in series} == {i.pod for i in obs_stack.identities}
    assert all(s["metric"]["container"] == "kserve-container" for s in series)


def profiles(q: Query) -> str:
    return ",".join(q.profiles)


@pytest.mark.parametrize("name", sorted(ALLOWED_EMPTY))
def test_allowed_empty_alerts_are_covered_by_promtool(name: str):
    """Every alert allowed to stay empty here has a firing case in the promtool suites, and every recorded
    series one with data."""
    from pathlib import Path

    kind, rule = name.split(":", 1)
    suites = "".join(p.read_text() for p in (Path(__file__).parent / "rules").glob("*.yaml"))
    if kind == "record":  # a recorded series: evaluated with data in a promql_expr_test
        assert re.search(rf"expr: .*\b{re.escape(rule)}\b", suites), rule
    else:
        assert f"alertname: {rule}" in suites
