"""What each template renders, per mode and per toggle."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from classifier_kube.validate import invalid_labels

from .chart_support import CHART, CRDS, REPO_ROOT, by_kind, one, render

KNATIVE_FORBIDDEN_COMPONENT_FIELDS = {
    # KServe component fields that are not part of the pod spec Knative receives.
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling",
    "containerConcurrency", "timeout", "canaryTrafficPercent", "labels", "annotations",
    "deploymentStrategy",
}  # fmt: skip


def predictor(isvc):
    return isvc["spec"]["predictor"]


def container(component):
    (c,) = [c for c in component["containers"] if c["name"] == "kserve-container"]
    return c


def env(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def flags(args):
    return dict(a.removeprefix("--").split("=", 1) for a in args)


# ---------------------------------------------------------------- InferenceService basics


def test_default_isvc_runs_our_container_with_kserve_contract(rendered):
    isvc = one(rendered["default"], "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    c = container(predictor(isvc))
    e = env(c)
    assert e["STORAGE_URI"] == "hf://microsoft/resnet-50"
    assert e["PROTOCOL"] == "v2"
    f = flags(c["args"])
    assert f["model_dir"] == "/mnt/models" and f["model_name"] == "classifier" and f["http_port"] == "8080"
    assert c["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"


def test_probes_hit_the_model_ready_and_live_endpoints(rendered):
    for profile, objects in rendered.items():
        c = container(predictor(one(objects, "InferenceService")))
        assert c["readinessProbe"]["httpGet"] == {"path": "/v2/models/classifier/ready", "port": 8080}, profile
        assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}, profile
        assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live", profile


def test_model_name_flows_into_flag_and_readiness_path():
    isvc = one(render(set_values=["model.name=resnet50"]), "InferenceService")
    c = container(predictor(isvc))
    assert flags(c["args"])["model_name"] == "resnet50"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/models/resnet50/ready"


def test_restricted_security_context_and_writable_emptydirs(rendered):
    for profile, objects in rendered.items():
        p = predictor(one(objects, "InferenceService"))
        sc = container(p)["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, profile
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        # Knative refuses a pod-level securityContext without kubernetes.podspec-securitycontext: the
        # container's carries seccomp there (tests/chart/test_knative_features.py)
        if profile.startswith("standard"):
            assert p["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert p["automountServiceAccountToken"] is False
        # every writable mount is an emptyDir (read-only ones: the admin token Secret of istio-auth)
        mounts = {m["mountPath"]: m["name"] for m in container(p)["volumeMounts"] if not m.get("readOnly")}
        volumes = {v["name"]: v for v in p["volumes"]}
        assert {"/tmp", "/var/cache/classifier"} <= set(mounts)
        assert all("emptyDir" in volumes[n] for n in mounts.values())
        e = env(container(p))
        assert e["HF_HOME"].startswith("/var/cache/classifier/")
        assert flags(container(p)["args"])["cache_dir"].startswith("/var/cache/classifier/")


def test_standard_mode_drains_with_prestop_and_sized_grace_period(rendered):
    p = predictor(one(rendered["standard-hpa"], "InferenceService"))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    prestop = int(container(p)["lifecycle"]["preStop"]["exec"]["command"][1])
    assert prestop == values["drain"]["preStopSleepSeconds"] > 0
    request_timeout_s = values["settings"]["request_timeout_ms"] / 1000
    assert p["terminationGracePeriodSeconds"] >= prestop + request_timeout_s + 5


def test_grace_period_follows_request_timeout():
    isvc = one(
        render(set_values=["deploymentMode=Standard", "settings.request_timeout_ms=120500", "drain.marginSeconds=5"]),
        "InferenceService",
    )
    assert predictor(isvc)["terminationGracePeriodSeconds"] == 15 + 121 + 5


def test_knative_mode_uses_revision_timeout_instead_of_lifecycle(rendered):
    """Knative refuses lifecycle and terminationGracePeriodSeconds; its revision timeout sizes the drain."""
    p = predictor(one(rendered["default"], "InferenceService"))
    assert "lifecycle" not in container(p) and "terminationGracePeriodSeconds" not in p
    assert p["timeout"] >= 30 + 15


@pytest.mark.parametrize("profile", ["default", "gpu-spot-knative-canary", "queue-worker"])
def test_knative_predictor_fits_knatives_pod_spec(profile, rendered, crd_validator):
    """The pod part of a Knative-mode predictor validates against Knative Service's own (closed) schema."""
    ksvc_schema = crd_validator.schemas[("serving.knative.dev/v1", "Service")]
    pod_schema = ksvc_schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]
    import jsonschema

    pod = {k: v for k, v in predictor(one(rendered[profile], "InferenceService")).items()}
    pod = {k: v for k, v in pod.items() if k not in KNATIVE_FORBIDDEN_COMPONENT_FIELDS}
    errors = [e.message for e in jsonschema.Draft4Validator(pod_schema).iter_errors(pod)]
    assert not errors, errors
    assert len(pod["containers"]) == 1 and len(pod["containers"][0]["ports"]) == 1


