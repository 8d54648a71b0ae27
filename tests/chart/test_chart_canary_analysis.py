"""The canary analysis Job and its RBAC: off by default, least privilege when on, arguments the real CLI
accepts, and invalid combinations refused at render time."""

from __future__ import annotations

import pytest

from classifier_canary.cli import build_parser, config_from_args

from .chart_support import CHART, by_kind, one, render, render_error, run, tool

PROFILE = CHART / "ci" / "canary-analysis-values.yaml"
KINDS = ("Job", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
ON = ["canary.enabled=true", "canaryAnalysis.enabled=true", "canaryAnalysis.prometheusUrl=http://prom.monitoring:9090"]


def analysis_objects(objects):
    return [
        o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "canary-analysis"
    ]


def test_off_in_every_profile_but_its_own(rendered):
    for profile, objects in rendered.items():
        if profile != "canary-analysis":
            assert analysis_objects(objects) == [], profile
            assert by_kind(objects, "Job") == [] and by_kind(objects, "Role") == [], profile


def test_profile_renders_job_and_least_privilege_rbac(rendered):
    objects = rendered["canary-analysis"]
    isvc = one(objects, "InferenceService")["metadata"]["name"]
    assert sorted(o["kind"] for o in analysis_objects(objects)) == sorted(KINDS)
    role = one(objects, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "resourceNames": [isvc],
            "verbs": ["get", "patch"],
        },
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices/status"],
            "resourceNames": [isvc],
            "verbs": ["get"],
        },
    ]
    assert one(objects, "ClusterRole")["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": ["inferenceservices.serving.kserve.io"],
            "verbs": ["get"],
        },
    ]
    sa = one(objects, "Job")["spec"]["template"]["spec"]["serviceAccountName"]
    for binding in (one(objects, "RoleBinding"), one(objects, "ClusterRoleBinding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "ml"}]
    assert one(objects, "RoleBinding")["roleRef"]["name"] == role["metadata"]["name"]
    # The predictor's own ServiceAccount keeps no API access.
    predictor_sa = [o for o in by_kind(objects, "ServiceAccount") if o["metadata"]["name"] != sa]
    assert [o["automountServiceAccountToken"] for o in predictor_sa] == [False]


def test_job_is_not_a_hook_and_runs_once_with_the_charts_image(rendered):
    objects = rendered["canary-analysis"]
    job = one(objects, "Job")
    isvc = one(objects, "InferenceService")
    assert not any(k.startswith("helm.sh/hook") for k in job["metadata"].get("annotations", {}))
    assert job["metadata"]["name"] == f"{isvc['metadata']['name']}-canary-1"  # .Release.Revision
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is True
    (c,) = pod["containers"]
    assert c["image"] == isvc["spec"]["predictor"]["containers"][0]["image"]
    assert c["command"] == ["python", "-m", "predictor", "canary"]
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["runAsNonRoot"] is True


def test_job_args_parse_with_the_real_cli_and_carry_the_values(rendered):
    objects = rendered["canary-analysis"]
    (c,) = one(objects, "Job")["spec"]["template"]["spec"]["containers"]
    cfg = config_from_args(build_parser().parse_args(c["args"]))
    assert cfg.isvc == one(objects, "InferenceService")["metadata"]["name"] and cfg.namespace == "ml"
    assert cfg.prometheus_url == "http://prometheus-operated.monitoring:9090"
    assert cfg.steps == (10, 25, 50, 100) and cfg.step_interval_seconds == 300
    assert (cfg.max_error_ratio, cfg.max_shed_ratio, cfg.max_p95_ratio) == (0.01, 0.01, 1.25)
    assert (cfg.min_requests, cfg.max_failed_checks, cfg.max_no_data_checks) == (200, 2, 3)
    assert (cfg.expect_version, cfg.expect_dtype, cfg.log_format) == ("0.2.0", "float16", "json")
    assert cfg.crd == "auto" and cfg.skip_without_canary and cfg.ready_timeout_seconds == 600
    assert cfg.isvc_file is None and not cfg.dry_run


def test_quality_latency_and_outage_values_reach_the_cli():
    objects = render(set_values=[*ON])
    (c,) = one(objects, "Job")["spec"]["template"]["spec"]["containers"]
    cfg = config_from_args(build_parser().parse_args(c["args"]))
    assert (cfg.min_p95_increase_seconds, cfg.count_failed_checks, cfg.on_monitoring_outage) == (
        0.05,
        "consecutive",
        "rollback",
    )
    assert (cfg.max_class_divergence, cfg.max_confidence_shift, cfg.min_quality_predictions) == (0.1, 0.05, 200)
    assert not cfg.skip_live_quality and cfg.reference_dir is None
    assert "volumes" in one(objects, "Job")["spec"]["template"]["spec"]
    assert all(v["name"] != "reference" for v in one(objects, "Job")["spec"]["template"]["spec"]["volumes"])
    sets = [*ON, "canaryAnalysis.liveQuality=false", "canaryAnalysis.onMonitoringOutage=hold",
            "canaryAnalysis.countFailedChecks=total", "canaryAnalysis.minP95Increase=0s"]  # fmt: skip
    (c,) = one(render(set_values=sets), "Job")["spec"]["template"]["spec"]["containers"]
    cfg = config_from_args(build_parser().parse_args(c["args"]))
    assert cfg.skip_live_quality and cfg.on_monitoring_outage == "hold" and cfg.count_failed_checks == "total"
    assert cfg.min_p95_increase_seconds == 0


@pytest.mark.parametrize("source", ["configMap=ref-images", "persistentVolumeClaim=ref-claim"])
def test_reference_set_is_mounted_read_only_and_passed(source):
    ref = "canaryAnalysis.reference"
    sets = [
        *ON,
        f"{ref}.{source}",
        f"{ref}.path=set1",
        f"{ref}.labelsFile=labels.csv",
        f"{ref}.canaryUrl=http://c:8080",
    ]
    pod = one(render(set_values=sets), "Job")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    cfg = config_from_args(build_parser().parse_args(c["args"]))
    assert str(cfg.reference_dir) == "/reference/set1" and str(cfg.reference_labels) == "/reference/set1/labels.csv"
    assert cfg.canary_url == "http://c:8080" and cfg.stable_url is None
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "reference"]
    assert mount == {"name": "reference", "mountPath": "/reference", "readOnly": True}
    (volume,) = [v for v in pod["volumes"] if v["name"] == "reference"]
    kind, name = source.split("=")
    if kind == "configMap":
        assert volume["configMap"] == {"name": name}
    else:
        assert volume["persistentVolumeClaim"] == {"claimName": name, "readOnly": True}


def test_shipped_crd_without_the_cluster_role():
    objects = render(set_values=[*ON])
    assert by_kind(objects, "ClusterRole") == [] and by_kind(objects, "ClusterRoleBinding") == []
    (c,) = one(objects, "Job")["spec"]["template"]["spec"]["containers"]
    assert "--crd=shipped" in c["args"] and not any(a.startswith("--expect-") for a in c["args"])
    assert "ttlSecondsAfterFinished" not in one(objects, "Job")["spec"]


def test_names_follow_the_inferenceservice(rendered):
    objects = render(set_values=[*ON, "fullnameOverride=classifier", "canaryAnalysis.readClusterCrd=true"])
    assert one(objects, "Role")["rules"][0]["resourceNames"] == ["classifier"]
    (c,) = one(objects, "Job")["spec"]["template"]["spec"]["containers"]
    assert "--isvc=classifier" in c["args"]
    assert one(objects, "ClusterRole")["metadata"]["name"] == "ml-classifier-canary-crd"


def test_standard_mode_renders_the_job_too():
    objects = render(set_values=[*ON, "deploymentMode=Standard", "canary.image.tag=0.3.0"])
    assert one(objects, "Job") and one(objects, "InferenceService")["spec"]["canary"]


def test_long_names_fit():
    objects = render(set_values=[*ON, "canaryAnalysis.readClusterCrd=true", "fullnameOverride=" + "a" * 45])
    for obj in analysis_objects(objects):
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["canaryAnalysis.enabled=true", "canaryAnalysis.prometheusUrl=http://p:9090"], "needs canary.enabled=true"),
        (["canary.enabled=true", "canaryAnalysis.enabled=true"], "needs canaryAnalysis.prometheusUrl"),
        ([*ON, "monitoring.podMonitor.enabled=false"], "needs monitoring.podMonitor.enabled"),
        ([*ON, "canaryAnalysis.steps={10,5,100}"], "strictly increasing and end at 100"),
        ([*ON, "canaryAnalysis.steps={10,50}"], "strictly increasing and end at 100"),
        ([*ON, "canaryAnalysis.maxErrorRatio=2"], "maxErrorRatio"),
        ([*ON, "canaryAnalysis.stepInterval=ten"], "stepInterval"),
        ([*ON, "canaryAnalysis.prometheusUrl=prom:9090"], "prometheusUrl"),
        ([*ON, "canaryAnalysis.expectDtype=fp8"], "expectDtype"),
        ([*ON, "canaryAnalysis.onMonitoringOutage=wait"], "onMonitoringOutage"),
        ([*ON, "canaryAnalysis.countFailedChecks=some"], "countFailedChecks"),
        ([*ON, "canaryAnalysis.maxClassDivergence=2"], "maxClassDivergence"),
        ([*ON, "canaryAnalysis.reference.configMap=a", "canaryAnalysis.reference.persistentVolumeClaim=b"], "not both"),
        ([*ON, "canaryAnalysis.reference.labelsFile=l.csv"], "need reference.configMap or"),
        ([*ON, "canaryAnalysis.reference.canaryUrl=c:80"], "canaryUrl"),
    ],
)
def test_invalid_values_are_refused(sets, message):
    assert message in render_error(set_values=sets)


def test_notes_name_the_job_to_follow():
    cmd = [tool("helm"), "install", "demo", str(CHART), "--dry-run=client", "-n", "ml", "-f", str(PROFILE)]
    out = run(cmd).stdout
    notes = out[out.index("NOTES:") :]
    job = one(render([PROFILE]), "Job")["metadata"]["name"]
    assert f"kubectl -n ml logs -f job/{job}" in notes
    assert "steps the canary through 10%, 25%, 50%, 100% every 5m" in notes
