"""Every patch the tool generates, for every step of both deployment modes, applied to the chart's rendered
InferenceService with the real ``kubectl patch --local --type merge``: the result validates against the
CRD, equals our own RFC 7386 apply, promotion yields what the chart renders for the canary as stable,
and rollback yields the stable-only object."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from classifier_canary.errors import ApplyFailed
from classifier_canary.guard import PatchGuard
from classifier_canary.isvc import promote_patch, read_state, rollback_patch, traffic_patch
from classifier_canary.merge_patch import apply_merge_patch
from tests.support.canary_stack import (
    CHART,
    KNATIVE_PROFILE,
    STANDARD_PROFILE,
    knative_revision,
    rendered_isvc,
    with_knative_status,
    with_standard_status,
)
from tests.support.prometheus import tool

STEPS = [10, 25, 50]
CANARY_PROFILE = CHART / "ci" / "canary-analysis-values.yaml"
SPOT_PROFILE = CHART / "ci" / "gpu-spot-knative-canary-values.yaml"
HPA_PROFILE = CHART / "ci" / "standard-hpa-values.yaml"
HPA_CANARY = ("canary.enabled=true", "canary.image.tag=0.3.0")


def kubectl_patch(obj: dict, patch: dict, tmp_path: Path) -> dict:
    path = tmp_path / "isvc.yaml"
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
        "yaml",
    ]
    return yaml.safe_load(subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout)


def apply(obj: dict, patch: dict, tmp_path: Path, validator) -> dict:
    """kubectl's result, checked against our own apply and the CRD."""
    patched = kubectl_patch(obj, patch, tmp_path)
    assert patched == apply_merge_patch(obj, patch)
    result = validator.validate(patched)
    assert result.errors == [], result.errors
    return patched


def knative(profile: Path, *sets: str) -> dict:
    obj = rendered_isvc(profile, "demo", *sets)
    name = obj["metadata"]["name"]
    return with_knative_status(obj, knative_revision(name, 1), knative_revision(name, 2))


def without_status(obj: dict) -> dict:
    """The object as ``helm template`` renders it: no status, no namespace."""
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    out["metadata"].pop("namespace", None)
    return out


KNATIVE_CASES = [(KNATIVE_PROFILE, ()), (SPOT_PROFILE, ()), (CANARY_PROFILE, ())]


@pytest.mark.parametrize(("profile", "sets"), KNATIVE_CASES, ids=lambda p: getattr(p, "stem", ""))
def test_knative_steps_promote_and_rollback(profile, sets, tmp_path, crd_validator):
    obj = knative(profile, *sets)
    for percent in STEPS:
        patch = traffic_patch(obj, percent)
        if read_state(obj).traffic_percent == percent:  # the chart rendered this share already
            assert patch == {"spec": {}}
        else:
            assert patch == {"spec": {"predictor": {"canaryTrafficPercent": percent}}}  # as the manual flow
        before = obj
        obj = apply(obj, patch, tmp_path, crd_validator)
        expected = copy.deepcopy(before)
        expected["spec"]["predictor"]["canaryTrafficPercent"] = percent
        assert obj == expected, "a step changes the traffic share and nothing else"
        assert read_state(obj).traffic_percent == percent

        rolled_back = apply(obj, rollback_patch(obj), tmp_path, crd_validator)
        expected["spec"]["predictor"]["canaryTrafficPercent"] = 0
        assert rolled_back == expected, "rollback: every request to the stable revision, nothing else changed"

    promoted = apply(obj, promote_patch(obj), tmp_path, crd_validator)
    assert promote_patch(obj) == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    stable_only = rendered_isvc(profile, "demo", *sets, "canary.enabled=false", "canaryAnalysis.enabled=false")
    assert promoted["spec"] == stable_only["spec"], "promoted: the chart's object without a canary"


STANDARD_CASES = [(STANDARD_PROFILE, (), "0.2.0"), (HPA_PROFILE, HPA_CANARY, "0.3.0")]


@pytest.mark.parametrize(("profile", "sets", "canary_tag"), STANDARD_CASES, ids=["standard-keda", "standard-hpa"])
def test_standard_steps_promote_and_rollback(profile, sets, canary_tag, tmp_path, crd_validator):
    obj = with_standard_status(rendered_isvc(profile, "std", *sets))
    canary_predictor = copy.deepcopy(obj["spec"]["canary"][0]["predictor"])
    stable_only = without_status(
        rendered_isvc(profile, "std", *sets, "canary.enabled=false", "canaryAnalysis.enabled=false")
    )
    for percent in STEPS:
        patch = traffic_patch(obj, percent)
        if read_state(obj).traffic_percent == percent:  # the chart rendered this share already
            assert patch == {"spec": {}}
        else:  # spec.canary is an atomic list: the patch carries the whole entry, built from the live object
            assert patch == {"spec": {"canary": [{"trafficPercent": percent, "predictor": canary_predictor}]}}
        obj = apply(obj, patch, tmp_path, crd_validator)
        assert obj["spec"]["canary"][0] == {"trafficPercent": percent, "predictor": canary_predictor}
        assert obj["spec"]["predictor"] == stable_only["spec"]["predictor"]

        rolled_back = apply(obj, rollback_patch(obj), tmp_path, crd_validator)
        assert rollback_patch(obj) == {"spec": {"canary": None}}
        assert without_status(rolled_back) == stable_only, "rollback restores the stable-only object"

    promoted = apply(obj, promote_patch(obj), tmp_path, crd_validator)
    # What the chart renders when the canary's image becomes the stable one (the manual promotion).
    as_stable = without_status(rendered_isvc(profile, "std", *sets, f"image.tag={canary_tag}", "canary.enabled=false"))
    assert without_status(promoted) == as_stable
    assert promoted["spec"]["predictor"]["containers"][0]["image"].endswith(f":{canary_tag}")


def test_a_patch_the_crd_refuses_is_reported_with_the_reason():
    obj = with_standard_status(rendered_isvc(STANDARD_PROFILE, "std"))
    guard = PatchGuard()
    with pytest.raises(ApplyFailed, match=r"refused by the shipped .* CRD, not sent: .*trafficPercent.*150"):
        guard.check(obj, traffic_patch(obj, 150))
    with pytest.raises(ApplyFailed, match="canaryTraficPercent"):
        guard.check(obj, {"spec": {"predictor": {"canaryTraficPercent": 10}}})


def test_errors_the_live_object_already_has_do_not_block_a_patch():
    """A shipped CRD older than the cluster's may not know a field the live object uses: only what the patch
    breaks blocks it."""
    obj = with_standard_status(rendered_isvc(STANDARD_PROFILE, "std"))
    obj["spec"]["predictor"]["fieldOfANewerKServe"] = True
    guard = PatchGuard()
    assert guard.errors(obj)
    patched = guard.check(obj, traffic_patch(obj, 30))
    assert patched["spec"]["canary"][0]["trafficPercent"] == 30
