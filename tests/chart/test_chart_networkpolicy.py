"""NetworkPolicies (networkPolicy.enabled, off by default): who may reach the predictor and the worker, and
what the worker may reach; every variant passes the Kubernetes schema."""

from __future__ import annotations

import kubernetes_validate
import pytest

from .chart_support import CHART, K8S_MINOR, by_kind, one, render, render_error

PROFILE = CHART / "ci" / "networkpolicy-values.yaml"


def policies(set_values: list[str] = (), profile=PROFILE) -> dict[str, dict]:
    """{component: NetworkPolicy}, each validated strictly against the Kubernetes schema."""
    found = {}
    for policy in by_kind(render([profile], list(set_values)), "NetworkPolicy"):
        kubernetes_validate.validate(policy, K8S_MINOR, strict=True)
        found[policy["metadata"]["labels"]["app.kubernetes.io/component"]] = policy
    return found


def namespaces(rule: dict) -> list[str]:
    return [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rule["from"]]


def ports(rule: dict) -> list[tuple[int, str]]:
    return [(p["port"], p["protocol"]) for p in rule["ports"]]


def test_off_by_default(rendered):
    for profile, objects in rendered.items():
        if profile not in ("networkpolicy", "istio-auth"):  # istio-auth: authentication plus NetworkPolicies
            assert by_kind(objects, "NetworkPolicy") == [], profile


def test_the_profile_renders_one_policy_per_component(rendered):
    assert sorted(p["metadata"]["name"] for p in by_kind(rendered["networkpolicy"], "NetworkPolicy")) == [
        "demo-predictor",
        "demo-worker",
    ]


def test_each_policy_selects_its_own_pods_only(rendered):
    objects = rendered["networkpolicy"]
    predictor_pod = one(objects, "InferenceService")["spec"]["predictor"]["labels"]
    worker_pod = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selected = {c: p["spec"]["podSelector"]["matchLabels"] for c, p in policies().items()}
    assert selected["predictor"].items() <= predictor_pod.items()
    assert not selected["predictor"].items() <= worker_pod.items()
    assert selected["worker"].items() <= worker_pod.items()
    assert not selected["worker"].items() <= predictor_pod.items()


def test_knative_predictor_ingress_only_from_gateway_knative_and_monitoring():
    predictor = policies()["predictor"]["spec"]
    assert predictor["policyTypes"] == ["Ingress"]
    requests, scrapes = predictor["ingress"]
    assert namespaces(requests) == ["istio-system", "knative-serving"]
    assert ports(requests) == [(8012, "TCP"), (8013, "TCP"), (9090, "TCP")]  # queue-proxy: http1, h2c, autoscaler
    # the predictor's metrics port and queue-proxy's (its per-revision request metrics, judged by the canary
    # analysis): metrics only, never the inference port
    assert namespaces(scrapes) == ["monitoring"] and ports(scrapes) == [(9095, "TCP"), (9091, "TCP")]


def test_standard_predictor_ingress_is_on_its_http_port_from_configured_namespaces():
    predictor = policies(
        [
            "deploymentMode=Standard",
            "networkPolicy.ingressNamespaces={envoy-gateway-system}",
            "networkPolicy.monitoringNamespace=observability",
        ]
    )["predictor"]["spec"]
    requests, scrapes = predictor["ingress"]
    assert namespaces(requests) == ["envoy-gateway-system"] and ports(requests) == [(8080, "TCP")]
    assert namespaces(scrapes) == ["observability"] and ports(scrapes) == [(9095, "TCP")]  # no queue-proxy


def test_worker_egress_only_to_redis_dns_and_the_model_download():
    worker = policies()["worker"]["spec"]
    assert worker["policyTypes"] == ["Ingress", "Egress"]
    redis, dns, download = worker["egress"]
    assert redis["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "redis"}}}]
    assert ports(redis) == [(6380, "TCP")]  # the port of queue.redisUrl
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert ports(dns) == [(53, "UDP"), (53, "TCP")]
    assert download == {"ports": [{"port": 443, "protocol": "TCP"}]}
    (scrapes,) = worker["ingress"]
    assert namespaces(scrapes) == ["monitoring"] and ports(scrapes) == [(9090, "TCP")]


def test_without_a_model_download_the_worker_reaches_only_redis_and_dns():
    worker = policies(["model.storageUri="])["worker"]["spec"]
    assert len(worker["egress"]) == 2


def test_worker_metrics_port_follows_the_worker_setting():
    (scrapes,) = policies(["queue.worker.settings.metrics_port=9400"])["worker"]["spec"]["ingress"]
    assert ports(scrapes) == [(9400, "TCP")]


@pytest.mark.parametrize(
    ("url", "extra", "expected"),
    [
        (
            "redis://redis-master:6379/0",
            [],
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml"}}},
        ),
        (
            "redis://cache.example.com:6379/0",
            ["networkPolicy.redis.namespace=cache", "networkPolicy.redis.podLabels.app=redis"],
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cache"}},
                "podSelector": {"matchLabels": {"app": "redis"}},
            },
        ),
        (
            "rediss://my.cache.amazonaws.com:6379/0",
            ["networkPolicy.redis.cidrs={10.20.0.0/16}"],
            {"ipBlock": {"cidr": "10.20.0.0/16"}},
        ),
    ],
)
def test_where_redis_is(url, extra, expected):
    (redis, *_) = policies([f"queue.redisUrl={url}", *extra])["worker"]["spec"]["egress"]
    assert redis["to"] == [expected]
    assert ports(redis) == [(6379, "TCP")]


def test_an_external_redis_without_a_destination_is_refused():
    err = render_error([PROFILE], ["queue.redisUrl=redis://cache.example.com:6379/0"])
    assert 'cannot tell where Redis "cache.example.com" runs' in err and "networkPolicy.redis.cidrs" in err


def test_without_queue_mode_only_the_predictor_policy_renders():
    assert list(policies(["queue.enabled=false"])) == ["predictor"]


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("networkPolicy.monitoringNamespace=Monitoring", "/networkPolicy/monitoringNamespace"),
        ("networkPolicy.ingressNamespaces=null", "missing property 'ingressNamespaces'"),  # no peers = everyone
        ("networkPolicy.ingressNamespaces={}", "/networkPolicy/ingressNamespaces"),
        ("networkPolicy.redis.cidrs={10.0.0.1}", "/networkPolicy/redis/cidrs/0"),
        ("networkPolicy.enable=true", "additional properties 'enable' not allowed"),
    ],
)
def test_bad_network_policy_values_are_refused(setting, where):
    assert where in render_error([PROFILE], [setting])
