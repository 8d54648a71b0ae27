"""CrdValidator on small CRDs: defaults before rules, null pruning, old/new correlation of transition rules,
the rule hook, and the input left untouched."""

from __future__ import annotations

import copy

import pytest

from classifier_kube.validate import CrdValidator, RuleSite, iter_rules

SPEC = {
    "type": "object",
    "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
    "properties": {
        "min": {"type": "integer"},
        "max": {"type": "integer", "default": 100},
        "mode": {
            "type": "string",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "mode is immutable"}],
        },
        "ports": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "port": {
                        "type": "integer",
                        "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "port is immutable"}],
                    },
                },
            },
        },
        "tags": {
            "type": "array",
            "items": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "never correlated"}],
            },
        },
    },
}
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "spec": {
        "group": "example.com",
        "names": {"kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": SPEC,
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def validator(tmp_path_factory) -> CrdValidator:
    v = CrdValidator(tmp_path_factory.mktemp("no-crds"))
    v.add_crd(CRD)
    return v


def widget(**spec):
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}


def test_defaults_apply_before_the_rules(validator):
    assert validator.validate(widget(min=100)).errors == []
    errors = validator.validate(widget(min=101)).errors
    assert errors == ["Widget /spec: min must not exceed max (x-kubernetes-validations rule: self.min <= self.max)"]


def test_a_null_of_a_non_nullable_field_is_pruned_then_defaulted(validator):
    assert validator.validate(widget(min=1, max=None)).errors == []


def test_the_input_object_is_not_modified(validator):
    obj = widget(min=1)
    before = copy.deepcopy(obj)
    validator.validate(obj, old=widget(min=1))
    assert obj == before


def test_transition_rules_run_only_on_updates(validator):
    created = validator.validate(widget(min=1, mode="a"))
    assert created.errors == [] and created.not_applicable_cel == ["Widget /spec/mode: self == oldSelf"]
    assert validator.validate(widget(min=1, mode="a"), old=widget(min=1, mode="a")).not_applicable_cel == []
    changed = validator.validate(widget(min=1, mode="b"), old=widget(min=1, mode="a"))
    assert any("mode is immutable" in e for e in changed.errors), changed.errors


def test_list_map_items_correlate_by_key_not_position(validator):
    old = widget(min=1, ports=[{"name": "http", "port": 80}, {"name": "grpc", "port": 81}])
    reordered = widget(min=1, ports=[{"name": "grpc", "port": 81}, {"name": "http", "port": 80}])
    assert validator.validate(reordered, old=old).errors == []
    changed = widget(min=1, ports=[{"name": "grpc", "port": 82}, {"name": "http", "port": 80}])
    assert [e for e in validator.validate(changed, old=old).errors if "port is immutable" in e] == [
        "Widget /spec/ports/0/port: port is immutable (x-kubernetes-validations rule: self == oldSelf)"
    ]
    added = widget(min=1, ports=[{"name": "metrics", "port": 9090}])
    result = validator.validate(added, old=old)
    assert result.errors == [] and result.not_applicable_cel == ["Widget /spec/ports/0/port: self == oldSelf"]


def test_items_of_atomic_lists_never_correlate(validator):
    result = validator.validate(widget(min=1, tags=["b"]), old=widget(min=1, tags=["a"]))
    assert result.errors == [] and result.not_applicable_cel == ["Widget /spec/tags/0: self == oldSelf"]


def test_the_rule_hook_sees_value_and_old_value(validator):
    seen: list[RuleSite] = []
    validator.validate(
        widget(min=1, mode="b"), lambda rule, site, result: seen.append(site), old=widget(min=1, mode="a")
    )
    mode = next(s for s in seen if s.path == "/spec/mode")
    assert (mode.value, mode.old, mode.has_old) == ("b", "a", True)
    spec = next(s for s in seen if s.path == "/spec")
    assert spec.value["max"] == 100  # the hook sees the defaulted object


def test_iter_rules_lists_every_rule_with_its_path(validator):
    paths = [p for p, _ in iter_rules(validator.schemas[("example.com/v1", "Widget")])]
    assert paths == ["/spec", "/spec/mode", "/spec/ports/[]/port", "/spec/tags/[]"]


def test_an_uncompilable_rule_is_listed_and_never_passed(tmp_path):
    crd = copy.deepcopy(CRD)
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] = [
        {"rule": "quantity(self.size).isGreaterThan(quantity('1Gi'))"}
    ]
    v = CrdValidator(tmp_path)
    v.add_crd(crd)
    assert v.uncompilable_rules() == [
        "Widget /spec: quantity(self.size).isGreaterThan(quantity('1Gi')) "
        "(calls functions not implemented here: isGreaterThan, quantity)"
    ]
    result = v.validate(widget(size="2Gi"))
    assert result.cel_evaluated == 0 and len(result.unchecked_cel) == 1
