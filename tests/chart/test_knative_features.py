"""Knative feature flags: every Knative-mode profile passes the Knative its `knative.features` describes
(a stock one for the default), checked against Knative's own Service CRD (classifier_kube/knative_features.py)."""

from __future__ import annotations

import copy

import pytest
import yaml

from classifier_kube.knative_features import ENABLED_BY_DEFAULT, check_predictor, gated_fields, knative_service

from .chart_support import CHART, PROFILES, one, profile_name, render, render_error

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA_FLAGS = set(
    yaml.safe_load((CHART / "values.schema.json").read_text())["properties"]["knative"]["properties"]["features"][
        "items"
    ]["enum"]
)


def declared_features(profile) -> list[str]:
    """knative.features as the profile sets it (else the chart default)."""
    values = yaml.safe_load(profile.read_text()) or {}
    return (values.get("knative") or {}).get("features", VALUES["knative"]["features"])


def knative_profiles() -> list:
    out = []
    for p in PROFILES:
        mode = (yaml.safe_load(p.read_text()) or {}).get("deploymentMode", VALUES["deploymentMode"])
        if mode == "Knative":
            out.append(p)
    return out


def test_the_crd_names_the_flags_the_chart_may_need(crd_validator):
    notes = gated_fields(crd_validator)
    assert notes["topologySpreadConstraints"] == "kubernetes.podspec-topologyspreadconstraints"
    assert notes["containers[].env[].valueFrom.fieldRef"] == "kubernetes.podspec-fieldref"
    assert notes["tolerations"] == "kubernetes.podspec-tolerations"
    assert notes["securityContext"] == "kubernetes.podspec-securitycontext"
    assert notes["volumes[].emptyDir"] in ENABLED_BY_DEFAULT
    assert notes["volumes[].persistentVolumeClaim"] == "kubernetes.podspec-persistent-volume-claim"
    # the chart's enum offers exactly flags the CRD knows, and persistent-volume-write, which gates no
    # field but a writable PVC mount (Knative's webhook checks the mount's readOnly)
    assert SCHEMA_FLAGS - {"kubernetes.podspec-persistent-volume-write"} <= set(notes.values())


def test_default_values_declare_a_stock_knative():
    assert VALUES["deploymentMode"] == "Knative" and VALUES["knative"]["features"] == []


@pytest.mark.parametrize("profile", knative_profiles(), ids=profile_name)
def test_knative_profiles_pass_the_knative_they_declare(profile, rendered, crd_validator):
    isvc = one(rendered[profile_name(profile)], "InferenceService")
    check = check_predictor(isvc, crd_validator)
    assert check.errors == [], check.errors
    assert check.refused(declared_features(profile)) == []
    assert set(declared_features(profile)) <= SCHEMA_FLAGS


def test_the_default_install_needs_nothing_beyond_stock_knative(rendered, crd_validator):
    check = check_predictor(one(rendered["default"], "InferenceService"), crd_validator)
    assert check.needs() == set(), check.gated
    assert check.refused([]) == []


