"""Build the container image and run it exactly as the chart's pod spec runs it (`make image-check`).

The pod is read from `helm template` (default values), never retyped: the predictor container's args and
env, the pod's and the container's securityContext (user, group, read-only root, capabilities,
privilege escalation), its emptyDir volumes (as tmpfs mounts of the same paths and size limits) and its
port. The model directory KServe's storage initializer would download is mounted read-only at
/mnt/models. Then it checks: ready, `/classify` and v2 answer with the right class, every log line is a
JSON object, SIGTERM exits 0; and it reports image size, layer sizes, start-up time and idle memory, and
(unless --skip-source-change) rebuilds with a one-line source change to show how large the new layer is.

Needs a Docker engine (scripts/image_check.sh installs and starts one) and helm (`make tools`).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
CONTEXT_FILES = ["Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "predictor", "classifier_canary",
                 "classifier_kube", "models/__init__.py", "models/fetch_hf.py"]  # fmt: skip
SOURCE_LAYER_LIMIT_BYTES = 50 * 1024 * 1024


def sh(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
    """Run a command, raising with its output when it fails."""
    result = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if result.returncode != 0:
        raise SystemExit(f"image-check: {' '.join(cmd[:4])} ... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def predictor_pod(helm: str) -> tuple[dict, dict]:
    """The InferenceService's predictor pod spec and its kserve-container, from `helm template`."""
    out = sh([helm, "template", "classifier", str(REPO / "chart")]).stdout
    for doc in yaml.safe_load_all(out):
        if doc and doc.get("kind") == "InferenceService":
            predictor = doc["spec"]["predictor"]
            (container,) = [c for c in predictor["containers"] if c["name"] == "kserve-container"]
            return predictor, container
    raise SystemExit("image-check: the chart rendered no InferenceService")


def run_flags(pod: dict, container: dict) -> list[str]:
    """`docker run` flags equal to the pod's security context, env and volumes."""
    sc = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    flags = []
    if "runAsUser" in sc:
        flags += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
    if sc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    caps = sc.get("capabilities") or {}
    flags += [f"--cap-drop={c}" for c in caps.get("drop", [])] + [f"--cap-add={c}" for c in caps.get("add", [])]
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if (sc.get("seccompProfile") or {}).get("type") not in (None, "RuntimeDefault"):
        raise SystemExit(f"image-check: seccomp profile {sc['seccompProfile']} is not modelled")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" not in volume:
            raise SystemExit(f"image-check: volume {mount['name']} is not an emptyDir; not modelled")
        size = (volume["emptyDir"] or {}).get("sizeLimit")
        uid = sc.get("runAsUser", 0)
        opts = f"rw,exec,uid={uid},gid={sc.get('runAsGroup', uid)},mode=0700" + (
            f",size={size_bytes(size)}" if size else ""
        )
        flags += ["--tmpfs", f"{mount['mountPath']}:{opts}"]
    for env in container.get("env", []):
        if "value" in env:
            flags += ["-e", f"{env['name']}={env['value']}"]
        elif env.get("valueFrom", {}).get("fieldRef"):
            # The downward API: a pod name and namespace as Kubernetes would give them.
            field = env["valueFrom"]["fieldRef"]["fieldPath"]
            flags += ["-e", f"{env['name']}={'classifier-predictor-00001-abcde' if field == 'metadata.name' else 'ml'}"]
        else:
            raise SystemExit(f"image-check: env {env['name']} comes from {env.get('valueFrom')}; not modelled")
    return flags


