"""PromQL of the canary checks, built from the chart's recording rules.

:func:`recording_rules` writes the chart's ``revision:*`` recording rules (``chart/templates/
prometheusrule.yaml``) for any window; with a 5 minute window its output is exactly what the chart renders
(a test compares the two), so the tool judges what the dashboard and the alerts show. The tool evaluates
the rules' expressions itself with the window of each check (:func:`inline`), so the judgement follows
the step interval and needs no rule change in Prometheus. The shed (503) ratio and the client-error
ratio (4xx other than 499, a client that left) follow the error-ratio rule's shape; they are the tool's
own and not recorded by the chart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from classifier_canary.config import format_duration

BY_REVISION = "sum by (namespace, isvc, revision)"
BY_REVISION_CLASS = "sum by (namespace, isvc, revision, class)"


def selector(namespace: str, isvc: str) -> str:
    """The chart's label matchers for one InferenceService."""
    return f'namespace="{namespace}", isvc="{isvc}"'


@dataclass(frozen=True)
class RuleNames:
    """Recorded series names for one window (``5m`` -> ``revision:classifier_requests:rate5m``)."""

    window: str

    @property
    def requests(self) -> str:
        return f"revision:classifier_requests:rate{self.window}"

    @property
    def errors(self) -> str:
        return f"revision:classifier_request_errors:rate{self.window}"

    @property
    def error_ratio(self) -> str:
        return f"revision:classifier_request_error_ratio:rate{self.window}"

    @property
    def p95(self) -> str:
        return f"revision:classifier_request_duration_seconds:p95_{self.window}"

    @property
    def predictions(self) -> str:
        return f"revision:classifier_predictions:rate{self.window}"

    @property
    def confidence(self) -> str:
        return f"revision:classifier_prediction_confidence:mean{self.window}"

    @property
    def proxy_requests(self) -> str:
        return f"revision:queue_proxy_requests:rate{self.window}"

    @property
    def proxy_error_ratio(self) -> str:
        return f"revision:queue_proxy_request_error_ratio:rate{self.window}"

    @property
    def proxy_p95(self) -> str:
        return f"revision:queue_proxy_request_duration_seconds:p95_{self.window}"

    @property
    def restarts(self) -> str:
        return f"revision:kube_pod_container_restarts:increase{self.window}"

    @property
    def shed(self) -> str:
        return f"revision:classifier_request_shed:rate{self.window}"

    @property
    def shed_ratio(self) -> str:
        return f"revision:classifier_request_shed_ratio:rate{self.window}"

    @property
    def client_errors(self) -> str:
        return f"revision:classifier_request_client_errors:rate{self.window}"

    @property
    def client_error_ratio(self) -> str:
        return f"revision:classifier_request_client_error_ratio:rate{self.window}"


def recording_rules(namespace: str, isvc: str, window_seconds: float) -> dict[str, str]:
    """The chart's recording rules (name -> expression) over ``window_seconds``, in the chart's order."""
    sel = selector(namespace, isvc)
    w = format_duration(window_seconds)
    n = RuleNames(w)
    return {
        n.requests: f"{BY_REVISION} (rate(classifier_requests_total{{{sel}}}[{w}]))",
        n.errors: f'{BY_REVISION} (rate(classifier_requests_total{{{sel}, code=~"5.."}}[{w}])) '
        f"or 0 * {n.requests}{{{sel}}}",
        n.error_ratio: f"{n.errors}{{{sel}}} / {n.requests}{{{sel}}}",
        n.p95: "histogram_quantile(0.95, sum by (namespace, isvc, revision, le) "
        f"(rate(classifier_request_duration_seconds_bucket{{{sel}}}[{w}])))",
        n.predictions: f"{BY_REVISION_CLASS} (rate(classifier_predictions_total{{{sel}}}[{w}]))",
        n.confidence: f"{BY_REVISION} (rate(classifier_prediction_confidence_sum{{{sel}}}[{w}])) / "
        f"{BY_REVISION} (rate(classifier_prediction_confidence_count{{{sel}}}[{w}]))",
    }


