"""scripts/image_check.py without a Docker engine: the `docker run` flags it derives from the chart's real
render (so the image is run as the pod runs, never from a retyped copy), and its log and size parsing.
`make image-check` runs the rest for real (docs/operations.md records a run)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("image_check", REPO / "scripts" / "image_check.py")
image_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(image_check)


@pytest.fixture(scope="module")
def pod_and_container():
    helm = shutil.which("helm")
    assert helm, "helm is on PATH in make test (make tools)"
    return image_check.predictor_pod(helm)


def test_run_flags_follow_the_rendered_security_context_env_and_volumes(pod_and_container):
    pod, container = pod_and_container
    flags = image_check.run_flags(pod, container)
    sc = container["securityContext"]
    assert ["--user", f"{sc['runAsUser']}:{sc['runAsGroup']}"] == flags[
        flags.index("--user") : flags.index("--user") + 2
    ]
    assert "--read-only" in flags and "--cap-drop=ALL" in flags
    assert flags[flags.index("--security-opt") + 1] == "no-new-privileges"
    tmpfs = [flags[i + 1] for i, f in enumerate(flags) if f == "--tmpfs"]
    assert {t.split(":")[0] for t in tmpfs} == {m["mountPath"] for m in container["volumeMounts"]}
    assert all("uid=10001" in t and "size=" in t for t in tmpfs), tmpfs
    envs = [flags[i + 1] for i, f in enumerate(flags) if f == "-e"]
    assert "PROTOCOL=v2" in envs and any(e.startswith("STORAGE_URI=") for e in envs)
    assert len(container["args"]) > 20 and "--model_dir=/mnt/models" in container["args"]


def test_a_volume_or_env_it_cannot_model_stops_the_check(pod_and_container):
    pod, container = pod_and_container
    broken = {**container, "env": [*container["env"], {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c"}}}]}
    with pytest.raises(SystemExit, match="env X"):
        image_check.run_flags(pod, broken)
    pvc = {**pod, "volumes": [{"name": "tmp", "persistentVolumeClaim": {"claimName": "x"}}, *pod["volumes"][1:]]}
    with pytest.raises(SystemExit, match="not an emptyDir"):
        image_check.run_flags(pvc, container)


def test_quantities_and_log_lines():
    assert image_check.size_bytes("2Gi") == 2 * 2**30 and image_check.size_bytes("500Mi") == 500 * 2**20
    logs = '{"level": "INFO"}\n\n\x1b[1;31m2026 [W:onnxruntime] Failed to persist telemetry\n[1, 2]\n'
    assert image_check.non_json_lines(logs) == ["\x1b[1;31m2026 [W:onnxruntime] Failed to persist telemetry", "[1, 2]"]


def test_history_rows_that_make_layers():
    assert image_check.changes_files("/bin/sh -c #(nop) COPY dir:ff6f in /opt/app/predictor/ ")
    assert image_check.changes_files("/bin/sh -c apt-get update && apt-get install -y python3.11")
    assert image_check.changes_files("")  # an imported base
    assert not image_check.changes_files("/bin/sh -c #(nop)  ENV PATH=/opt/venv/bin")
    assert not image_check.changes_files("/bin/sh -c #(nop) WORKDIR /tmp")
    assert image_check.changes_files("COPY predictor/ /opt/app/predictor/ # buildkit")
    assert not image_check.changes_files("ENV HOME=/tmp # buildkit")
