"""NOTES.txt, rendered by `helm install --dry-run=client` (offline; `helm template` skips NOTES)."""

from __future__ import annotations

import json

import pytest

from .chart_support import CHART, PROFILES, profile_name, run, tool

FLAGS_OF_SPOT_PROFILE = (
    "kubernetes.podspec-affinity",
    "kubernetes.podspec-fieldref",
    "kubernetes.podspec-tolerations",
    "kubernetes.podspec-topologyspreadconstraints",
)


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


def test_knative_notes_give_the_config_features_patch_for_the_declared_flags(all_notes):
    text = all_notes["gpu-spot-knative-canary"]
    patch = next(line for line in text.splitlines() if "patch configmap config-features" in line)
    body = json.loads(patch.split("-p ", 1)[1].strip("'"))
    assert body == {"data": dict.fromkeys(FLAGS_OF_SPOT_PROFILE, "enabled")}
    assert "config-features" not in all_notes["default"].split("Left out")[0]  # stock Knative: nothing to enable


def test_knative_notes_say_what_a_stock_knative_leaves_out(all_notes):
    text = all_notes["default"]
    for flag in (
        "kubernetes.podspec-topologyspreadconstraints",
        "kubernetes.podspec-tolerations",
        "kubernetes.podspec-fieldref",
    ):
        assert flag in text.split("Left out", 1)[1]
    assert "Left out" not in notes(
        set_values=[
            "gpu.enabled=false",
            "topologySpread.enabled=false",
            "knative.features={kubernetes.podspec-fieldref}",
        ]
    )
    assert "Left out" not in all_notes["standard-hpa"]


def test_notes_warn_about_the_placeholder_image(all_notes):
    assert "WARNING: image.repository is the placeholder" in all_notes["default"]
    assert "placeholder" not in notes(set_values=["image.repository=registry.example.com/ml/image-classifier"])


def test_notes_explain_scale_to_zero(all_notes):
    assert "activator" in all_notes["gpu-spot-knative-canary"]  # Knative, minReplicas 0
    assert "revision timeout is 250 s" in all_notes["gpu-spot-knative-canary"]  # 210 s cold start + 30 s + 10 s
    off = all_notes["standard-hpa"]
    assert "Standard mode scales to zero only with autoscaling.standard.autoscaler=httpAddon" in off
    http = all_notes["standard-keda-http"]
    assert "route host(s) classifier.ml.example.com to keda-add-ons-http-interceptor-proxy.keda:8080" in http
    assert "URL=http://classifier.ml.example.com" in http and "at least 250 s" in http
    assert "URL=$(kubectl" not in http  # KServe's own URL bypasses the interceptor: it would never wake


def test_notes_warn_of_the_wake_overshoot_only_on_concurrency(all_notes):
    assert "asks for R x 210 / 32 pods" in all_notes["gpu-spot-knative-canary"]
    rps = notes(set_values=["autoscaling.minReplicas=0", "autoscaling.knative.metric=rps"])
    assert "Scale to zero is on" in rps and "asks for R x" not in rps


def test_notes_give_the_canary_commands_per_mode(all_notes):
    assert '--type merge -p \'{"spec":{"predictor":{"canaryTrafficPercent":0}}}\'' in all_notes["default"]
    assert '"path":"/spec/canary/0/trafficPercent"' in all_notes["standard-keda"]
    # Standard mode's helm commands name release and chart and keep the other values (issue 16)
    for line in all_notes["standard-keda"].splitlines():
        if line.strip().startswith("helm upgrade"):
            assert line.strip().startswith("helm upgrade demo ./chart -n ml --reuse-values"), line


def test_notes_route_to_the_interceptor_the_values_name():
    text = notes(
        set_values=[
            "deploymentMode=Standard",
            "autoscaling.minReplicas=0",
            "autoscaling.standard.autoscaler=httpAddon",
            "autoscaling.standard.httpAddon.hosts={a.example.com,b.example.com}",
            "autoscaling.standard.httpAddon.interceptor.namespace=keda-http",
            "autoscaling.standard.httpAddon.interceptor.service=interceptor",
            "autoscaling.standard.httpAddon.interceptor.port=9000",
        ]
    )
    assert "route host(s) a.example.com, b.example.com to interceptor.keda-http:9000" in text
    assert "URL=http://a.example.com" in text
