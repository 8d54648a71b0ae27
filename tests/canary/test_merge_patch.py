"""RFC 7386 JSON merge patch: the RFC's own examples, round trips on random documents, and agreement with
the real ``kubectl patch --local --type merge`` on InferenceService-shaped documents."""

from __future__ import annotations

import json
import random
import subprocess

import pytest
import yaml

from classifier_canary.merge_patch import apply_merge_patch, create_merge_patch
from tests.support.prometheus import tool

# RFC 7386 Appendix A, verbatim: (original, patch, result).
RFC_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC_EXAMPLES)
def test_rfc_7386_examples(original, patch, result):
    before = json.dumps(original)
    assert apply_merge_patch(original, patch) == result
    assert json.dumps(original) == before, "the target must not be modified"


def random_doc(rng: random.Random, depth: int = 0) -> dict:
    """A random JSON object without nulls (what Kubernetes objects look like)."""
    doc = {}
    for i in range(rng.randint(0, 5)):
        key = rng.choice("abcdefg") + str(i % 2)
        kind = rng.random()
        if kind < 0.3 and depth < 3:
            doc[key] = random_doc(rng, depth + 1)
        elif kind < 0.5:
            doc[key] = [rng.randint(0, 3) for _ in range(rng.randint(0, 3))]
        elif kind < 0.7:
            doc[key] = rng.randint(0, 100)
        elif kind < 0.8:
            doc[key] = rng.random() < 0.5
        else:
            doc[key] = rng.choice(["x", "y", "", "10%"])
    return doc


def test_created_patches_turn_source_into_target():
    rng = random.Random(7386)
    for _ in range(2000):
        source, target = random_doc(rng), random_doc(rng)
        patch = create_merge_patch(source, target)
        assert apply_merge_patch(source, patch) == target, (source, target, patch)
        assert create_merge_patch(target, target) == {}


def test_a_null_in_the_target_cannot_be_expressed():
    with pytest.raises(ValueError, match="/spec/x is null"):
        create_merge_patch({"spec": {}}, {"spec": {"x": None}})


def kubectl_merge(obj: dict, patch: dict, tmp_path) -> dict:
    path = tmp_path / "obj.yaml"
    path.write_text(yaml.safe_dump(obj))
    cmd = [
        tool("kubectl"),
        "patch",
        "--local",
        "-f",
        str(path),
        "--type",
        "merge",
        "-p",
        json.dumps(patch),
        "-o",
        "json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


def test_kubectl_applies_the_created_patches_identically(tmp_path):
    """kubectl (the reference) and our apply agree on random specs of an InferenceService-shaped object."""
    rng = random.Random(13)
    for _ in range(12):
        base = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "x"}}
        source, target = {**base, "spec": random_doc(rng)}, {**base, "spec": random_doc(rng)}
        patch = create_merge_patch(source, target)
        assert kubectl_merge(source, patch, tmp_path) == target == apply_merge_patch(source, patch)
