"""CEL rules of the shipped KEDA and Karpenter CRDs, evaluated on the rendered objects: every rule compiles,
the chart's objects pass, objects breaking a real rule are refused with the rule's own message, and
transition rules run on updates (a `kubectl patch --local`, a `helm upgrade` to new values)."""

from __future__ import annotations

import copy

import pytest

from .chart_support import CHART, UNCOMPILABLE_CEL_RULES, kubectl_patch, one, render

SPOT = "gpu-spot-knative-canary"  # the profile with a NodePool and an EC2NodeClass


def test_every_rule_of_every_shipped_crd_compiles(crd_validator, cel_tally):
    uncompilable = crd_validator.uncompilable_rules()
    cel_tally.uncompilable_in_crds = uncompilable
    unexpected = [u for u in uncompilable if not any(f": {rule} (" in u for rule in UNCOMPILABLE_CEL_RULES)]
    assert unexpected == [], "\n".join(unexpected)


def test_the_crds_carry_the_rules_these_tests_rely_on(crd_validator):
    """Guards against a CRD update that drops the rules (the tests below would then prove nothing)."""
    from classifier_kube.validate import iter_rules

    counts = {
        kind: sum(1 for _ in iter_rules(schema))
        for (_, kind), schema in crd_validator.schemas.items()
        if kind in {"NodePool", "EC2NodeClass", "ScaledObject"}
    }
    assert counts["NodePool"] >= 15 and counts["EC2NodeClass"] >= 40 and counts["ScaledObject"] >= 1, counts


@pytest.mark.parametrize(
    ("profile", "kind", "at_least"),
    [(SPOT, "NodePool", 20), (SPOT, "EC2NodeClass", 20), ("queue-worker", "ScaledObject", 1)],
)
def test_rendered_objects_pass_their_rules(profile, kind, at_least, rendered, crd_validator):
    result = crd_validator.validate(one(rendered[profile], kind))
    assert result.errors == [] and result.unchecked_cel == [], result
    assert result.cel_evaluated >= at_least, result.cel_evaluated


def _errors(crd_validator, obj, old=None) -> str:
    return "\n".join(crd_validator.validate(obj, old=old).errors)


def _nodepool(rendered):
    return copy.deepcopy(one(rendered[SPOT], "NodePool"))


def _nodeclass(rendered):
    return copy.deepcopy(one(rendered[SPOT], "EC2NodeClass"))


# ---------------------------------------------------------------- real violations are refused


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("karpenter.sh/my-label", 'label domain "karpenter.sh" is restricted'),
        ("karpenter.sh/nodepool", 'label "karpenter.sh/nodepool" is restricted'),
        ("kubernetes.io/hostname", 'label "kubernetes.io/hostname" is restricted'),
        ("karpenter.k8s.aws/made-up", 'label domain "karpenter.k8s.aws" is restricted'),
    ],
)
def test_nodepool_requirement_on_a_restricted_label_is_refused(key, message, rendered, crd_validator):
    nodepool = _nodepool(rendered)
    nodepool["spec"]["template"]["spec"]["requirements"].append({"key": key, "operator": "Exists"})
    assert message in _errors(crd_validator, nodepool)


def test_nodepool_restricted_label_is_refused_in_the_node_template(rendered, crd_validator):
    nodepool = _nodepool(rendered)
    nodepool["spec"]["template"]["metadata"]["labels"]["karpenter.sh/nodepool"] = "other"
    errors = _errors(crd_validator, nodepool)
    assert 'label "karpenter.sh/nodepool" is restricted' in errors and "/spec/template/metadata/labels" in errors


def test_nodepool_requirement_in_without_values_is_refused(rendered, crd_validator):
    nodepool = _nodepool(rendered)
    nodepool["spec"]["template"]["spec"]["requirements"][1]["values"] = []
    assert "requirements with operator 'In' must have a value defined" in _errors(crd_validator, nodepool)


def test_nodepool_gt_requirement_needs_one_non_negative_integer(rendered, crd_validator):
    nodepool = _nodepool(rendered)
    req = {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["-1"]}
    nodepool["spec"]["template"]["spec"]["requirements"].append(req)
    assert "'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive integer value" in _errors(crd_validator, nodepool)
    req["values"] = ["4"]
    assert _errors(crd_validator, nodepool) == ""


def test_nodepool_min_values_above_the_values_given_is_refused(rendered, crd_validator):
    nodepool = _nodepool(rendered)
    nodepool["spec"]["template"]["spec"]["requirements"][1]["minValues"] = 5  # 3 families listed
    assert "must have at least that many values" in _errors(crd_validator, nodepool)


def test_nodepool_budget_schedule_without_duration_is_refused(rendered, crd_validator):
    nodepool = _nodepool(rendered)
    nodepool["spec"]["disruption"]["budgets"][0]["schedule"] = "0 9 * * mon-fri"
    assert "'schedule' must be set with 'duration'" in _errors(crd_validator, nodepool)
    nodepool["spec"]["disruption"]["budgets"][0]["duration"] = "8h"
    assert _errors(crd_validator, nodepool) == ""


def test_ec2nodeclass_role_and_instance_profile_together_are_refused(rendered, crd_validator):
    nodeclass = _nodeclass(rendered)
    nodeclass["spec"]["instanceProfile"] = "KarpenterNodeInstanceProfile"
    assert "must specify exactly one of ['role', 'instanceProfile']" in _errors(crd_validator, nodeclass)


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("ubuntu@latest", "family is not supported"),
        ("windows2022@v20240101", "windows families may only specify version 'latest'"),
        ("al2023", "'alias' is improperly formatted"),
    ],
)
def test_ec2nodeclass_bad_ami_alias_is_refused(alias, message, rendered, crd_validator):
    nodeclass = _nodeclass(rendered)
    nodeclass["spec"]["amiSelectorTerms"] = [{"alias": alias}]
    assert message in _errors(crd_validator, nodeclass)