def size_bytes(quantity: str) -> int:
    """A Kubernetes quantity (`2Gi`, `500Mi`) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    assert match, quantity
    return int(float(match.group(1)) * units.get(match.group(2), 1))


def build(context: Path, tag: str, base_image: str | None) -> float:
    """`docker build`; returns its wall time in seconds."""
    cmd = ["docker", "build", "-t", tag]
    if base_image:
        cmd += ["--build-arg", f"BASE_IMAGE={base_image}"]
    start = time.monotonic()
    proc = subprocess.run([*cmd, str(context)], text=True, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"image-check: docker build failed:\n{(proc.stdout + proc.stderr)[-5000:]}")
    return time.monotonic() - start


def changes_files(created_by: str) -> bool:
    """Whether a history row made a layer (RUN, COPY, ADD, an imported base) or only metadata (ENV, USER...)."""
    text = created_by.strip()
    if "#(nop)" in text:  # the classic builder marks metadata-only steps; COPY/ADD carry it too
        return bool(re.search(r"#\(nop\)\s+(COPY|ADD)\b", text))
    if text.endswith("# buildkit"):
        return text.startswith(("RUN", "COPY", "ADD"))
    return True


def layers(tag: str) -> list[tuple[str, int, str]]:
    """(layer digest, size in bytes, created by) for each layer of the image, bottom first."""
    digests = json.loads(sh(["docker", "image", "inspect", "-f", "{{json .RootFS.Layers}}", tag]).stdout)
    rows = sh(["docker", "history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", tag])
    history = [line.split("\t", 1) for line in reversed(rows.stdout.splitlines())]
    made = [(int(size), created) for size, created in history if changes_files(created)]
    if len(made) != len(digests):
        raise SystemExit(f"image-check: {len(digests)} layers but {len(made)} history rows that make one")
    return [(d, size, created) for d, (size, created) in zip(digests, made, strict=True)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_jpegs() -> dict[str, bytes]:
    from PIL import Image
    from skimage import data

    out = {}
    for name in ("chelsea", "coffee"):
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buf, format="JPEG", quality=90)
        out[name] = buf.getvalue()
    return out


def wait_ready(url: str, name: str, model: str, deadline_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        try:
            if httpx.get(f"{url}/v2/models/{model}/ready", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        state = sh(["docker", "inspect", "-f", "{{.State.Status}}", name]).stdout.strip()
        if state != "running":
            logs = subprocess.run(["docker", "logs", name], text=True, capture_output=True)
            raise SystemExit(f"image-check: the container stopped ({state}):\n{(logs.stdout + logs.stderr)[-4000:]}")
        time.sleep(0.5)
    raise SystemExit(f"image-check: not ready after {deadline_s:.0f} s")


def classify(url: str, model: str, images: dict[str, bytes]) -> dict[str, str]:
    """Top-1 label of the cat through /classify and of the coffee through v2 JSON."""
    r = httpx.post(f"{url}/classify", files={"image": ("cat.jpg", images["chelsea"], "image/jpeg")}, timeout=60)
    r.raise_for_status()
    classify_top1 = r.json()["predictions"][0][0]["label"]
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "data": [base64.b64encode(images["coffee"]).decode()]}]}  # fmt: skip
    r = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=60)
    r.raise_for_status()
    label = next(o for o in r.json()["outputs"] if o["name"] == "label")
    v2_top1 = label["data"][0]
    if "cat" not in classify_top1:
        raise SystemExit(f"image-check: /classify called the cat {classify_top1!r}")
    if "espresso" not in v2_top1 and "cup" not in v2_top1:
        raise SystemExit(f"image-check: v2 called the coffee {v2_top1!r}")
    return {"/classify (cat)": classify_top1, "v2 JSON (coffee)": v2_top1}


def non_json_lines(text: str) -> list[str]:
    bad = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(line)
        except ValueError:
            bad.append(line)
    return bad


def memory_mib(name: str) -> float:
    usage = sh(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", name]).stdout.split("/")[0].strip()
    match = re.fullmatch(r"([0-9.]+)([KMG]i?B)", usage)
    factor = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "kB": 1 / 1024, "MB": 1, "GB": 1024}
    return float(match.group(1)) * factor[match.group(2)] if match else float("nan")


def run_as_the_chart(tag: str, helm: str, model_dir: Path) -> dict:
    pod, container = predictor_pod(helm)
    model = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--model_name="))
    port = container["ports"][0]["containerPort"]
    host_port = free_port()
    name = f"image-check-{host_port}"
    cmd = ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{host_port}:{port}"]
    cmd += ["-v", f"{model_dir.resolve()}:/mnt/models:ro", *run_flags(pod, container), tag, *container["args"]]
    images = sample_jpegs()
    sh(cmd)
    url = f"http://127.0.0.1:{host_port}"
    try:
        ready_s = wait_ready(url, name, model, 300)
        answers = classify(url, model, images)
        time.sleep(2)
        idle_mib = memory_mib(name)
        stop_start = time.monotonic()
        subprocess.run(["docker", "stop", "-t", "60", name], capture_output=True)
        stop_s = time.monotonic() - stop_start
        exit_code = int(sh(["docker", "inspect", "-f", "{{.State.ExitCode}}", name]).stdout.strip())
        logs = subprocess.run(["docker", "logs", name], text=True, capture_output=True)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    bad = non_json_lines(logs.stdout + logs.stderr)
    if exit_code != 0:
        raise SystemExit(f"image-check: SIGTERM exit code {exit_code}")
    if bad:
        raise SystemExit("image-check: non-JSON log lines:\n" + "\n".join(bad[:20]))
    log_lines = len(logs.stdout.splitlines()) + len(logs.stderr.splitlines())
    return {"ready_s": round(ready_s, 1), "answers": answers, "idle_memory_mib": round(idle_mib),
            "sigterm_exit_code": exit_code, "stop_s": round(stop_s, 1), "log_lines": log_lines,
            "args": len(container["args"]), "run_flags": run_flags(pod, container)}  # fmt: skip


def source_change_layers(tag: str, base_image: str | None) -> dict:
    """Rebuild with a one-line change to predictor/__init__.py; the layers that differ and their sizes."""
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        for rel in CONTEXT_FILES:
            src, dst = REPO / rel, context / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, dst)
        with open(context / "predictor/__init__.py", "a") as f:
            f.write("# image-check: a one-line source change\n")
        seconds = build(context, f"{tag}-src", base_image)
    before = {d for d, _, _ in layers(tag)}
    new = [(size, created) for d, size, created in layers(f"{tag}-src") if d not in before]
    subprocess.run(["docker", "rmi", f"{tag}-src"], capture_output=True)
    total = sum(size for size, _ in new)
    if total > SOURCE_LAYER_LIMIT_BYTES:
        raise SystemExit(f"image-check: a source change made {total / 1e6:.1f} MB of new layers: {new}")
    return {"rebuild_s": round(seconds, 1), "new_layers": len(new), "new_bytes": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-image", default="", help="BASE_IMAGE build argument (default: the Dockerfile's)")
    parser.add_argument("--tag", default="image-classifier:check", help="image tag to build (default: %(default)s)")
    parser.add_argument("--helm", default=shutil.which("helm") or str(REPO / ".tools/helm"), help="helm binary")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models/efficientnet-lite0",
                        help="model directory mounted at /mnt/models (default: %(default)s)")  # fmt: skip
    parser.add_argument("--skip-build", action="store_true", help="use an image already built under --tag")
    parser.add_argument("--skip-source-change", action="store_true", help="skip the source-change rebuild")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/image_check.json", help="JSON report")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"base_image": args.base_image or "(Dockerfile default)"}
    if not args.skip_build:
        report["build_s"] = round(build(REPO, args.tag, args.base_image or None), 1)
    report["image_bytes"] = int(sh(["docker", "image", "inspect", "-f", "{{.Size}}", args.tag]).stdout)
    report["layers"] = [{"bytes": size, "created_by": created[-110:]} for _, size, created in layers(args.tag)]
    report["run"] = run_as_the_chart(args.tag, args.helm, args.model_dir)
    if not args.skip_source_change:
        report["source_change"] = source_change_layers(args.tag, args.base_image or None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    return 0


def render(report: dict) -> str:
    run = report["run"]
    lines = [
        "image-check: passed",
        f"  base image        {report['base_image']}",
        f"  build             {report.get('build_s', '-')} s",
        f"  image size        {report['image_bytes'] / 1e9:.2f} GB",
        f"  ready after       {run['ready_s']} s (docker run to /v2/models/<m>/ready = 200)",
        f"  idle memory       {run['idle_memory_mib']} MiB",
        f"  answers           {run['answers']}",
        f"  SIGTERM           exit {run['sigterm_exit_code']} after {run['stop_s']} s",
        f"  logs              {run['log_lines']} lines, every one a JSON object",
        f"  chart args        {run['args']}",
        "  layers (bytes, created by):",
        *[f"    {layer['bytes'] / 1e6:10.1f} MB  {layer['created_by']}" for layer in report["layers"]],
    ]
    if "source_change" in report:
        sc = report["source_change"]
        lines.append(
            f"  source change     {sc['new_layers']} new layer(s), {sc['new_bytes'] / 1e6:.2f} MB, "
            f"rebuilt in {sc['rebuild_s']} s"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
