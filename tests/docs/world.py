"""What documented commands are checked against: the chart rendered for a profile, the objects KServe,
Knative, KEDA and Karpenter create from it, the values schema, the Makefile, and the real CLIs' --help.

The created objects follow the controllers' naming (KServe v0.20, Knative v1.23, KEDA v2.20): Knative
mode makes Knative Service ``<isvc>-predictor``, revision ``<isvc>-predictor-00001`` and its Deployment
``<isvc>-predictor-00001-deployment``; Standard mode a Deployment and an HPA (or a KEDA ScaledObject
plus HPA ``keda-hpa-<name>``) named ``<isvc>-predictor``; the KEDA HTTP add-on (v0.15) a ScaledObject named
like the HTTPScaledObject, plus its HPA. Predictor pods carry the predictor's labels
plus ``serving.kserve.io/inferenceservice: <isvc>`` and ``component: predictor`` (KServe), and in
Knative mode a ``queue-proxy`` container and ``serving.knative.dev/revision``. A Job's pod carries its
template's labels plus ``job-name`` and ``batch.kubernetes.io/job-name`` (the Job controller's).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
RELEASE, NAMESPACE = "classifier", "ml"
"""The release and namespace every document uses."""

KINDS = {
    **dict.fromkeys(["inferenceservice", "inferenceservices", "isvc"], "InferenceService"),
    **dict.fromkeys(["revision", "revisions", "rev"], "Revision"),
    **dict.fromkeys(["pod", "pods", "po"], "Pod"),
    **dict.fromkeys(["event", "events", "ev"], "Event"),
    **dict.fromkeys(["scaledobject", "scaledobjects", "so"], "ScaledObject"),
    **dict.fromkeys(["httpscaledobject", "httpscaledobjects", "httpso"], "HTTPScaledObject"),
    **dict.fromkeys(["hpa", "horizontalpodautoscaler", "horizontalpodautoscalers"], "HorizontalPodAutoscaler"),
    **dict.fromkeys(["podautoscaler", "podautoscalers", "kpa", "pa"], "PodAutoscaler"),
    **dict.fromkeys(["nodeclaim", "nodeclaims"], "NodeClaim"),
    **dict.fromkeys(["nodepool", "nodepools"], "NodePool"),
    **dict.fromkeys(["secret", "secrets"], "Secret"),
    **dict.fromkeys(["configmap", "configmaps", "cm"], "ConfigMap"),
    **dict.fromkeys(["deployment", "deployments", "deploy"], "Deployment"),
    **dict.fromkeys(["job", "jobs"], "Job"),
    **dict.fromkeys(["namespace", "namespaces", "ns"], "Namespace"),
    **dict.fromkeys(["ksvc", "kservice"], "KnativeService"),
    **dict.fromkeys(["podmonitor", "podmonitors"], "PodMonitor"),
    **dict.fromkeys(["prometheusrule", "prometheusrules"], "PrometheusRule"),
    **dict.fromkeys(["authorizationpolicy", "authorizationpolicies", "ap"], "AuthorizationPolicy"),
    **dict.fromkeys(["requestauthentication", "requestauthentications", "ra"], "RequestAuthentication"),
}
"""kubectl resource names (plural, singular, short) -> kind."""
CLUSTER_SCOPED = frozenset({"Namespace", "NodeClaim", "NodePool", "EC2NodeClass"})


@dataclass
class Obj:
    """An object as commands see it: kind, name, namespace, labels, and for pods their containers."""

    kind: str
    name: str
    namespace: str | None
    labels: dict[str, str] = field(default_factory=dict)
    containers: dict[str, list[int]] = field(default_factory=dict)
    """Container (and init container) name -> container ports."""
    data_keys: frozenset[str] = frozenset()
    raw: dict[str, Any] | None = None


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} not found on PATH: run `make tools` (and scripts/system_deps.sh)")
    return path


def run(args: list[str], cwd: Path = REPO, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, input=stdin, timeout=180)


def profile_file(profile: str) -> Path:
    return CHART / "ci" / f"{profile}-values.yaml"


@functools.cache
def rendered(profile: str) -> tuple[dict[str, Any], ...]:
    """``helm template classifier ./chart -n ml -f chart/ci/<profile>-values.yaml``."""
    cmd = [tool("helm"), "template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(profile_file(profile))]
    result = run(cmd)
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def _pod_containers(pod: dict[str, Any]) -> dict[str, list[int]]:
    out = {}
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        out[c["name"]] = [p["containerPort"] for p in c.get("ports", [])]
        # A port the process is told to listen on serves too (the predictor's metrics port: Knative allows
        # one declared port per container, and kubectl port-forward needs none declared).
        out[c["name"]] += [int(a.split("=", 1)[1]) for a in c.get("args", []) if a.startswith("--http_metrics_port=")]
    return out


def _secret_refs(node: Any, out: dict[str, set[str]]) -> None:
    if isinstance(node, dict):
        ref = node.get("secretKeyRef")
        if isinstance(ref, dict):
            out.setdefault(ref["name"], set()).add(ref["key"])
        volume = node.get("secret")
        if isinstance(volume, dict) and "secretName" in volume:  # a Secret volume (its listed keys)
            out.setdefault(volume["secretName"], set()).update(i["key"] for i in volume.get("items", []))
        for target in node.get("secretTargetRef", []) if isinstance(node.get("secretTargetRef"), list) else []:
            out.setdefault(target["name"], set()).add(target["key"])
        for v in node.values():
            _secret_refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _secret_refs(v, out)


def _predictor_objects(isvc: dict[str, Any]) -> list[Obj]:
    name, ns = isvc["metadata"]["name"], isvc["metadata"].get("namespace", NAMESPACE)
    predictor = isvc["spec"]["predictor"]
    labels = {**predictor.get("labels", {}), "serving.kserve.io/inferenceservice": name, "component": "predictor"}
    containers = _pod_containers(predictor)
    env = {e["name"] for c in predictor["containers"] for e in c.get("env", [])}
    if "STORAGE_URI" in env:
        containers["storage-initializer"] = []
    annotations = isvc["metadata"].get("annotations", {})
    if annotations.get("serving.kserve.io/deploymentMode") == "Knative":
        revision = f"{name}-predictor-00001"
        labels |= {"serving.knative.dev/service": f"{name}-predictor", "serving.knative.dev/revision": revision}
        containers["queue-proxy"] = [8012, 9091]
        return [
            Obj("KnativeService", f"{name}-predictor", ns, labels),
            Obj("Revision", revision, ns, labels),
            Obj("PodAutoscaler", revision, ns, labels),
            Obj("Deployment", f"{revision}-deployment", ns, labels),
            Obj("Pod", f"{revision}-deployment-5d8f9c7b6-x2x4z", ns, labels, containers),
        ]
    out = [
        Obj("Deployment", f"{name}-predictor", ns, labels),
        Obj("Pod", f"{name}-predictor-6d9f7c8b5-x2x4z", ns, labels, containers),
    ]
    autoscaler = annotations.get("serving.kserve.io/autoscalerClass", "hpa")
    if autoscaler == "hpa":
        out.append(Obj("HorizontalPodAutoscaler", f"{name}-predictor", ns, labels))
    elif autoscaler == "keda":
        out.append(Obj("ScaledObject", f"{name}-predictor", ns, labels))
        out.append(Obj("HorizontalPodAutoscaler", f"keda-hpa-{name}-predictor", ns, labels))
    return out


def _workload_pod(workload: dict[str, Any], ns: str | None) -> Obj:
    """The pod a Deployment (``NAME-<hash>-<id>``) or a Job (``NAME-<id>``) creates."""
    name, template = workload["metadata"]["name"], workload["spec"]["template"]
    labels = dict(template["metadata"].get("labels", {}))
    if workload["kind"] == "Job":
        labels |= {"job-name": name, "batch.kubernetes.io/job-name": name}
        pod_name = f"{name}-k7x2p"
    else:
        pod_name = f"{name}-6c8d9f7b4-abcde"
    return Obj("Pod", pod_name, ns, labels, _pod_containers(template["spec"]))


@functools.cache
def world(profile: str) -> tuple[Obj, ...]:
    """The profile's rendered objects plus what the controllers create from them."""
    out: list[Obj] = [Obj("Namespace", NAMESPACE, None), Obj("Event", "", NAMESPACE)]
    secrets: dict[str, set[str]] = {}
    for o in rendered(profile):
        meta = o["metadata"]
        ns = None if o["kind"] in CLUSTER_SCOPED else meta.get("namespace", NAMESPACE)
        pod = _workload_pod(o, ns) if o["kind"] in ("Deployment", "Job") else None
        # a workload has its pod's containers: `kubectl logs deploy/NAME -c C`, `job/NAME -c C`
        out.append(Obj(o["kind"], meta["name"], ns, meta.get("labels", {}), pod.containers if pod else {}, raw=o))
        out += [pod] if pod else []
        _secret_refs(o, secrets)
        if o["kind"] == "InferenceService":
            out += _predictor_objects(o)
            if o["metadata"]["annotations"].get("serving.kserve.io/deploymentMode") == "Knative":
                out.append(Obj("ConfigMap", "config-features", "knative-serving"))
                out.append(Obj("Namespace", "knative-serving", None))
        elif o["kind"] in ("ScaledObject", "HTTPScaledObject"):
            if o["kind"] == "HTTPScaledObject":  # the add-on's operator makes a ScaledObject of the same name
                out.append(Obj("ScaledObject", meta["name"], ns, meta.get("labels", {})))
            out.append(Obj("HorizontalPodAutoscaler", f"keda-hpa-{meta['name']}", ns, meta.get("labels", {})))
        elif o["kind"] == "NodePool":
            out.append(Obj("NodeClaim", f"{meta['name']}-x7k2p", None, {"karpenter.sh/nodepool": meta["name"]}))
    out += [Obj("Secret", name, NAMESPACE, data_keys=frozenset(keys)) for name, keys in secrets.items()]
    return tuple(out)


