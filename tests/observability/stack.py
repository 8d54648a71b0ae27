"""The observability test stack: the chart's PromQL read from ``helm template``, a real Prometheus process,
and a stand-in DCGM exporter. Shared by the tests in this directory and ``scripts/render_dashboard.py``.

Scrape targets carry the labels Prometheus Operator's PodMonitors give them in a cluster (``namespace``,
``pod``, ``container``, and the chart's relabelings ``isvc``, ``revision``, ``track``), so the chart's
label matchers are exercised, not only its metric names.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.prometheus import (  # noqa: F401 - re-exported for the tests of this directory
    MissingTool,
    Prometheus,
    PromQLError,
    scrape_job,
    tool,
    wait_until,
)
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
PROFILES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "demo"
NAMESPACE = "ml"


# ---------------------------------------------------------------- the chart's queries


def profile_name(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


def render(values: Path | None = None, release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """``helm template`` the chart (with one ``chart/ci`` profile) and return its objects."""
    cmd = [tool("helm"), "template", release, str(CHART), "--namespace", namespace]
    if values is not None:
        cmd += ["-f", str(values)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@dataclass(frozen=True)
class Query:
    """One PromQL expression the chart ships."""

    kind: str  # panel | variable | record | alert | keda
    name: str  # panel title + refId, rule name, trigger
    expr: str  # as rendered (Grafana variables not yet substituted)
    isvc: str  # the InferenceService (= full name) of the profile that rendered it
    profiles: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}@{self.isvc}"


@dataclass
class ChartQueries:
    """Every PromQL expression of every profile, de-duplicated, plus the rule groups to load."""

    queries: list[Query] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)  # distinct rules, each with "isvc"
    identities: set[str] = field(default_factory=set)  # isvc names of profiles that ship PromQL
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # isvc -> dashboard JSON

    def of_kind(self, kind: str) -> list[Query]:
        return [q for q in self.queries if q.kind == kind]

    def rule_file(self) -> dict[str, Any]:
        """One Prometheus rule file holding every distinct rule (recording rules first)."""
        strip = [{k: v for k, v in r.items() if k != "isvc"} for r in self.rules]
        return {
            "groups": [
                {"name": "chart-recording", "rules": [r for r in strip if "record" in r]},
                {"name": "chart-alerts", "rules": [r for r in strip if "alert" in r]},
            ]
        }


def _walk(node: Any) -> Iterable[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def chart_queries(profiles: Iterable[Path] = PROFILES) -> ChartQueries:
    """Render each profile and collect Grafana panel targets and variable queries, PrometheusRule
    expressions and KEDA Prometheus trigger queries (InferenceService ``autoScaling`` metrics and
    ScaledObject triggers of type ``prometheus``)."""
    out = ChartQueries()
    seen: dict[tuple[str, str, str], Query] = {}
    rule_keys: set[tuple[str, str]] = set()

    def add(kind: str, name: str, expr: str, isvc: str, profile: str) -> None:
        key = (kind, name, expr)
        q = seen.get(key)
        if q is None:
            seen[key] = Query(kind, name, expr, isvc, (profile,))
        else:
            seen[key] = Query(kind, name, expr, isvc, (*q.profiles, profile))

    for path in profiles:
        profile = profile_name(path)
        objects = render(path)
        isvcs = [o["metadata"]["name"] for o in objects if o["kind"] == "InferenceService"]
        assert len(isvcs) == 1, f"{profile}: expected one InferenceService, got {isvcs}"
        isvc = isvcs[0]
        for obj in objects:
            kind = obj["kind"]
            if kind == "ConfigMap" and obj["metadata"]["name"].endswith("-dashboard"):
                for body in obj["data"].values():
                    dash = json.loads(body)
                    out.dashboards[isvc] = dash
                    out.identities.add(isvc)
                    for var in dash.get("templating", {}).get("list", []):
                        if var.get("type") == "query":
                            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                            add("variable", var["name"], q, isvc, profile)
                    for panel in dash["panels"]:
                        for t in panel.get("targets", []):
                            add("panel", f"{panel['title']} [{t.get('refId', '?')}]", t["expr"], isvc, profile)
            elif kind == "PrometheusRule":
                out.identities.add(isvc)
                for group in obj["spec"]["groups"]:
                    for rule in group["rules"]:
                        name = rule.get("record") or rule["alert"]
                        add("record" if "record" in rule else "alert", name, rule["expr"], isvc, profile)
                        key = (name, rule["expr"])
                        if key not in rule_keys:
                            rule_keys.add(key)
                            out.rules.append({**rule, "isvc": isvc})
            elif kind == "InferenceService":
                for node in _walk(obj["spec"]):
                    metric = node.get("metric") if isinstance(node.get("metric"), dict) else None
                    if metric and metric.get("backend") == "prometheus" and metric.get("query"):
                        out.identities.add(isvc)
                        add("keda", f"InferenceService {metric['query'].split('(')[1]}", metric["query"], isvc, profile)
            elif kind == "ScaledObject":
                for trig in obj["spec"].get("triggers", []):
                    if trig.get("type") == "prometheus":
                        out.identities.add(isvc)
                        add("keda", f"ScaledObject {obj['metadata']['name']}", trig["metadata"]["query"], isvc, profile)
    out.queries = list(seen.values())
    return out


GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")


def substitute(expr: str, isvc: str, namespace: str = NAMESPACE, rate_interval: str = "1m") -> str:
    """Replace Grafana variables as Grafana would for one InferenceService. ``$__rate_interval`` becomes
    ``rate_interval`` (Grafana: max(4 x scrape interval, step + scrape interval))."""
    values = {
        "__rate_interval": rate_interval,
        "__interval": "15s",
        "__range": rate_interval,
        "namespace": namespace,
        "isvc": isvc,
        "revision": ".*",
        "datasource": "prometheus",
    }

    def one(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise AssertionError(f"unknown Grafana variable ${m.group(1)} in {expr}")
        return values[m.group(1)]

    return GRAFANA_VARIABLE.sub(one, expr)


# ---------------------------------------------------------------- metric names in PromQL

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
    "bool", "inf", "nan", "atan2",
}  # fmt: skip
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """Metric names (recorded ``level:metric:ops`` names included) a PromQL expression selects."""
    if expr.startswith("label_values("):  # Grafana variable query: label_values(selector, label)
        expr = expr[len("label_values(") : expr.rindex(",")]
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery windows
    s = _CLAUSE.sub(" ", s)  # grouping and matching label lists
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", s):
        if m.group(2) or m.group(1).lower() in PROMQL_KEYWORDS:
            continue  # a function call or keyword
        names.add(m.group(1))
    return names


_SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})")


def selectors(expr: str) -> list[str]:
    """Every ``metric{matchers}`` vector selector of an expression, as written."""
    return sorted({m.group(1) + m.group(2) for m in _SELECTOR.finditer(expr)})


# ---------------------------------------------------------------- targets and Prometheus


@dataclass(frozen=True)
class Identity:
    """Labels a PodMonitor gives one predictor pod of one InferenceService."""

    isvc: str
    namespace: str = NAMESPACE

    @property
    def revision(self) -> str:
        return f"{self.isvc}-predictor-00001"

    @property
    def pod(self) -> str:
        return f"{self.revision}-deployment-5f7d9c-x2x4z"

    def labels(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "pod": self.pod,
            "container": "kserve-container",
            "isvc": self.isvc,
            "revision": self.revision,
            "track": "stable",
        }


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    out = []
    for series in result:
        v = float(series["value"][1])
        if v == v and v not in (float("inf"), float("-inf")):
            out.append(v)
    return out


# ---------------------------------------------------------------- stand-in DCGM exporter


class StandInGpuExporter:
    """An HTTP exporter serving the predictor's own GPU collector (``predictor.gpu_metrics``) fed with
    fixed device readings, for one pod: what the predictor exports on a GPU node, or what NVIDIA's DCGM
    exporter exports for that pod. Proves the GPU queries on a machine without a GPU."""

    def __init__(self, pod: str, namespace: str, util: float, used_mib: int, total_mib: int) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        from predictor.gpu_metrics import MIB, GpuCollector, GpuSample

        sample = GpuSample(0, f"GPU-{abs(hash(pod)) % 10**8:08d}-0000-4000-8000-000000000000", "NVIDIA A10G", util,
                           used_mib * MIB, (total_mib - used_mib) * MIB)  # fmt: skip
        self.registry = CollectorRegistry()
        self.registry.register(GpuCollector(lambda: [sample], pod=pod, namespace=namespace))
        self.port = free_port()
        self._server, self._thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def env_without_gpu_pins() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("POD_NAME", "POD_NAMESPACE")}