def test_ec2nodeclass_alias_mixed_with_other_terms_is_refused(rendered, crd_validator):
    nodeclass = _nodeclass(rendered)
    nodeclass["spec"]["amiSelectorTerms"].append({"id": "ami-0123456789abcdef0"})
    assert "'alias' is mutually exclusive" in _errors(crd_validator, nodeclass)


def test_ec2nodeclass_restricted_tag_is_refused(rendered, crd_validator):
    nodeclass = _nodeclass(rendered)
    nodeclass["spec"]["tags"] = {"kubernetes.io/cluster/prod": "owned"}
    assert "tag contains a restricted tag matching kubernetes.io/cluster/" in _errors(crd_validator, nodeclass)


def test_ec2nodeclass_empty_selector_tag_value_is_refused(rendered, crd_validator):
    nodeclass = _nodeclass(rendered)
    nodeclass["spec"]["subnetSelectorTerms"][0]["tags"]["karpenter.sh/discovery"] = ""
    assert "empty tag keys or values aren't supported" in _errors(crd_validator, nodeclass)


def test_ec2nodeclass_two_root_volumes_are_refused(rendered, crd_validator):
    nodeclass = _nodeclass(rendered)
    second = copy.deepcopy(nodeclass["spec"]["blockDeviceMappings"][0])
    second["deviceName"] = "/dev/xvdb"
    nodeclass["spec"]["blockDeviceMappings"].append(second)
    assert "must have only one blockDeviceMappings with rootVolume" in _errors(crd_validator, nodeclass)


def test_scaledobject_min_above_max_replicas_is_refused(rendered, crd_validator):
    scaled = copy.deepcopy(one(rendered["queue-worker"], "ScaledObject"))
    scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"] = 5, 2
    assert "minReplicaCount must be less than or equal to maxReplicaCount" in _errors(crd_validator, scaled)


def test_scaledobject_min_above_keda_default_max_is_refused(rendered, crd_validator):
    """Without maxReplicaCount the rule compares with KEDA's default of 100."""
    scaled = copy.deepcopy(one(rendered["queue-worker"], "ScaledObject"))
    del scaled["spec"]["maxReplicaCount"]
    scaled["spec"]["minReplicaCount"] = 101
    assert "minReplicaCount must be less than or equal to maxReplicaCount" in _errors(crd_validator, scaled)
    scaled["spec"]["minReplicaCount"] = 100
    assert _errors(crd_validator, scaled) == ""


# ---------------------------------------------------------------- transition rules (oldSelf)


def test_transition_rules_are_not_applicable_on_create(rendered, crd_validator):
    result = crd_validator.validate(one(rendered[SPOT], "NodePool"))
    assert len(result.not_applicable_cel) == 3, result.not_applicable_cel
    assert any("oldSelf.group" in r for r in result.not_applicable_cel)


def test_nodepool_patch_runs_the_transition_rules(rendered, crd_validator, tmp_path):
    current = one(rendered[SPOT], "NodePool")
    body = [{"op": "replace", "path": "/spec/template/spec/requirements/1/values", "value": ["g6e"]}]
    patched = kubectl_patch(current, "json", body, tmp_path)
    assert patched["spec"]["template"]["spec"]["requirements"][1]["values"] == ["g6e"]
    created, updated = crd_validator.validate(patched), crd_validator.validate(patched, old=current)
    assert updated.errors == [] and updated.not_applicable_cel == [], updated
    assert updated.cel_evaluated == created.cel_evaluated + 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("group", "karpenter.azure.com", "nodeClassRef.group is immutable"),
        ("kind", "AKSNodeClass", "nodeClassRef.kind is immutable"),
    ],
)
def test_nodepool_patch_changing_the_node_class_kind_is_refused(
    field, value, message, rendered, crd_validator, tmp_path
):
    current = one(rendered[SPOT], "NodePool")
    body = {"spec": {"template": {"spec": {"nodeClassRef": {field: value}}}}}
    patched = kubectl_patch(current, "merge", body, tmp_path)
    assert message in _errors(crd_validator, patched, old=current)
    assert message not in _errors(crd_validator, patched)  # the same object as a create is fine


def test_nodepool_patch_to_static_provisioning_is_refused(rendered, crd_validator, tmp_path):
    current = one(rendered[SPOT], "NodePool")
    patched = kubectl_patch(current, "merge", {"spec": {"replicas": 2}}, tmp_path)
    errors = _errors(crd_validator, patched, old=current)
    assert "Cannot transition NodePool between static (replicas set) and dynamic" in errors
    assert "only 'limits.nodes' is supported on static NodePools" in errors


def test_helm_upgrade_with_new_values_passes_the_transition_rules(rendered, crd_validator):
    """`helm upgrade` from the profile to changed GPU families and budget: an update of the same NodePool."""
    before = one(rendered[SPOT], "NodePool")
    after = one(
        render(
            [CHART / "ci" / f"{SPOT}-values.yaml"],
            ["karpenter.nodePool.instanceFamilies={g6e}", "karpenter.nodePool.disruptionBudgetNodes=20%"],
        ),
        "NodePool",
    )
    assert after["spec"] != before["spec"]
    result = crd_validator.validate(after, old=before)
    assert result.errors == [] and result.not_applicable_cel == [], result