def predictor_pod(profile: str) -> Obj:
    return next(o for o in world(profile) if o.kind == "Pod" and o.labels.get("component") == "predictor")


# ---------------------------------------------------------------- the values schema


@functools.cache
def values_schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def set_key_error(key: str) -> str | None:
    """Why ``--set KEY=...`` names no value of the chart's schema (``a.b[0].c`` paths), or None."""
    node = values_schema()
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if part.startswith("["):
            if node.get("type") != "array":
                return f"--set {key}: {part} indexes a value that is not a list"
            node = node.get("items", {})
            continue
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict) or node.get("additionalProperties") is True:
            node = node["additionalProperties"] if isinstance(node.get("additionalProperties"), dict) else {}
        elif "properties" in node or node.get("additionalProperties") is False:
            return f"--set {key}: {part!r} is not a key of values.schema.json (known: {', '.join(sorted(props))})"
        else:
            return None
    return None


# ---------------------------------------------------------------- Makefile, Dockerfile, CLIs


@functools.cache
def make_targets() -> frozenset[str]:
    """The targets ``make help`` lists (every target carries a ``##`` line)."""
    out = run(["make", "--no-print-directory", "help"]).stdout
    return frozenset(line.split()[0] for line in out.splitlines() if line.strip())


@functools.cache
def make_variables() -> frozenset[str]:
    text = (REPO / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Z_]+)\s*[?:]?=", text, re.MULTILINE))


