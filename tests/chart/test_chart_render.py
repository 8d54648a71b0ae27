"""Every profile in chart/ci lints strictly, renders, and every rendered object is valid."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from classifier_kube.validate import check_metadata

from .chart_support import CHART, CRDS, K8S_MINOR, PROFILES, UNCOMPILABLE_CEL_RULES, one, profile_name, run, tool

CORE_API_VERSIONS = {
    "v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1",
}  # fmt: skip
EXPECTED_PROFILES = {
    "default", "gpu-spot-knative-canary", "standard-keda", "standard-hpa", "queue-worker", "canary-analysis",
    "standard-keda-http", "gpu-mig", "gpu-timeslicing",
    "istio-auth",
}  # fmt: skip


def test_every_expected_profile_exists():
    assert EXPECTED_PROFILES <= {profile_name(p) for p in PROFILES}


@pytest.mark.parametrize("profile", PROFILES, ids=profile_name)
def test_helm_lint_strict(profile):
    result = run([tool("helm"), "lint", "--strict", str(CHART), "-f", str(profile)])
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("profile", PROFILES, ids=profile_name)
def test_every_object_is_valid(profile, rendered, crd_validator, cel_tally):
    objects = rendered[profile_name(profile)]
    assert objects, "the profile renders nothing"
    failures = []
    for obj in objects:
        if obj["apiVersion"] in CORE_API_VERSIONS:
            try:
                kubernetes_validate.validate(obj, K8S_MINOR, strict=True)
            except kubernetes_validate.ValidationError as e:
                failures.append(f"{obj['kind']} {obj['metadata']['name']}: {e.message}")
            failures += check_metadata(obj)
        else:
            assert crd_validator.knows(obj), f"{obj['apiVersion']} {obj['kind']} has no CRD in {CRDS}"
            result = crd_validator.validate(obj)
            failures += result.errors
            failures += [f"not evaluated: {r}" for r in result.unchecked_cel if not _justified(r)]
            cel_tally.add(result)
    assert not failures, "\n".join(failures)


def _justified(unchecked: str) -> bool:
    return any(f": {rule} (" in unchecked for rule in UNCOMPILABLE_CEL_RULES)


def test_names_are_unique_per_kind(rendered):
    for profile, objects in rendered.items():
        keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
        assert len(keys) == len(set(keys)), f"{profile}: duplicate objects {keys}"


# ---------------------------------------------------------------- the validator itself catches mistakes


def _isvc(rendered):
    return copy.deepcopy(one(rendered["default"], "InferenceService"))


def test_validator_catches_a_misspelled_field(rendered, crd_validator):
    isvc = _isvc(rendered)
    assert crd_validator.validate(isvc).errors == []
    isvc["spec"]["predictor"]["minReplica"] = isvc["spec"]["predictor"].pop("minReplicas")
    errors = crd_validator.validate(isvc).errors
    assert any("minReplica" in e and "unexpected" in e for e in errors), errors


def test_validator_catches_a_misspelled_nested_container_field(rendered, crd_validator):
    isvc = _isvc(rendered)
    isvc["spec"]["predictor"]["containers"][0]["readinesProbe"] = {}
    errors = crd_validator.validate(isvc).errors
    assert any("readinesProbe" in e for e in errors), errors


def test_validator_rejects_a_float_quantity(rendered, crd_validator):
    isvc = _isvc(rendered)
    isvc["spec"]["predictor"]["containers"][0]["resources"]["requests"]["cpu"] = 0.5
    errors = crd_validator.validate(isvc).errors
    assert any("resources/requests/cpu" in e for e in errors), errors


def test_validator_checks_metadata(rendered, crd_validator):
    isvc = _isvc(rendered)
    isvc["metadata"]["name"] = "Bad_Name"
    isvc["metadata"]["labels"]["replicas"] = 3
    errors = crd_validator.validate(isvc).errors
    assert any("DNS-1123" in e for e in errors), errors
    assert any("replicas=3" in e for e in errors), errors


def test_validator_catches_a_wrong_enum_in_a_keda_object(rendered, crd_validator):
    so = copy.deepcopy(one(rendered["queue-worker"], "ScaledObject"))
    so["spec"]["triggers"][0]["authenticationRef"]["kind"] = "SecretAuthentication"
    assert crd_validator.validate(so).errors


def test_kubernetes_validate_is_strict():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "datta": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cm, K8S_MINOR, strict=True)


def test_rendered_yaml_has_no_float_quantities(rendered):
    """Quantities anywhere (requests, limits, sizeLimit, NodePool limits) are strings or integers."""

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in {"requests", "limits"} and isinstance(v, dict):
                    for name, q in v.items():
                        assert isinstance(q, (str, int)), f"{path}/{k}/{name} = {q!r}"
                if k == "sizeLimit":
                    assert isinstance(v, (str, int)), f"{path}/{k} = {v!r}"
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    for profile, objects in rendered.items():
        for obj in objects:
            walk(obj, f"{profile}:{obj['kind']}")


def test_rendered_output_is_plain_yaml(rendered):
    """Round-trips through YAML unchanged (no templating leftovers such as '<no value>')."""
    for profile, objects in rendered.items():
        text = yaml.safe_dump_all(objects)
        assert "<no value>" not in text and "%!" not in text, profile
