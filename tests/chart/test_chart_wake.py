"""Scale to zero that wakes (issue 24): who holds a request while no pod runs, and timeouts that fit a cold start.

Knative mode: the activator holds it within the revision timeout. Standard mode: the KEDA HTTP add-on's
interceptor (chart/ci/standard-keda-http-values.yaml, an HTTPScaledObject) holds it; any other Standard-mode
autoscaler at zero is refused (nothing would wake it). The queue worker wakes on the Redis stream's lag.
The cold-start budget is checked against the planner's own assumptions, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
import yaml

from classifier_plan.assumptions import Assumptions

from .chart_support import CHART, REPO_ROOT, by_kind, one, render, render_error

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
HTTP_PROFILE = CHART / "ci" / "standard-keda-http-values.yaml"
CAPACITY = REPO_ROOT / "classifier_plan" / "data" / "capacity"
HTTP_ZERO = [
    "deploymentMode=Standard",
    "autoscaling.minReplicas=0",
    "autoscaling.standard.autoscaler=httpAddon",
    "autoscaling.standard.httpAddon.hosts={classifier.ml.example.com}",
]


def predictor(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "InferenceService")["spec"]["predictor"]


def annotations(objects: list[dict[str, Any]]) -> dict[str, str]:
    return one(objects, "InferenceService")["metadata"]["annotations"]


# ---------------------------------------------------------------- the cold-start budget


def slowest_gpu_cold_start() -> tuple[float, int]:
    """The longest process cold start and its model's size among the planner's GPU capacity profiles."""
    worst = (0.0, 0)
    for path in CAPACITY.glob("*.json"):
        profile = json.loads(path.read_text())
        if profile.get("gpu"):
            worst = max(worst, (float(profile["pod_model"]["cold_start_s"]), int(profile["model"]["bytes"])))
    assert worst[0] > 0, f"no GPU capacity profile in {CAPACITY}"
    return worst


def test_the_cold_start_budget_covers_the_planners_wake_onto_a_new_node():
    """Worst case the planner simulates: Karpenter's batch, node launch, bind, image pull, storage
    initializer and download, the process's cold start, a startup and a readiness probe period, and the
    endpoints reaching the routers (classifier_plan/assumptions.py defaults, the slowest GPU profile)."""
    a = Assumptions()
    cold_start_s, model_bytes = slowest_gpu_cold_start()
    probes = VALUES["probes"]
    wake_s = (
        a.karpenter_batch_max_s
        + a.node_launch_s
        + a.scheduling_s
        + a.image_pull_s
        + a.storage_init_overhead_s
        + model_bytes / (a.model_download_mb_per_s * 1e6)
        + cold_start_s
        + probes["startup"]["periodSeconds"]
        + probes["readiness"]["periodSeconds"]
        + a.endpoint_propagation_s
    )
    budget = VALUES["autoscaling"]["coldStartSeconds"]
    assert wake_s <= budget <= wake_s + 15, f"planner wake {wake_s:.1f} s, chart budget {budget} s"


def test_the_documented_breakdown_adds_up_to_the_default():
    """values.yaml spells the budget out term by term ("... 10 + ... 90 + ... = 203"): the terms sum to
    the total it states, and the default rounds that total up."""
    text = (CHART / "values.yaml").read_text()
    comment = text[text.index("# -- Seconds from the first request at zero") : text.index("coldStartSeconds:")]
    terms, total = comment.split(" = ", 1)
    numbers = [int(n) for n in re.findall(r"(\d+)(?= \+|$)", terms.replace("\n  #", ""))]
    stated = int(re.match(r"\d+", total).group())
    assert len(numbers) == 8 and sum(numbers) == stated, (numbers, stated)
    assert stated <= VALUES["autoscaling"]["coldStartSeconds"] < stated + 15


# ---------------------------------------------------------------- Knative: the activator and the revision timeout


def test_knative_at_zero_sizes_the_revision_timeout_for_a_wake(rendered):
    p = predictor(rendered["gpu-spot-knative-canary"])  # minReplicas 0
    assert p["minReplicas"] == 0
    assert p["timeout"] == 210 + 30 + 10  # cold start + request deadline + drain margin


def test_knative_timeout_follows_the_cold_start_and_the_deadline():
    p = predictor(
        render(
            set_values=[
                "autoscaling.minReplicas=0",
                "autoscaling.coldStartSeconds=400",
                "settings.request_timeout_ms=45500",
            ]
        )
    )
    assert p["timeout"] == 400 + 46 + 10


def test_knative_without_scale_to_zero_keeps_the_drain_timeout(rendered):
    p = predictor(rendered["default"])
    assert p["minReplicas"] == 1
    assert p["timeout"] == 15 + 30 + 10  # preStop + max(deadline, grace period) + margin: no wake to wait for


def test_knative_refuses_a_wake_longer_than_the_clusters_revision_timeout_limit():
    err = render_error(set_values=["autoscaling.minReplicas=0", "autoscaling.coldStartSeconds=590"])
    sum_text = "autoscaling.coldStartSeconds (590) + settings.request_timeout_ms (30 s) + drain.marginSeconds (10)"
    assert f"{sum_text} = 630 s" in err
    assert "above autoscaling.knative.maxRevisionTimeoutSeconds (600" in err and "at least 630" in err


def test_a_cluster_with_a_higher_limit_is_accepted():
    p = predictor(
        render(
            set_values=[
                "autoscaling.minReplicas=0",
                "autoscaling.coldStartSeconds=590",
                "autoscaling.knative.maxRevisionTimeoutSeconds=900",
            ]
        )
    )
    assert p["timeout"] == 630


def test_the_limit_only_matters_at_zero():
    p = predictor(render(set_values=["autoscaling.coldStartSeconds=900"]))
    assert p["timeout"] == 55


# ---------------------------------------------------------------- Standard: only the HTTP add-on wakes


def test_http_add_on_profile_scales_the_kserve_deployment_from_zero(rendered):
    objects = rendered["standard-keda-http"]
    httpso = one(objects, "HTTPScaledObject")
    assert httpso["apiVersion"] == "http.keda.sh/v1alpha1"
    spec = httpso["spec"]
    # KServe's Standard mode names the Deployment and the Service <isvc>-predictor; the Service listens on 80
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "classifier-predictor",
        "service": "classifier-predictor",
        "port": 80,
    }
    assert spec["replicas"] == {"min": 0, "max": 6}
    assert spec["hosts"] == ["classifier.ml.example.com"]
    assert spec["scaledownPeriod"] == 300
    assert spec["scalingMetric"] == {"requestRate": {"targetValue": 50, "window": "1m", "granularity": "1s"}}
    # the interceptor holds a request for the whole cold start, then waits for the answer within its deadline
    assert spec["timeouts"] == {"conditionWait": "210s", "responseHeader": "40s"}
    assert predictor(objects)["minReplicas"] == 0


def test_http_add_on_takes_the_replicas_from_kserve(rendered):
    """`external`: KServe creates no HPA or ScaledObject and leaves spec.replicas alone (`none` would pin
    them to minReplicas, fighting the add-on); no KServe autoscaling fields are rendered."""
    objects = rendered["standard-keda-http"]
    assert annotations(objects)["serving.kserve.io/autoscalerClass"] == "external"
    p = predictor(objects)
    assert not {"scaleMetric", "scaleTarget", "autoScaling"} & set(p)
    assert not by_kind(objects, "ScaledObject") and not by_kind(objects, "HorizontalPodAutoscaler")


def test_http_add_on_concurrency_metric_and_path_prefixes():
    objects = render(
        set_values=[
            *HTTP_ZERO,
            "autoscaling.standard.httpAddon.metric=concurrency",
            "autoscaling.standard.httpAddon.target=16",
            "autoscaling.standard.httpAddon.pathPrefixes={/v2,/classify}",
            "autoscaling.coldStartSeconds=300",
            "settings.request_timeout_ms=60000",
        ]
    )
    spec = one(objects, "HTTPScaledObject")["spec"]
    assert spec["scalingMetric"] == {"concurrency": {"targetValue": 16}}
    assert spec["pathPrefixes"] == ["/v2", "/classify"]
    assert spec["timeouts"] == {"conditionWait": "300s", "responseHeader": "70s"}


def test_http_add_on_also_scales_a_predictor_that_keeps_one_pod():
    objects = render(set_values=[*HTTP_ZERO, "autoscaling.minReplicas=1"])
    assert one(objects, "HTTPScaledObject")["spec"]["replicas"]["min"] == 1


@pytest.mark.parametrize(
    "values",
    [
        [],  # Knative default
        ["deploymentMode=Standard"],  # hpa
        ["deploymentMode=Standard", "autoscaling.standard.autoscaler=none"],
        ["deploymentMode=Standard", "autoscaling.standard.httpAddon.hosts={a.example.com}"],  # hosts alone do nothing
    ],
)
def test_no_http_scaled_object_without_the_add_on(values):
    objects = render(set_values=values)
    assert not by_kind(objects, "HTTPScaledObject")
    assert annotations(objects).get("serving.kserve.io/autoscalerClass") != "external"


def test_http_add_on_needs_hosts():
    err = render_error(set_values=["deploymentMode=Standard", "autoscaling.standard.autoscaler=httpAddon"])
    assert "httpAddon.hosts is empty" in err and "keda-add-ons-http-interceptor-proxy.keda:8080" in err


def test_http_add_on_refuses_a_canary_it_would_starve():
    err = render_error(set_values=[*HTTP_ZERO, "canary.enabled=true", "canary.image.tag=0.2.0"])
    assert "canary.enabled with autoscaling.standard.autoscaler=httpAddon" in err


def test_http_add_on_with_network_policy_must_admit_the_interceptor():
    err = render_error(
        set_values=[*HTTP_ZERO, "networkPolicy.enabled=true", "networkPolicy.ingressNamespaces={istio-system}"]
    )
    assert "interceptor in namespace keda proxies every request" in err
    ok = render(set_values=[*HTTP_ZERO, "networkPolicy.enabled=true", "networkPolicy.ingressNamespaces={keda}"])
    assert one(ok, "HTTPScaledObject")


def test_http_add_on_admits_the_interceptor_through_the_network_policy():
    objects = render(
        [HTTP_PROFILE], ["networkPolicy.enabled=true", "networkPolicy.ingressNamespaces={keda,istio-system}"]
    )
    (policy,) = [p for p in by_kind(objects, "NetworkPolicy") if "predictor" in p["metadata"]["name"]]
    namespaces = {
        peer["namespaceSelector"]["matchLabels"].get("kubernetes.io/metadata.name")
        for rule in policy["spec"]["ingress"]
        for peer in rule.get("from", [])
        if "namespaceSelector" in peer
    }
    assert "keda" in namespaces, policy["spec"]["ingress"]


@pytest.mark.parametrize("bad", ["httpAddon.metric=rps", "httpAddon.target=0", "httpAddon.window=soon"])
def test_http_add_on_values_are_typed(bad):
    err = render_error(set_values=[*HTTP_ZERO, f"autoscaling.standard.{bad}"])
    assert "/autoscaling/standard/httpAddon/" in err


# ---------------------------------------------------------------- the queue worker wakes on the stream's lag


def test_queue_worker_scales_from_zero_on_the_consumer_group_lag(rendered):
    """Jobs wait in Redis while no worker runs; KEDA wakes the worker when the lag passes the activation
    threshold (redis-streams lagCount is the one mode of that scaler that can scale to zero)."""
    so = one(rendered["queue-worker"], "ScaledObject")
    assert so["spec"]["minReplicaCount"] == 0
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    assert meta["lagCount"] == "5" and meta["activationLagCount"] == "0"
    assert meta["stream"] == "image_processing_queue" and meta["consumerGroup"] == "classifiers"
    assert so["spec"]["scaleTargetRef"]["name"] == one(rendered["queue-worker"], "Deployment")["metadata"]["name"]


def test_cold_start_budget_is_typed():
    err = render_error(set_values=["autoscaling.coldStartSeconds=0"])
    assert "/autoscaling/coldStartSeconds" in err
    assert math.isclose(VALUES["autoscaling"]["knative"]["maxRevisionTimeoutSeconds"], 600)


# ---------------------------------------------------------------- the add-on's CRD checks what the chart renders


def test_the_http_scaled_object_is_checked_against_the_add_ons_crd(rendered, crd_validator):
    httpso = one(rendered["standard-keda-http"], "HTTPScaledObject")
    assert crd_validator.knows(httpso)
    result = crd_validator.validate(httpso)
    assert result.errors == [] and result.cel_evaluated >= 1  # scaleTargetRef: port or portName, not both

    typo = json.loads(json.dumps(httpso))
    typo["spec"]["scaleDownPeriod"] = typo["spec"].pop("scaledownPeriod")
    assert any("scaleDownPeriod" in e for e in crd_validator.validate(typo).errors)

    both = json.loads(json.dumps(httpso))
    both["spec"]["scaleTargetRef"]["portName"] = "http1"
    assert any("must define either the 'portName' or the 'port'" in e for e in crd_validator.validate(both).errors)


# ---------------------------------------------------------------- Knative's initial-scale and activation-scale


def test_initial_and_activation_scale_are_rendered_only_when_set(rendered):
    ann = predictor(rendered["gpu-spot-knative-canary"])["annotations"]
    assert not {"autoscaling.knative.dev/initial-scale", "autoscaling.knative.dev/activation-scale"} & set(ann)
    p = predictor(
        render(
            set_values=[
                "autoscaling.minReplicas=0",
                "autoscaling.knative.initialScale=0",
                "autoscaling.knative.activationScale=2",
            ]
        )
    )
    assert p["annotations"]["autoscaling.knative.dev/initial-scale"] == "0"  # 0 is a value, not "unset"
    assert p["annotations"]["autoscaling.knative.dev/activation-scale"] == "2"


def test_initial_and_activation_scale_are_bounded():
    err = render_error(set_values=["autoscaling.knative.activationScale=9", "autoscaling.knative.initialScale=5"])
    assert "autoscaling.knative.activationScale (9) is above autoscaling.maxReplicas (4)" in err
    assert "autoscaling.knative.initialScale (5) is above autoscaling.maxReplicas (4)" in err
    assert "/autoscaling/knative/activationScale" in render_error(set_values=["autoscaling.knative.activationScale=0"])


def test_activation_scale_is_what_knative_accepts():
    """Knative's webhook rejects activation-scale 1 and one below min-scale (annotation_validation.go)."""
    assert "/autoscaling/knative/activationScale" in render_error(set_values=["autoscaling.knative.activationScale=1"])
    err = render_error(set_values=["autoscaling.minReplicas=3", "autoscaling.knative.activationScale=2"])
    assert "autoscaling.knative.activationScale (2) is below autoscaling.minReplicas (3)" in err
    p = predictor(render(set_values=["autoscaling.minReplicas=2", "autoscaling.knative.activationScale=2"]))
    assert p["annotations"]["autoscaling.knative.dev/activation-scale"] == "2"
