"""sharedCache: one PersistentVolumeClaim as every pod's cache_dir, so the export and the precision check
(made before ready) are paid once per model and kind of node, not by every new pod of a scale-out."""

from __future__ import annotations

import pytest

from classifier_kube.knative_features import check_predictor

from .chart_support import CHART, by_kind, one, render, render_error

QUEUE = CHART / "ci" / "queue-worker-values.yaml"
CLAIM = "sharedCache.existingClaim=classifier-cache"
PVC_FLAGS = "knative.features={kubernetes.podspec-persistent-volume-claim,kubernetes.podspec-persistent-volume-write}"


def _pods(objects: list[dict]) -> dict[str, dict]:
    """The predictor's and the worker's pod specs (the worker only where the profile has one)."""
    pods = {"predictor": one(objects, "InferenceService")["spec"]["predictor"]}
    for dep in by_kind(objects, "Deployment"):
        pods["worker"] = dep["spec"]["template"]["spec"]
    return pods


def _cache_dir(container: dict) -> str:
    (arg,) = [a for a in container["args"] if a.startswith("--cache_dir=")]
    return arg.split("=", 1)[1]


def test_by_default_every_pod_caches_in_its_own_emptydir():
    for name, pod in _pods(render([QUEUE])).items():
        assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v], name
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["/var/cache/classifier"] == "cache", name
        assert _cache_dir(pod["containers"][0]).startswith("/var/cache/classifier/"), name


def test_the_claim_is_mounted_where_cache_dir_points_in_the_predictor_and_the_worker():
    pods = _pods(render([QUEUE], [CLAIM, "deploymentMode=Standard"]))
    assert set(pods) == {"predictor", "worker"}
    for name, pod in pods.items():
        (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"] == {"claimName": "classifier-cache"}, name
        container = pod["containers"][0]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["mountPath"] == _cache_dir(container), name
        assert not mount.get("readOnly"), "the first pod writes the artefacts and the verdicts"


def test_knative_mode_needs_the_pvc_flags_and_names_the_command():
    err = render_error(set_values=[CLAIM])
    assert "sharedCache.existingClaim" in err, err
    assert "kubernetes.podspec-persistent-volume-claim and kubernetes.podspec-persistent-volume-write" in err
    assert "kubectl -n knative-serving patch configmap config-features" in err


def test_knative_mode_with_the_flags_passes_the_knative_it_declares(crd_validator):
    isvc = one(render(set_values=[CLAIM, PVC_FLAGS]), "InferenceService")
    check = check_predictor(isvc, crd_validator)
    assert check.errors == [], check.errors
    assert "kubernetes.podspec-persistent-volume-claim" in check.needs()
    assert check.refused(["kubernetes.podspec-persistent-volume-claim"]) == []
    assert check.refused([]) != [], "a stock Knative refuses the claim"


@pytest.mark.parametrize("claim", ["Bad_Name", "-leading-dash", "a" * 254])
def test_a_claim_name_kubernetes_would_refuse_is_refused_by_the_schema(claim):
    err = render_error(set_values=[f"sharedCache.existingClaim={claim}", "deploymentMode=Standard"])
    assert "existingClaim" in err, err
