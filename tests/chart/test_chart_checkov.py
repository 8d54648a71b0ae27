"""checkov's Kubernetes checks on every rendered profile (plus each InferenceService's pod, as KServe deploys
it): none fails, and every check the chart skips says why in the chart itself."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .chart_support import CHART, PROFILES, predictor_workloads, profile_name, render, run, tool

SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")
SKIP_VALUE = re.compile(r"^(CKV2?_K8S_\d+)=([^=]+)$")  # checkov splits on "=": a reason cannot hold one


def _manifests(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects + predictor_workloads(objects))


def checkov(directory: Path) -> dict[str, dict[str, Any]]:
    """Run checkov (Kubernetes framework, offline) on every file in ``directory``: {file stem: results}."""
    cmd = [tool("checkov"), "-d", str(directory), "--framework", "kubernetes", "--skip-download", "-o", "json"]
    result = run(cmd, check=False)
    assert result.returncode in (0, 1), f"checkov exited {result.returncode}:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    by_file: dict[str, dict[str, Any]] = {
        Path(p).stem: {"passed": [], "failed": [], "skipped": []} for p in directory.iterdir()
    }
    for outcome in ("passed", "failed", "skipped"):
        for check in report["results"][f"{outcome}_checks"]:
            by_file[Path(check["file_path"]).stem][outcome].append(check)
    return by_file


@pytest.fixture(scope="module")
def results(rendered, tmp_path_factory) -> dict[str, dict[str, Any]]:
    directory = tmp_path_factory.mktemp("checkov")
    for name, objects in rendered.items():
        (directory / f"{name}.yaml").write_text(_manifests(objects))
    return checkov(directory)


def _describe(checks: list[dict[str, Any]]) -> str:
    return "\n".join(f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in checks)


@pytest.mark.parametrize("profile", PROFILES, ids=profile_name)
def test_no_check_fails(profile, results):
    found = results[profile_name(profile)]
    assert found["failed"] == [], _describe(found["failed"])


@pytest.mark.parametrize("profile", PROFILES, ids=profile_name)
def test_checks_ran_on_the_workloads(profile, results):
    """The pod checks (security context, resources, probes) ran on the predictor's pod, not only on metadata."""
    found = results[profile_name(profile)]
    predictor_checks = {
        c["check_id"]
        for c in found["passed"]
        if c["resource"].startswith("Deployment.ml.") and "-predictor" in c["resource"]
    }
    assert {
        "CKV_K8S_20",
        "CKV_K8S_22",
        "CKV_K8S_28",
        "CKV_K8S_37",
        "CKV_K8S_11",
        "CKV_K8S_13",
        "CKV_K8S_8",
        "CKV_K8S_9",
    } <= predictor_checks, predictor_checks
    assert len(found["passed"]) >= 40, len(found["passed"])


@pytest.mark.parametrize("profile", PROFILES, ids=profile_name)
def test_every_skip_carries_a_reason(profile, results):
    for check in results[profile_name(profile)]["skipped"]:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason.split()) >= 8, f"{check['check_id']} on {check['resource']}: reason {reason!r}"


def test_every_skip_annotation_in_the_rendered_chart_names_a_check_and_a_reason(rendered):
    skips = []
    for objects in rendered.values():
        for obj in objects:
            for key, value in (obj["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/"):
                    assert SKIP_ANNOTATION.match(key), key
                    match = SKIP_VALUE.match(value)
                    assert match and len(match.group(2).split()) >= 8, f"{obj['kind']} {key}: {value!r}"
                    skips.append(match.group(1))
    assert set(skips) == {"CKV_K8S_15", "CKV_K8S_43", "CKV_K8S_35", "CKV2_K8S_6", "CKV_K8S_29", "CKV_K8S_38"}, set(
        skips
    )


def test_skips_disappear_when_the_values_fix_them(tmp_path):
    """With digests, pullPolicy Always, NetworkPolicies on and Knative's pod security context feature declared,
    checkov checks (and passes) what was skipped."""
    digest = "sha256:" + "0123456789abcdef" * 4
    objects = render(
        [CHART / "ci" / "networkpolicy-values.yaml"],
        [
            f"image.digest={digest}",
            "image.pullPolicy=Always",
            f"queue.worker.storageInitializerImage=kserve/storage-initializer@{digest}",
            "queue.passwordSecret.name=",
            "knative.features[0]=kubernetes.podspec-securitycontext",
        ],
    )
    assert not any(k.startswith("checkov.io/") for o in objects for k in (o["metadata"].get("annotations") or {})), (
        "no skip is left"
    )
    (tmp_path / "fixed.yaml").write_text(_manifests(objects))
    found = checkov(tmp_path)["fixed"]
    assert found["failed"] == [] and found["skipped"] == [], _describe(found["failed"] + found["skipped"])
    passed = {c["check_id"] for c in found["passed"]}
    assert {"CKV_K8S_15", "CKV_K8S_43", "CKV_K8S_35", "CKV2_K8S_6", "CKV_K8S_29"} <= passed, passed


@pytest.mark.parametrize(
    ("setting", "check"),
    [
        ("containerSecurityContext.allowPrivilegeEscalation=true", "CKV_K8S_20"),
        ("containerSecurityContext.readOnlyRootFilesystem=false", "CKV_K8S_22"),
    ],
)
def test_checkov_catches_a_weakened_predictor_pod(setting, check, tmp_path):
    """The run is real: weakening the predictor's container makes checkov fail the predictor's pod."""
    (tmp_path / "weak.yaml").write_text(_manifests(render(set_values=[setting])))
    failed = checkov(tmp_path)["weak"]["failed"]
    assert any(c["check_id"] == check and "-predictor" in c["resource"] for c in failed), _describe(failed)
