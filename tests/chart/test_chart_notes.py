"""NOTES.txt, rendered by `helm install --dry-run=client` (offline; `helm template` skips NOTES)."""

from __future__ import annotations

import pytest

from .chart_support import CHART, PROFILES, profile_name, run, tool

FLAGS = ("kubernetes.podspec-tolerations", "kubernetes.podspec-affinity", "kubernetes.podspec-nodeselector")


def notes(values_file=None, set_values=()):
    cmd = [tool("helm"), "install", "demo", str(CHART), "--dry-run=client", "--namespace", "ml"]
    if values_file:
        cmd += ["-f", str(values_file)]
    for s in set_values:
        cmd += ["--set", s]
    out = run(cmd).stdout
    assert "NOTES:" in out
    return out[out.index("NOTES:") :]


@pytest.fixture(scope="module")
def all_notes():
    return {profile_name(p): notes(p) for p in PROFILES}


def test_notes_render_for_every_profile(all_notes):
    for profile, text in all_notes.items():
        assert "is deployed as InferenceService " in text, profile
        assert "<no value>" not in text, profile


def test_knative_notes_name_the_feature_flags_when_pods_need_them(all_notes):
    for profile in ["default", "gpu-spot-knative-canary", "queue-worker"]:
        assert all(flag in all_notes[profile] for flag in FLAGS), profile
    text = notes(set_values=["gpu.enabled=false"])
    assert not any(flag in text for flag in FLAGS)


def test_notes_explain_scale_to_zero(all_notes):
    assert "activator" in all_notes["gpu-spot-knative-canary"]  # Knative, minReplicas 0
    assert "Scale to zero is off: it needs Knative mode" in all_notes["standard-hpa"]
    text = notes(
        set_values=["deploymentMode=Standard", "autoscaling.minReplicas=0", "autoscaling.allowStandardScaleToZero=true"]
    )
    assert "WARNING: minReplicas is 0 in Standard mode" in text


def test_notes_give_the_canary_commands_per_mode(all_notes):
    assert '--type merge -p \'{"spec":{"predictor":{"canaryTrafficPercent":0}}}\'' in all_notes["default"]
    assert '"path":"/spec/canary/0/trafficPercent"' in all_notes["standard-keda"]