def test_knative_pod_spec_check_catches_lifecycle(rendered, crd_validator):
    ksvc_schema = crd_validator.schemas[("serving.knative.dev/v1", "Service")]
    pod_schema = ksvc_schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]
    import jsonschema

    pod = copy.deepcopy(predictor(one(rendered["standard-hpa"], "InferenceService")))
    pod = {k: v for k, v in pod.items() if k not in KNATIVE_FORBIDDEN_COMPONENT_FIELDS}
    errors = [e.message for e in jsonschema.Draft4Validator(pod_schema).iter_errors(pod)]
    assert any("lifecycle" in e for e in errors) and any("terminationGracePeriodSeconds" in e for e in errors)


# ---------------------------------------------------------------- names and labels


def test_names_follow_fullname_override(rendered):
    objects = rendered["standard-keda"]  # fullnameOverride: classifier
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("InferenceService", "classifier") in names
    assert ("PodDisruptionBudget", "classifier-predictor") in names
    assert ("PodMonitor", "classifier-predictor") in names
    assert ("ConfigMap", "classifier-dashboard") in names
    for o in objects:
        assert o["metadata"]["name"].startswith("classifier"), o["metadata"]["name"]


def test_default_names_are_the_release_name():
    """`helm install classifier ./chart` -> InferenceService `classifier` (what `kubectl patch` expects)."""
    objects = render(release="classifier")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("InferenceService", "classifier") in names
    assert ("PodMonitor", "classifier-predictor") in names and ("PrometheusRule", "classifier") in names
    assert one(render(release="image-classifier-eu"), "InferenceService")["metadata"]["name"] == "image-classifier-eu"
    assert (
        one(render(release="prod", set_values=["nameOverride=clf"]), "InferenceService")["metadata"]["name"] == "prod"
    )


def test_long_names_leave_room_for_kserve_suffixes():
    isvc = one(render(release="r" * 53), "InferenceService")
    assert len(isvc["metadata"]["name"]) <= 45


def test_selector_labels_never_include_the_version(rendered):
    for profile, objects in rendered.items():
        isvc = one(objects, "InferenceService")
        assert "app.kubernetes.io/version" not in predictor(isvc)["labels"], profile
        assert not invalid_labels(predictor(isvc)["labels"])
        for pdb in by_kind(objects, "PodDisruptionBudget"):
            assert "app.kubernetes.io/version" not in pdb["spec"]["selector"]["matchLabels"]
        for dep in by_kind(objects, "Deployment"):
            assert "app.kubernetes.io/version" not in dep["spec"]["selector"]["matchLabels"]


# ---------------------------------------------------------------- autoscaling per mode


def test_knative_uses_kpa_on_concurrency(rendered):
    p = predictor(one(rendered["default"], "InferenceService"))
    assert p["scaleMetric"] == "concurrency" and p["scaleTarget"] == 32
    assert "autoScaling" not in p


def test_knative_allows_scale_to_zero(rendered):
    isvc = one(rendered["gpu-spot-knative-canary"], "InferenceService")
    assert predictor(isvc)["minReplicas"] == 0


