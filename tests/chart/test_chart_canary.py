"""The documented canary flow, applied with real `kubectl patch --local` to the rendered InferenceService."""

from __future__ import annotations

import json

import pytest

from .chart_support import CHART, kubectl_patch, one

# Exactly the commands docs/operations.md and NOTES.txt give (minus the cluster): 10 %, promote, roll back.
KNATIVE_STEPS = [10, 100, 0]


def documented_patch(percent: int) -> str:
    """The patch argument exactly as the docs print it."""
    return "--type merge -p '" + DOCUMENTED_BODY.replace("N", str(percent)) + "'"


DOCUMENTED_BODY = '{"spec":{"predictor":{"canaryTrafficPercent":N}}}'


@pytest.mark.parametrize("profile", ["default", "gpu-spot-knative-canary"])
def test_knative_canary_patch_flow(profile, rendered, crd_validator, tmp_path):
    current = one(rendered[profile], "InferenceService")
    for percent in KNATIVE_STEPS:
        body = {"spec": {"predictor": {"canaryTrafficPercent": percent}}}
        assert json.dumps(body, separators=(",", ":")) == DOCUMENTED_BODY.replace("N", str(percent))
        patched = kubectl_patch(current, "merge", body, tmp_path)
        assert patched["spec"]["predictor"]["canaryTrafficPercent"] == percent
        # the patch changes nothing else
        expected = json.loads(json.dumps(current))
        expected["spec"]["predictor"]["canaryTrafficPercent"] = percent
        assert patched == expected
        result = crd_validator.validate(patched, old=current)  # an update: transition rules run
        assert result.errors == [] and result.not_applicable_cel == [], result
        current = patched


def test_documented_patch_appears_verbatim_in_docs():
    docs = (CHART.parent / "docs" / "operations.md").read_text()
    readme = (CHART / "README.md").read_text()
    for percent in KNATIVE_STEPS:
        cmd = documented_patch(percent)
        assert cmd in docs, f"docs/operations.md lacks {cmd}"
        assert cmd in readme, f"chart/README.md lacks {cmd}"


def test_notes_show_the_canary_commands():
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    for percent in KNATIVE_STEPS:
        assert documented_patch(percent) in notes


def test_merge_patch_with_a_typo_fails_validation(rendered, crd_validator, tmp_path):
    """The validation step of the flow would catch a misspelled patch."""
    current = one(rendered["default"], "InferenceService")
    patched = kubectl_patch(current, "merge", {"spec": {"predictor": {"canaryTraficPercent": 10}}}, tmp_path)
    assert any("canaryTraficPercent" in e for e in crd_validator.validate(patched, old=current).errors)


def test_standard_canary_traffic_json_patch_flow(rendered, crd_validator, tmp_path):
    """Standard mode: the share lives in spec.canary[0].trafficPercent (a JSON patch keeps the predictor)."""
    current = one(rendered["standard-keda"], "InferenceService")
    for percent in [50, 100, 0]:
        body = [{"op": "replace", "path": "/spec/canary/0/trafficPercent", "value": percent}]
        patched = kubectl_patch(current, "json", body, tmp_path)
        assert patched["spec"]["canary"][0]["trafficPercent"] == percent
        assert patched["spec"]["canary"][0]["predictor"] == current["spec"]["canary"][0]["predictor"]
        assert crd_validator.validate(patched, old=current).errors == []
        current = patched


def test_standard_canary_percent_over_100_fails_crd_validation(rendered, crd_validator, tmp_path):
    current = one(rendered["standard-keda"], "InferenceService")
    body = [{"op": "replace", "path": "/spec/canary/0/trafficPercent", "value": 150}]
    patched = kubectl_patch(current, "json", body, tmp_path)
    assert any("trafficPercent" in e for e in crd_validator.validate(patched, old=current).errors)
