"""Queue mode (issue 5, chart part): worker Deployment, KEDA ScaledObject on redis-streams lag,
TriggerAuthentication from a Secret, spot placement shared with the predictor, PodMonitor."""

from __future__ import annotations

import math

from .chart_support import CHART, by_kind, one, render

QUEUE = CHART / "ci" / "queue-worker-values.yaml"


def worker_pod(objects):
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def test_worker_runs_the_worker_entry_point(rendered):
    objects = rendered["queue-worker"]
    dep = one(objects, "Deployment")
    assert dep["metadata"]["name"] == "demo-worker"
    (c,) = worker_pod(objects)["containers"]
    assert c["command"] == ["python", "-m", "predictor", "worker"]
    args = dict(a[2:].split("=", 1) for a in c["args"])
    assert args["redis_url"] == "redis://:$(REDIS_PASSWORD)@redis-master.redis.svc:6379/0"
    assert args["stream"] == "image_processing_queue" and args["consumer_group"] == "classifiers"
    assert c["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    env = {e["name"]: e for e in c["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis", "key": "redis-password"}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_worker_is_secure_and_drains(rendered):
    pod = worker_pod(rendered["queue-worker"])
    sc = pod["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_predictor_gets_the_jobs_endpoint_redis_url(rendered):
    isvc = one(rendered["queue-worker"], "InferenceService")
    args = isvc["spec"]["predictor"]["containers"][0]["args"]
    assert "--redis_url=redis://:$(REDIS_PASSWORD)@redis-master.redis.svc:6379/0" in args
    env = {e["name"] for e in isvc["spec"]["predictor"]["containers"][0]["env"]}
    assert "REDIS_PASSWORD" in env


def test_redis_url_without_password_secret_is_used_as_is():
    objects = render(set_values=["queue.enabled=true", "queue.redisUrl=redis://redis:6379/2"])
    args = worker_pod(objects)["containers"][0]["args"]
    assert "--redis_url=redis://redis:6379/2" in args
    assert by_kind(objects, "TriggerAuthentication") == []
    so = one(objects, "ScaledObject")
    assert "authenticationRef" not in so["spec"]["triggers"][0]
    assert so["spec"]["triggers"][0]["metadata"]["databaseIndex"] == "2"


def test_scaledobject_scales_on_consumer_group_lag_from_zero(rendered):
    objects = rendered["queue-worker"]
    so = one(objects, "ScaledObject")["spec"]
    assert so["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
    assert so["minReplicaCount"] == 0 and so["cooldownPeriod"] == 300
    (trigger,) = so["triggers"]
    assert trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    assert meta["lagCount"] == "5", "lagCount is the one redis-streams metric that scales to zero"
    assert "pendingEntriesCount" not in meta and "streamLength" not in meta
    assert meta["address"] == "redis-master.redis.svc:6379"
    assert (meta["stream"], meta["consumerGroup"]) == ("image_processing_queue", "classifiers")
    assert all(isinstance(v, str) for v in meta.values())
    auth = one(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "redis", "key": "redis-password"}]


def test_scale_up_takes_one_to_five_workers_within_about_30_seconds(rendered):
    """HPA arithmetic: a backlog above 5 per worker asks for 5 workers; the policies must allow 1 -> 5 in
    one period, and polling + one period must fit in ~30 s."""
    so = one(rendered["queue-worker"], "ScaledObject")["spec"]
    up = so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]
    assert up["stabilizationWindowSeconds"] == 0
    lag_per_worker = int(so["triggers"][0]["metadata"]["lagCount"])
    backlog = 5 * lag_per_worker + 1
    desired = min(math.ceil(backlog / lag_per_worker), so["maxReplicaCount"])
    assert desired >= 5
    replicas, elapsed = 1, so["pollingInterval"]
    while replicas < 5:
        allowed = []
        for p in up["policies"]:
            allowed.append(
                replicas + p["value"] if p["type"] == "Pods" else math.ceil(replicas * (1 + p["value"] / 100))
            )
        replicas = min(desired, max(allowed) if up.get("selectPolicy", "Max") == "Max" else min(allowed))
        elapsed += max(p["periodSeconds"] for p in up["policies"])
    assert elapsed <= 30, elapsed


def test_worker_shares_spot_placement_and_gpu(rendered):
    pod = worker_pod(rendered["queue-worker"])
    isvc = one(rendered["queue-worker"], "InferenceService")["spec"]["predictor"]
    assert pod["tolerations"] == isvc["tolerations"]
    assert pod["affinity"] == isvc["affinity"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_worker_podmonitor_scrapes_the_metrics_port(rendered):
    objects = rendered["queue-worker"]
    (pm,) = [p for p in by_kind(objects, "PodMonitor") if p["metadata"]["name"].endswith("-worker")]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pm["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_worker_without_keda_has_fixed_replicas():
    objects = render([QUEUE], ["queue.worker.keda.enabled=false", "queue.worker.replicas=3"])
    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    assert by_kind(objects, "ScaledObject") == [] and by_kind(objects, "TriggerAuthentication") == []


def test_worker_with_keda_leaves_replicas_to_keda(rendered):
    assert "replicas" not in one(rendered["queue-worker"], "Deployment")["spec"]


def test_tls_redis_enables_tls_in_keda():
    objects = render(set_values=["queue.enabled=true", "queue.redisUrl=rediss://redis:6380/0"])
    assert one(objects, "ScaledObject")["spec"]["triggers"][0]["metadata"]["enableTLS"] == "true"