def test_standard_hpa(rendered):
    isvc = one(rendered["standard-hpa"], "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
    p = predictor(isvc)
    assert (p["scaleMetric"], p["scaleMetricType"], p["scaleTarget"]) == ("cpu", "Utilization", 60)
    assert "nvidia.com/gpu" not in container(p)["resources"]["limits"]


def test_standard_keda_external_prometheus_triggers(rendered):
    isvc = one(rendered["standard-keda"], "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    p = predictor(isvc)
    assert "scaleMetric" not in p, "KServe rejects scaleMetric together with KEDA"
    metrics = p["autoScaling"]["metrics"]
    queries = [m["external"]["metric"]["query"] for m in metrics]
    assert all(m["type"] == "External" and m["external"]["metric"]["backend"] == "prometheus" for m in metrics)
    assert {m["external"]["metric"]["serverAddress"] for m in metrics} == {"http://prometheus-operated.monitoring:9090"}
    assert any("classifier_queue_depth" in q for q in queries)
    assert any("DCGM_FI_DEV_GPU_UTIL" in q for q in queries)
    assert all(isinstance(m["external"]["target"]["value"], str) for m in metrics)


def test_keda_gpu_trigger_can_be_turned_off(rendered):
    objects = render(
        [CHART / "ci" / "standard-keda-values.yaml"],
        ["autoscaling.standard.keda.gpuUtilizationTarget=0"],
    )
    metrics = predictor(one(objects, "InferenceService"))["autoScaling"]["metrics"]
    assert len(metrics) == 1 and "classifier_queue_depth" in metrics[0]["external"]["metric"]["query"]


# ---------------------------------------------------------------- canary placement per mode


def test_knative_canary_uses_canary_traffic_percent(rendered):
    isvc = one(rendered["gpu-spot-knative-canary"], "InferenceService")
    assert predictor(isvc)["canaryTrafficPercent"] == 10
    assert "canary" not in isvc["spec"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"


def test_standard_canary_uses_spec_canary(rendered):
    isvc = one(rendered["standard-keda"], "InferenceService")
    assert "canaryTrafficPercent" not in predictor(isvc)
    (canary,) = isvc["spec"]["canary"]
    assert canary["trafficPercent"] == 20
    c = container(canary["predictor"])
    assert c["image"].endswith(":0.2.0")
    assert container(predictor(isvc))["image"].endswith(":0.1.0")
    assert canary["predictor"]["labels"]["image-classifier.io/track"] == "canary"
    assert predictor(isvc)["labels"]["image-classifier.io/track"] == "stable"
    assert canary["predictor"]["minReplicas"] == canary["predictor"]["maxReplicas"] == 1
    # the canary gets the same probes, drain and placement as the stable predictor
    assert c["readinessProbe"] == container(predictor(isvc))["readinessProbe"]
    assert canary["predictor"]["tolerations"] == predictor(isvc)["tolerations"]


def test_no_canary_by_default(rendered):
    isvc = one(rendered["default"], "InferenceService")
    assert "canaryTrafficPercent" not in predictor(isvc) and "canary" not in isvc["spec"]


# ---------------------------------------------------------------- spot, nodes, PDB


SPOT_AFFINITY = {
    "weight": 100,
    "preference": {"matchExpressions": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]},
}


def spot_placed(pod):
    prefs = pod.get("affinity", {}).get("nodeAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
    tolerated = any(t.get("key") == "karpenter.sh/capacity-type" for t in pod.get("tolerations", []))
    return SPOT_AFFINITY in prefs and tolerated


def test_spot_placement_where_spot_is_on(rendered):
    for profile in ["gpu-spot-knative-canary", "standard-keda", "queue-worker"]:
        isvc = one(rendered[profile], "InferenceService")
        assert spot_placed(predictor(isvc)), profile
        for canary in isvc["spec"].get("canary", []):
            assert spot_placed(canary["predictor"]), profile
        for dep in by_kind(rendered[profile], "Deployment"):
            assert spot_placed(dep["spec"]["template"]["spec"]), f"{profile} worker"
    for profile in ["default", "standard-hpa"]:
        p = predictor(one(rendered[profile], "InferenceService"))
        assert "affinity" not in p and not spot_placed(p), profile


def test_spot_affinity_is_preferred_never_required(rendered):
    p = predictor(one(rendered["gpu-spot-knative-canary"], "InferenceService"))
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in p["affinity"]["nodeAffinity"]


def test_gpu_toleration_follows_gpu(rendered):
    # Knative with kubernetes.podspec-tolerations (the default, a stock Knative, leaves it out)
    gpu = predictor(one(rendered["gpu-spot-knative-canary"], "InferenceService"))
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    gpu = predictor(one(render(set_values=["deploymentMode=Standard"]), "InferenceService"))
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    assert "tolerations" not in predictor(one(rendered["default"], "InferenceService"))
    cpu = predictor(one(rendered["standard-hpa"], "InferenceService"))
    assert "tolerations" not in cpu


def test_topology_spread_selects_predictor_pods(rendered):
    p = predictor(one(rendered["gpu-spot-knative-canary"], "InferenceService"))  # declares the Knative flag
    keys = [t["topologyKey"] for t in p["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    for t in p["topologySpreadConstraints"]:
        assert t["labelSelector"]["matchLabels"].items() <= p["labels"].items()
    p = predictor(
        one(render(set_values=["deploymentMode=Standard", "topologySpread.enabled=false"]), "InferenceService")
    )
    assert "topologySpreadConstraints" not in p


def test_pdb_only_in_standard_mode(rendered):
    assert by_kind(rendered["default"], "PodDisruptionBudget") == []
    assert by_kind(rendered["gpu-spot-knative-canary"], "PodDisruptionBudget") == []
    pdb = one(rendered["standard-hpa"], "PodDisruptionBudget")
    p = predictor(one(rendered["standard-hpa"], "InferenceService"))
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= p["labels"].items()
    assert by_kind(render(set_values=["deploymentMode=Standard", "pdb.enabled=false"]), "PodDisruptionBudget") == []


def test_karpenter_nodepool_and_nodeclass(rendered):
    objects = rendered["gpu-spot-knative-canary"]
    pool, nodeclass = one(objects, "NodePool"), one(objects, "EC2NodeClass")
    spec = pool["spec"]["template"]["spec"]
    assert spec["nodeClassRef"] == {
        "group": "karpenter.k8s.aws",
        "kind": "EC2NodeClass",
        "name": nodeclass["metadata"]["name"],
    }
    reqs = {r["key"]: r["values"] for r in spec["requirements"]}
    assert reqs["karpenter.sh/capacity-type"] == ["spot", "on-demand"]
    assert reqs["karpenter.k8s.aws/instance-family"] == ["g5", "g6", "g6e"]
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in spec["taints"]
    assert pool["spec"]["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    assert pool["spec"]["disruption"]["budgets"] == [{"nodes": "10%"}]
    assert nodeclass["spec"]["role"] == "KarpenterNodeRole-prod"
    assert nodeclass["spec"]["metadataOptions"]["httpTokens"] == "required"


def test_nodepool_can_use_an_existing_nodeclass():
    objects = render(
        set_values=[
            "karpenter.nodePool.enabled=true",
            "karpenter.nodePool.nodeClassName=default",
            "knative.features={kubernetes.podspec-tolerations}",  # the predictor tolerates the pool's GPU taint
        ]
    )
    assert one(objects, "NodePool")["spec"]["template"]["spec"]["nodeClassRef"]["name"] == "default"
    assert by_kind(objects, "EC2NodeClass") == []


# ---------------------------------------------------------------- optional resources: disabled renders nothing


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["monitoring.podMonitor.enabled=false"], "PodMonitor"),
        (["monitoring.prometheusRule.enabled=false"], "PrometheusRule"),
        (["monitoring.dashboard.enabled=false"], "ConfigMap"),
        (["serviceAccount.create=false"], "ServiceAccount"),
        ([], "NodePool"),
        ([], "EC2NodeClass"),
        ([], "Deployment"),
        ([], "ScaledObject"),
        ([], "TriggerAuthentication"),
        (["deploymentMode=Standard", "pdb.enabled=false"], "PodDisruptionBudget"),
    ],
)
def test_disabled_optional_resource_renders_nothing(values, kind):
    objects = render(set_values=values)
    assert by_kind(objects, kind) == [], f"{kind} rendered with {values}"
    assert one(objects, "InferenceService")


def test_existing_service_account_is_used_when_not_created():
    objects = render(set_values=["serviceAccount.create=false", "serviceAccount.name=ml-runner"])
    assert predictor(one(objects, "InferenceService"))["serviceAccountName"] == "ml-runner"


def test_worker_podmonitor_needs_both_queue_and_monitoring(rendered):
    assert len(by_kind(rendered["queue-worker"], "PodMonitor")) == 2
    objects = render([CHART / "ci" / "queue-worker-values.yaml"], ["monitoring.podMonitor.enabled=false"])
    assert by_kind(objects, "PodMonitor") == []


def test_image_digest_wins_over_tag():
    digest = "sha256:" + "a" * 64
    isvc = one(render(set_values=[f"image.digest={digest}", "image.tag=9.9"]), "InferenceService")
    assert container(predictor(isvc))["image"] == f"ghcr.io/example/image-classifier@{digest}"


# ---------------------------------------------------------------- monitoring objects


def test_podmonitor_scrapes_metrics_and_labels_revision_and_isvc(rendered):
    objects = rendered["default"]
    pm = one(objects, "PodMonitor")
    p = predictor(one(objects, "InferenceService"))
    assert pm["spec"]["selector"]["matchLabels"].items() <= p["labels"].items()
    ep, proxy = pm["spec"]["podMetricsEndpoints"]
    assert ep["path"] == "/metrics" and ep["portNumber"] == 8080
    targets = {r["targetLabel"]: r["sourceLabels"] for r in ep["relabelings"]}
    assert "__meta_kubernetes_pod_label_serving_knative_dev_revision" in targets["revision"]
    assert targets["isvc"] == ["__meta_kubernetes_pod_label_serving_kserve_io_inferenceservice"]
    # Knative: queue-proxy's per-revision request metrics too, with the same labels (not the predictor's
    # move of its address to the metrics port)
    assert proxy["path"] == "/metrics" and proxy["portNumber"] == 9091
    assert proxy["relabelings"] == [r for r in ep["relabelings"] if r["targetLabel"] != "__address__"]


def test_standard_mode_podmonitor_has_no_queue_proxy_endpoint(rendered):
    (ep,) = one(rendered["standard-keda"], "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert ep["portNumber"] == 8080


def test_revision_relabel_regex_picks_knative_revision_else_track(rendered):
    """Apply the relabel rule's regex the way Prometheus does (fully anchored, RE2 syntax)."""
    ep = one(rendered["default"], "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    rule = next(r for r in ep["relabelings"] if r["targetLabel"] == "revision")
    regex = re.compile(f"^(?:{rule['regex']})$")

    def apply(*values):
        m = regex.match(rule["separator"].join(values))
        return re.sub(r"\$(\d)", lambda g: m.group(int(g.group(1))) or "", rule["replacement"])

    assert apply("demo-predictor-00002", "stable") == "demo-predictor-00002"
    assert apply("", "canary") == "canary"


def test_dashboard_configmap_for_grafana_sidecar(rendered):
    cm = one(rendered["default"], "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (name,) = cm["data"]
    shipped = (CHART / "dashboards" / "image-classifier.json").read_text().strip()
    assert cm["data"][name].strip() == shipped
    assert yaml.safe_load(cm["data"][name])["uid"] == "image-classifier"


def test_crds_live_in_the_repository():
    assert CRDS.is_relative_to(REPO_ROOT) and (CRDS / "SOURCES.md").is_file()


def test_baked_model_needs_no_storage_initializer():
    objects = render([CHART / "ci" / "queue-worker-values.yaml"], ["model.storageUri="])
    c = container(predictor(one(objects, "InferenceService")))
    assert "STORAGE_URI" not in env(c)
    worker = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in worker
    assert "model" not in {v["name"] for v in worker["volumes"]}


def test_worker_downloads_the_same_model(rendered):
    worker = one(rendered["queue-worker"], "Deployment")["spec"]["template"]["spec"]
    (init,) = worker["initContainers"]
    assert init["args"] == ["hf://microsoft/resnet-50", "/mnt/models"]
    mounts = {m["mountPath"]: m for m in worker["containers"][0]["volumeMounts"]}
    assert mounts["/mnt/models"]["readOnly"] is True


SHARED_POD_FIELDS = (
    "serviceAccountName", "automountServiceAccountToken", "imagePullSecrets", "priorityClassName",
    "terminationGracePeriodSeconds", "securityContext", "nodeSelector", "tolerations", "affinity",
)  # fmt: skip


def test_predictor_and_worker_pods_share_one_definition_of_their_common_fields():
    """Both pods come from one helper (image-classifier.podSpec): a pod-level value reaches both alike."""
    objects = render(
        [CHART / "ci" / "queue-worker-values.yaml"],
        [
            "deploymentMode=Standard",
            "autoscaling.minReplicas=1",
            "priorityClassName=inference",
            "imagePullSecrets[0].name=regcred",
            "nodeSelector.pool=gpu",
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Exists",
            "spot.enabled=true",
        ],
    )
    pod = predictor(one(objects, "InferenceService"))
    worker = one(objects, "Deployment")["spec"]["template"]["spec"]
    for field in SHARED_POD_FIELDS:
        assert field in pod and pod[field] == worker[field], field
    assert pod["priorityClassName"] == "inference" and pod["nodeSelector"] == {"pool": "gpu"}
    scratch = [v for v in pod["volumes"] if v["name"] in ("tmp", "cache")]
    assert scratch == [v for v in worker["volumes"] if v["name"] in ("tmp", "cache")] and len(scratch) == 2
