"""PrometheusRule groups pass `promtool check rules` (and alert as intended under `promtool test rules`);
every dashboard query parses; metric names are ones the predictor, the worker or the GPU collector define."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from .chart_support import CHART, one, run, tool

DASHBOARD = json.loads((CHART / "dashboards" / "image-classifier.json").read_text())
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "${datasource}": "prometheus",
    "$namespace": "ml",
    "$isvc": "demo",
}


def contract_metrics() -> set[str]:
    """Metric names the code defines (the predictor's, the worker's, the DCGM-named GPU gauges)."""
    from prometheus_client import CollectorRegistry

    from predictor import gpu_metrics
    from predictor.metrics import PredictorMetrics
    from predictor.queue.metrics import WorkerMetrics

    registry = CollectorRegistry()
    PredictorMetrics(registry)
    WorkerMetrics(registry)
    names = {family.name for family in registry.collect()}
    # prometheus_client reports counters without their _total suffix.
    names |= {f"{n}_total" for n in names}
    return names | {gpu_metrics.UTIL, gpu_metrics.FB_USED, gpu_metrics.FB_FREE}


def metric_names(expr: str) -> set[str]:
    """Raw metric names in a PromQL expression (recording-rule names, level:metric:ops, are ours)."""
    expr = re.sub(r"[a-zA-Z_]*:[a-zA-Z_:0-9]+", "", expr)
    names = set(re.findall(r"\b(classifier_[a-z_]+|DCGM_FI_DEV_[A-Z_]+)\b", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            out.append((panel["title"], target["expr"]))
    return out


def substitute(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


@pytest.fixture(scope="module")
def rule_groups(rendered):
    return one(rendered["queue-worker"], "PrometheusRule")["spec"]["groups"]


@pytest.mark.parametrize("profile", ["default", "gpu-spot-knative-canary", "standard-keda", "queue-worker"])
def test_promtool_check_rules(profile, rendered, tmp_path):
    groups = one(rendered[profile], "PrometheusRule")["spec"]["groups"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = run([tool("promtool"), "check", "rules", str(path)])
    assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path):
    """The check above would catch a bad expression."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "sum(rate(x[5m])"}]}]}))
    assert run([tool("promtool"), "check", "rules", str(path)], check=False).returncode != 0


def test_required_alerts_exist(rule_groups):
    alerts = {r["alert"] for g in rule_groups for r in g["rules"] if "alert" in r}
    assert {
        "ClassifierHighLatencyP95",
        "ClassifierHighErrorRatio",
        "ClassifierQueueBacklogGrowing",
        "ClassifierGpuMemoryHigh",
        "ClassifierNoReadyReplicas",
        "ClassifierCanaryErrorRatioAboveStable",
        "ClassifierWorkerBacklogGrowing",
    } <= alerts
    for group in rule_groups:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in {"warning", "critical"}
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_thresholds_follow_values(tmp_path):
    from .chart_support import render

    values = tmp_path / "values.yaml"
    values.write_text("monitoring:\n  prometheusRule:\n    latencyP95Seconds: 0.25\n")
    groups = one(render([values]), "PrometheusRule")["spec"]["groups"]
    (latency,) = [r for g in groups for r in g["rules"] if r.get("alert") == "ClassifierHighLatencyP95"]
    assert latency["expr"].endswith("> 0.25")


def test_rule_metrics_are_contract_metrics(rule_groups):
    known = contract_metrics()
    for group in rule_groups:
        for rule in group["rules"]:
            assert metric_names(rule["expr"]) <= known, rule["expr"]


PROMTOOL_TEST = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # stable revision: 1 % errors; canary: 20 % errors
      - series: 'classifier_requests_total{SEL, revision="r1", code="200"}'
        values: '0+99x30'
      - series: 'classifier_requests_total{SEL, revision="r1", code="500"}'
        values: '0+1x30'
      - series: 'classifier_requests_total{SEL, revision="r2", code="200"}'
        values: '0+8x30'
      - series: 'classifier_requests_total{SEL, revision="r2", code="500"}'
        values: '0+2x30'
      - series: 'kube_deployment_spec_replicas{DEPLOYMENT}'
        values: '1x30'
      - series: 'kube_deployment_status_replicas_available{DEPLOYMENT}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: ClassifierCanaryErrorRatioAboveStable
        exp_alerts:
          - exp_labels: {severity: critical, namespace: ml, isvc: demo, revision: r2}
      - eval_time: 20m
        alertname: ClassifierNoReadyReplicas
        exp_alerts:
          - exp_labels: {severity: critical, namespace: ml}
"""


def test_promtool_alerts_fire_on_the_bad_revision(rendered, tmp_path):
    """`promtool test rules`: a canary failing 20 % vs a stable 1 % fires the canary alert for the canary only."""
    groups = json.loads(json.dumps(one(rendered["default"], "PrometheusRule")["spec"]["groups"]))
    for group in groups:  # annotations are prose; the test is about which alerts fire with which labels
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    test = PROMTOOL_TEST.replace("SEL", 'namespace="ml", isvc="demo", model="classifier"')
    test = test.replace("DEPLOYMENT", 'namespace="ml", deployment="demo-predictor-00002-deployment"')
    (tmp_path / "test.yaml").write_text(test)
    result = run([tool("promtool"), "test", "rules", str(tmp_path / "test.yaml")], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- dashboard


def test_dashboard_queries_parse_with_promtool(tmp_path):
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute(expr)} for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    assert len(rules) >= 15
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([tool("promtool"), "check", "rules", str(path)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_has_the_panels_operators_expect():
    titles = " | ".join(p["title"].lower() for p in DASHBOARD["panels"])
    for needle in [
        "requests/s", "queue length", "active pods", "gpu utilization", "gpu memory", "cpu",
        "p50 / p95 / p99", "success and error", "batch size",
    ]:  # fmt: skip
        assert needle in titles, needle


def test_dashboard_splits_every_panel_by_revision():
    for title, expr in dashboard_exprs():
        assert re.search(r"by \((revision|revision, [a-z]+)[,)]", expr), f"{title}: {expr}"


def test_dashboard_metrics_are_contract_metrics():
    known = contract_metrics()
    for title, expr in dashboard_exprs():
        assert metric_names(expr) <= known, f"{title}: {metric_names(expr) - known}"


def test_dashboard_variables_are_defined():
    names = {v["name"] for v in DASHBOARD["templating"]["list"]}
    used = set(re.findall(r"\$\{?([a-z_]+)", json.dumps(DASHBOARD["panels"]))) - {"__rate_interval"}
    assert used <= names, used - names


def test_keda_trigger_queries_parse_with_promtool(rendered, tmp_path):
    isvc = one(rendered["standard-keda"], "InferenceService")
    queries = [m["external"]["metric"]["query"] for m in isvc["spec"]["predictor"]["autoScaling"]["metrics"]]
    rules = [{"record": f"keda:query_{i}", "expr": q} for i, q in enumerate(queries)]
    path = tmp_path / "keda-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": rules}]}))
    result = run([tool("promtool"), "check", "rules", str(path)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for query in queries:
        assert metric_names(query) <= contract_metrics(), query