@functools.cache
def dockerfile_args() -> frozenset[str]:
    return frozenset(re.findall(r"^ARG\s+([A-Za-z_]+)", (REPO / "Dockerfile").read_text(), re.MULTILINE))


@dataclass(frozen=True)
class Flags:
    """The flags a CLI's --help lists: long name -> takes a value; short letter -> long name."""

    long: dict[str, bool]
    short: dict[str, str]
    snake_alias: bool = False
    """The CLI takes ``--a_b`` for ``--a-b`` (our commands, predictor/flags.py: their --help says so)."""


HELM_FLAG = re.compile(r"^\s+(?:-(\w), )?--([\w-]+)(?: (\w+))?(?:\s{2,}|$)")
KUBECTL_FLAG = re.compile(r"^\s+(?:-(\w), )?--([\w-]+)=([^\s:]*)")
ARGPARSE_FLAG = re.compile(r"(?:^|[\s,\[])(-\w|--[\w-]+)(?:[ =]([A-Z_{][^\s,\]]*))?")


@functools.cache
def helm_flags(sub: str) -> Flags:
    out = run([tool("helm"), *sub.split(), "--help"]).stdout
    long, short = {}, {}
    for line in out.splitlines():
        m = HELM_FLAG.match(line)
        if m:
            long[m.group(2)] = m.group(3) is not None
            if m.group(1):
                short[m.group(1)] = m.group(2)
    return Flags(long, short)


@functools.cache
def kubectl_flags(verb: str) -> Flags:
    out = run([tool("kubectl"), *verb.split(), "--help"]).stdout + run([tool("kubectl"), "options"]).stdout
    long, short = {}, {}
    for line in out.splitlines():
        m = KUBECTL_FLAG.match(line)
        if m:
            long[m.group(2)] = m.group(3) not in ("false", "true")
            if m.group(1):
                short[m.group(1)] = m.group(2)
    return Flags(long, short)


@functools.cache
def python_flags(module: str, sub: str | None) -> Flags | str:
    """Flags of ``python -m MODULE [SUB] --help`` (argparse), or the error it printed."""
    args = [sys.executable, "-m", module, *([sub] if sub else []), "--help"]
    result = run(args)
    if result.returncode != 0:
        return (result.stdout + result.stderr)[-800:]
    long: dict[str, bool] = {}
    short: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if not line.lstrip().startswith("-"):
            continue  # usage and description lines
        names = [(f, v) for f, v in ARGPARSE_FLAG.findall(line)]
        longs = [f[2:] for f, _ in names if f.startswith("--")]
        for f, value in names:
            if f.startswith("--"):
                long.setdefault(f[2:], bool(value))
            elif longs:
                short[f[1:]] = longs[0]
    return Flags(long, short, "snake_case spelling" in result.stdout)


@functools.cache
def script_flags(script: str) -> Flags | str:
    result = run([sys.executable, script, "--help"])
    if result.returncode != 0:
        return (result.stdout + result.stderr)[-800:]
    long = {f[2:]: bool(v) for f, v in ARGPARSE_FLAG.findall(result.stdout) if f.startswith("--")}
    return Flags(long, {})