def tool_rules(namespace: str, isvc: str, window_seconds: float) -> dict[str, str]:
    """The tool's own rules, in the chart's style: the shares of 503 (shed) and of 4xx answers (a client
    that left, 499, is nobody's error) per revision."""
    sel = selector(namespace, isvc)
    w = format_duration(window_seconds)
    n = RuleNames(w)

    def share(rate: str, ratio: str, codes: str) -> dict[str, str]:
        """Per-revision rate of the answers with ``codes`` (0 where there were none) and its share."""
        return {
            rate: f"{BY_REVISION} (rate(classifier_requests_total{{{sel}, {codes}}}[{w}])) "
            f"or 0 * {n.requests}{{{sel}}}",
            ratio: f"{rate}{{{sel}}} / {n.requests}{{{sel}}}",
        }

    return {
        **share(n.shed, n.shed_ratio, 'code="503"'),
        **share(n.client_errors, n.client_error_ratio, 'code=~"4..", code!="499"'),
    }


_RECORDED = re.compile(r"(revision:[a-z0-9_]+:[a-z0-9_]+)\{([^}]*)\}")


def inline(rules: dict[str, str], name: str) -> str:
    """``rules[name]`` with every reference to another rule replaced by that rule's expression.

    A reference carries the rule's own matchers (``{namespace=..., isvc=...}``), which its expression
    already applies, so it is replaced by the parenthesised expression.
    """

    def expand(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref not in rules:
            return m.group(0)
        return f"({inline(rules, ref)})"

    return _RECORDED.sub(expand, rules[name])


def outside_rules(namespace: str, isvc: str, window_seconds: float) -> dict[str, str]:
    """The revision seen from outside the predictor process: Knative queue-proxy's request counts and
    latencies (``revision_request_count``/``revision_request_latencies``, milliseconds; what clients got,
    proxy failures included), scraped by the chart's PodMonitor with the same labels; and container
    restarts of the revision's pods (kube-state-metrics, joined to a revision by the pod's
    ``classifier_model_info``)."""
    sel = selector(namespace, isvc)
    w = format_duration(window_seconds)
    n = RuleNames(w)
    proxy = n.proxy_requests
    ns = f'namespace="{namespace}"'
    return {
        proxy: f"{BY_REVISION} (rate(revision_request_count{{{sel}}}[{w}]))",
        n.proxy_error_ratio: f'({BY_REVISION} (rate(revision_request_count{{{sel}, response_code_class="5xx"}}[{w}])) '
        f"or 0 * {proxy}{{{sel}}}) / {proxy}{{{sel}}}",
        n.proxy_p95: "histogram_quantile(0.95, sum by (namespace, isvc, revision, le) "
        f"(rate(revision_request_latencies_bucket{{{sel}}}[{w}]))) / 1000",
        n.restarts: f"{BY_REVISION} (increase(kube_pod_container_status_restarts_total{{{ns}}}[{w}]) "
        "* on (namespace, pod) group_left (isvc, revision) "
        f"max by (namespace, pod, isvc, revision) (classifier_model_info{{{sel}}}))",
    }


@dataclass(frozen=True)
class CheckQueries:
    """The instant queries of one check, each grouped by revision."""

    requests_rate: str
    error_ratio: str
    shed_ratio: str
    client_error_ratio: str
    p95_seconds: str
    model_info: str
    names: RuleNames
    predictions_rate: str = ""
    """Top-1 answers per second by revision and class."""
    confidence_mean: str = ""
    proxy_requests_rate: str = ""
    proxy_error_ratio: str = ""
    proxy_p95_seconds: str = ""
    restarts: str = ""


def check_queries(namespace: str, isvc: str, window_seconds: float) -> CheckQueries:
    """Every query one check runs over a window of ``window_seconds``."""
    rules = (
        recording_rules(namespace, isvc, window_seconds)
        | tool_rules(namespace, isvc, window_seconds)
        | outside_rules(namespace, isvc, window_seconds)
    )
    n = RuleNames(format_duration(window_seconds))
    sel = selector(namespace, isvc)
    return CheckQueries(
        requests_rate=inline(rules, n.requests),
        error_ratio=inline(rules, n.error_ratio),
        shed_ratio=inline(rules, n.shed_ratio),
        client_error_ratio=inline(rules, n.client_error_ratio),
        p95_seconds=inline(rules, n.p95),
        model_info=f"max by (namespace, isvc, revision, version, dtype) (classifier_model_info{{{sel}}})",
        names=n,
        predictions_rate=inline(rules, n.predictions),
        confidence_mean=inline(rules, n.confidence),
        proxy_requests_rate=inline(rules, n.proxy_requests),
        proxy_error_ratio=inline(rules, n.proxy_error_ratio),
        proxy_p95_seconds=inline(rules, n.proxy_p95),
        restarts=inline(rules, n.restarts),
    )
