"""Shared helpers of the chart tests: real helm/kubectl/promtool processes and a CRD schema validator.

The CRD validator itself lives in the package (:mod:`classifier_kube.validate`), with the upstream CRDs it
reads (``classifier_kube/crds``), so the canary tool checks its patches with the same code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from classifier_kube.validate import CRD_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "chart"
CRDS = CRD_DIR
PROFILES = sorted((CHART / "ci").glob("*-values.yaml"))
UNCOMPILABLE_CEL_RULES: dict[str, str] = {}
"""CEL rule text -> why classifier_kube cannot evaluate it. Empty: every rule of every shipped CRD compiles.
An entry here is a rule a real cluster checks and these tests do not; each needs its reason."""
K8S_MINOR = "1.33"
"""Kubernetes minor the core kinds are validated against (kubernetes-validate, strict)."""


def profile_name(path: Path) -> str:
    """`chart/ci/standard-keda-values.yaml` -> `standard-keda`."""
    return path.name.removesuffix("-values.yaml")


def tool(name: str) -> str:
    """Path of a required binary on PATH; a missing one fails the test (never a skip)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: run `make tools` (it puts helm, kubectl and checkov into .tools)")
    return path


def run(args: list[str], *, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, returning its result; with ``check`` a non-zero exit fails with its output."""
    result = subprocess.run(args, capture_output=True, text=True, input=stdin, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def helm_template_cmd(
    values_files: list[Path] = (), set_values: list[str] = (), release: str = "demo", namespace: str = "ml"
) -> list[str]:
    cmd = [tool("helm"), "template", release, str(CHART), "--namespace", namespace]
    for f in values_files:
        cmd += ["-f", str(f)]
    for s in set_values:
        cmd += ["--set", s]
    return cmd


def render(
    values_files: list[Path] = (), set_values: list[str] = (), release: str = "demo", namespace: str = "ml"
) -> list[dict[str, Any]]:
    """``helm template`` the chart and return its objects."""
    out = run(helm_template_cmd(values_files, set_values, release, namespace)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render_error(values_files: list[Path] = (), set_values: list[str] = ()) -> str:
    """``helm template`` expecting a failure; returns stderr."""
    result = run(helm_template_cmd(values_files, set_values), check=False)
    assert result.returncode != 0, f"helm template succeeded but should have failed:\n{result.stdout[:2000]}"
    return result.stderr


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def kubectl_patch(obj: dict[str, Any], patch_type: str, body: Any, workdir: Path) -> dict[str, Any]:
    """``kubectl patch --local`` of ``obj`` (written to a file in ``workdir``); returns the patched object."""
    path = workdir / f"{obj['kind'].lower()}.yaml"
    path.write_text(yaml.safe_dump(obj))
    cmd = [tool("kubectl"), "patch", "--local", "-f", str(path), "--type", patch_type, "-p", json.dumps(body)]
    return yaml.safe_load(run([*cmd, "-o", "yaml"]).stdout)


def _pod_spec_fields() -> frozenset[str]:
    from importlib import resources

    schema = (
        resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_MINOR}.0-local" / "podspec-v1.json"
    )
    return frozenset(json.loads(schema.read_text())["properties"])


def predictor_workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each InferenceService component's pod as the Deployment KServe makes of it, for pod-level checks.

    The component's PodSpec fields, its labels, and the InferenceService's annotations (KServe copies them
    onto what it creates, so ``checkov.io/skip`` annotations apply); KServe's own additions (queue-proxy,
    storage-initializer) are KServe's, not the chart's, and are not included.
    """
    fields = _pod_spec_fields()
    workloads = []
    for isvc in by_kind(objects, "InferenceService"):
        components = [("predictor", isvc["spec"]["predictor"])]
        components += [("canary", c["predictor"]) for c in isvc["spec"].get("canary", [])]
        for name, component in components:
            labels = component.get("labels", {})
            meta = {
                "name": f"{isvc['metadata']['name']}-{name}",
                "namespace": isvc["metadata"]["namespace"],
                "annotations": isvc["metadata"].get("annotations", {}),
            }
            pod = {k: v for k, v in component.items() if k in fields}
            spec = {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod}}
            workloads.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec})
    return workloads
