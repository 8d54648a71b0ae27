"""The chart's front door: the monitoring namespace reaches only the metrics port, the PodMonitor scrapes it,
the admin token Secret reaches only the predictor, and the optional Istio authentication profile
(chart/ci/istio-auth-values.yaml); every object passes the Kubernetes schema or its upstream CRD."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from classifier_kube.validate import CrdValidator

from .chart_support import CHART, K8S_MINOR, by_kind, one, render, render_error

ISTIO = CHART / "ci" / "istio-auth-values.yaml"
NETWORK = CHART / "ci" / "networkpolicy-values.yaml"


def predictor_container(objects: list[dict]) -> dict:
    isvc = one(objects, "InferenceService")
    (c,) = [c for c in isvc["spec"]["predictor"]["containers"] if c["name"] == "kserve-container"]
    return c


def flags(container: dict) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in container["args"])


def predictor_policy(objects: list[dict]) -> dict:
    (policy,) = [p for p in by_kind(objects, "NetworkPolicy") if p["metadata"]["name"].endswith("-predictor")]
    kubernetes_validate.validate(policy, K8S_MINOR, strict=True)
    return policy


def allowed_from(policy: dict, namespace: str) -> list[int]:
    """Ports of the predictor that ``namespace`` may reach."""
    return [
        p["port"]
        for rule in policy["spec"]["ingress"]
        if any(
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == namespace
            for peer in rule["from"]
        )
        for p in rule["ports"]
    ]


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_the_monitoring_namespace_reaches_only_the_metrics_port(mode: str):
    objects = render([NETWORK], [f"deploymentMode={mode}"])
    policy = predictor_policy(objects)
    # the predictor's metrics port, and in Knative mode queue-proxy's metrics port (9091): never 8080
    assert allowed_from(policy, "monitoring") == ([9095, 9091] if mode == "Knative" else [9095])
    assert 8080 not in allowed_from(policy, "monitoring")
    assert flags(predictor_container(objects))["http_metrics_port"] == "9095"
    gateway = allowed_from(policy, "istio-system")
    assert 9095 not in gateway and gateway == ([8012, 8013, 9090] if mode == "Knative" else [8080])


def test_a_metrics_port_of_zero_puts_metrics_back_on_the_inference_port():
    objects = render([NETWORK], ["monitoring.metricsPort=0"])
    assert allowed_from(predictor_policy(objects), "monitoring") == [8080, 9091]  # 9091: queue-proxy's metrics
    assert flags(predictor_container(objects))["http_metrics_port"] == "0"
    (pm,) = [p for p in by_kind(objects, "PodMonitor") if p["metadata"]["name"].endswith("-predictor")]
    ep = pm["spec"]["podMetricsEndpoints"][0]
    assert "__address__" not in {r["targetLabel"] for r in ep["relabelings"]}


def test_the_podmonitor_scrapes_the_metrics_port_of_the_8080_target():
    """Prometheus applies the rules in order, fully anchored: the pod IP gets the metrics port."""
    ep = one(render(), "PodMonitor")["spec"]["podMetricsEndpoints"][0]  # [1]: queue-proxy's (Knative)
    assert ep["portNumber"] == 8080 and ep["path"] == "/metrics"
    rules = [r for r in ep["relabelings"] if r["targetLabel"] == "__address__"]

    def address(pod_ip: str) -> str:
        value = f"{pod_ip}:8080"
        for rule in rules:
            m = re.fullmatch(rule["regex"], pod_ip)
            if m:
                value = m.expand(rule["replacement"].replace("$", "\\"))
        return value

    assert address("10.1.2.3") == "10.1.2.3:9095"
    assert address("fd00::1") == "[fd00::1]:9095"


def test_metrics_port_collisions_are_refused():
    for port in (8080, 8012, 9090, 9091):
        assert "monitoring.metricsPort" in render_error(set_values=[f"monitoring.metricsPort={port}"])


def test_repository_routes_need_the_token_secret():
    err = render_error(set_values=["settings.enable_model_repository_routes=true"])
    assert "admin.tokenSecret.name" in err


def test_the_token_secret_is_mounted_into_the_predictor_only(crd_validator: CrdValidator):
    objects = render(
        [CHART / "ci" / "queue-worker-values.yaml"],
        [
            "settings.enable_model_repository_routes=true",
            "admin.tokenSecret.name=admin-token",
            "admin.tokenSecret.key=t",
        ],
    )
    c = predictor_container(objects)
    f = flags(c)
    assert f["enable_model_repository_routes"] == "true"
    assert f["admin_token_file"] == "/var/run/secrets/image-classifier/admin/t"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "admin-token")
    assert mount["readOnly"] is True and f["admin_token_file"].startswith(mount["mountPath"] + "/")
    predictor = one(objects, "InferenceService")["spec"]["predictor"]
    volume = next(v for v in predictor["volumes"] if v["name"] == "admin-token")
    assert volume["secret"] == {"secretName": "admin-token", "items": [{"key": "t", "path": "t"}]}
    assert crd_validator.validate(one(objects, "InferenceService")).errors == []
    worker = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert "admin-token" not in {v["name"] for v in worker["volumes"]}
    worker_flags = dict(a.removeprefix("--").split("=", 1) for a in worker["containers"][0]["args"])
    assert "enable_model_repository_routes" not in worker_flags and "admin_token_file" not in worker_flags


def test_by_default_no_admin_routes_and_no_istio_objects():
    objects = render()
    f = flags(predictor_container(objects))
    assert f["enable_model_repository_routes"] == "false" and "admin_token_file" not in f
    assert f["liveness_not_ready_grace_seconds"] == "30"
    assert not by_kind(objects, "AuthorizationPolicy") and not by_kind(objects, "RequestAuthentication")


def test_istio_profile_requires_a_jwt_and_leaves_monitoring_only_metrics(crd_validator: CrdValidator):
    objects = render([ISTIO])
    selector = one(objects, "InferenceService")["spec"]["predictor"]["labels"]
    ra, ap = one(objects, "RequestAuthentication"), one(objects, "AuthorizationPolicy")
    for obj in (ra, ap):
        assert crd_validator.knows(obj) and crd_validator.validate(obj).errors == []
        assert obj["spec"]["selector"]["matchLabels"].items() <= selector.items()
    assert ra["spec"]["jwtRules"][0]["issuer"] == "https://auth.example.com/"
    clients, monitoring, knative = ap["spec"]["rules"]
    assert ap["spec"]["action"] == "ALLOW"
    assert clients["from"] == [{"source": {"requestPrincipals": ["*"]}}]
    assert clients["to"] == [{"operation": {"notPaths": ["/v2/repository/*"]}}]
    assert monitoring["from"] == [{"source": {"namespaces": ["monitoring"]}}]
    assert monitoring["to"] == [{"operation": {"ports": ["9095"]}}]
    assert knative["to"] == [{"operation": {"paths": ["/healthz", "/metrics"]}}]
    standard = one(render([ISTIO], ["deploymentMode=Standard"]), "AuthorizationPolicy")
    assert len(standard["spec"]["rules"]) == 2


def test_the_crd_refuses_what_a_cluster_would(crd_validator: CrdValidator):
    ra = one(render([ISTIO]), "RequestAuthentication")
    ra["spec"]["jwtRules"][0]["jwksUri"] = "ftp://auth.example.com/jwks"  # its CEL rule: http(s) only
    assert any("http" in e for e in crd_validator.validate(ra).errors)


def test_istio_profile_needs_issuer_and_jwks():
    err = render_error([ISTIO], ["istio.authorizationPolicy.jwt.jwksUri="])
    assert "istio.authorizationPolicy.enabled needs" in err