def test_the_checker_refuses_what_the_chart_used_to_render(rendered, crd_validator):
    """Negative case: the pre-flag default pod (spread + downward API + pod securityContext) is refused."""
    isvc = copy.deepcopy(one(rendered["default"], "InferenceService"))
    pod = isvc["spec"]["predictor"]
    pod["topologySpreadConstraints"] = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname"}]
    pod["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    pod["containers"][0]["env"].append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    refused = check_predictor(isvc, crd_validator).refused([])
    assert any("topologySpreadConstraints" in m and "podspec-topologyspreadconstraints" in m for m in refused)
    assert any("valueFrom.fieldRef" in m and "kubernetes.podspec-fieldref" in m for m in refused)
    assert any("securityContext" in m for m in refused)
    assert check_predictor(isvc, crd_validator).refused(SCHEMA_FLAGS) == []


def test_the_checker_reports_fields_knative_does_not_have(rendered, crd_validator):
    isvc = copy.deepcopy(one(rendered["standard-hpa"], "InferenceService"))  # Standard: lifecycle, grace period
    errors = check_predictor(isvc, crd_validator).errors
    assert any("lifecycle" in e for e in errors) and any("terminationGracePeriodSeconds" in e for e in errors)


def test_component_fields_become_revision_fields(rendered):
    isvc = one(rendered["default"], "InferenceService")
    service, unplaced = knative_service(isvc)
    spec = service["spec"]["template"]["spec"]
    assert unplaced == []
    assert spec["timeoutSeconds"] == isvc["spec"]["predictor"]["timeout"]
    assert spec["containerConcurrency"] == isvc["spec"]["predictor"]["containerConcurrency"] > 0
    assert "minReplicas" not in spec and "scaleTarget" not in spec
    assert service["spec"]["template"]["metadata"]["labels"] == isvc["spec"]["predictor"]["labels"]


# ---------------------------------------------------------------- what the chart renders per flag


def _pod(objects):
    return one(objects, "InferenceService")["spec"]["predictor"]


def _env(pod):
    return {e["name"]: e for e in pod["containers"][0]["env"]}


def test_without_fieldref_the_namespace_is_a_value_and_the_name_the_hostname(rendered):
    env = _env(_pod(rendered["default"]))
    assert env["POD_NAMESPACE"] == {"name": "POD_NAMESPACE", "value": "ml"}
    assert "POD_NAME" not in env  # predictor.podinfo falls back to the hostname


def test_declared_flags_bring_the_gated_fields_back():
    flags = [
        "knative.features={kubernetes.podspec-fieldref,kubernetes.podspec-topologyspreadconstraints,"
        "kubernetes.podspec-tolerations,kubernetes.podspec-securitycontext}"
    ]
    pod = _pod(render(set_values=flags))
    assert _env(pod)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert [t["topologyKey"] for t in pod["topologySpreadConstraints"]] == VALUES["topologySpread"]["topologyKeys"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["securityContext"] == VALUES["podSecurityContext"]


def test_standard_mode_and_the_worker_ignore_knative_flags(rendered):
    pod = _pod(rendered["standard-hpa"])
    assert _env(pod)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "topologySpreadConstraints" in pod and "securityContext" in pod
    worker = one(rendered["queue-worker"], "Deployment")["spec"]["template"]["spec"]
    assert "valueFrom" in _env(worker)["POD_NAME"] and "topologySpreadConstraints" in worker


@pytest.mark.parametrize(
    ("values", "needs"),
    [
        (["spot.enabled=true"], "kubernetes.podspec-affinity and kubernetes.podspec-tolerations"),
        (["tolerations[0].key=dedicated", "tolerations[0].operator=Exists"], "kubernetes.podspec-tolerations"),
        (["nodeSelector.pool=gpu"], "kubernetes.podspec-nodeselector"),
        (["priorityClassName=high"], "kubernetes.podspec-priorityclassname"),
        (["podSecurityContext.fsGroup=10001"], "kubernetes.podspec-securitycontext"),
        (
            ["karpenter.nodePool.enabled=true", "karpenter.nodePool.nodeClassName=default"],
            "kubernetes.podspec-tolerations",
        ),
    ],
)
def test_choices_that_need_a_flag_fail_with_the_command_that_enables_it(values, needs):
    err = render_error(set_values=values)
    assert f"needs Knative's {needs}" in err, err
    assert "kubectl -n knative-serving patch configmap config-features --type merge -p" in err
    assert "add to knative.features" in err


def test_declaring_the_flag_lets_the_choice_render():
    objects = render(
        set_values=[
            "spot.enabled=true",
            "knative.features={kubernetes.podspec-affinity,kubernetes.podspec-tolerations}",
        ]
    )
    assert "affinity" in _pod(objects)
    assert render(set_values=["deploymentMode=Standard", "spot.enabled=true"])  # Standard mode: no flags needed


def test_an_unknown_flag_is_refused_by_the_schema():
    err = render_error(set_values=["knative.features={kubernetes.podspec-tolerationz}"])
    assert "knative" in err and "kubernetes.podspec-tolerations" in err
