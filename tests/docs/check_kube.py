"""kubectl and helm commands against the objects of the document's profile (tests/docs/world.py).

kubectl: flags against ``kubectl <verb> --help``; every kind, name, label selector, container and port
against the rendered and controller-created objects in the namespace the command targets (no ``-n``
means ``default``, where nothing of ours is); ``patch`` applied with ``kubectl patch --local`` to the
rendered InferenceService and the result validated against the KServe CRD; ``create`` run with
``--dry-run=client``. helm: flags against ``helm <sub> --help``, release, chart and namespace, ``--set``
keys against values.schema.json, and install/upgrade/template rendered with ``helm template`` (with
the profile's values under ``--reuse-values``).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import yaml

from classifier_kube.knative_features import ENABLED_BY_DEFAULT, gated_fields
from classifier_kube.validate import CrdValidator

from .shell import Context
from .world import (
    CHART,
    KINDS,
    NAMESPACE,
    RELEASE,
    REPO,
    Flags,
    Obj,
    helm_flags,
    kubectl_flags,
    profile_file,
    set_key_error,
    tool,
    world,
)
from .world import run as run_tool

PLACEHOLDER_FILES = {"my-values.yaml"}
"""Values files the docs name as the reader's own: the profile's file stands in."""


def parse(words: list[str], flags: Flags, ctx: Context, tool_name: str) -> tuple[list[str], dict[str, list[str]]]:
    """Positionals and ``{long flag: values}``; an unknown flag is a failure."""
    positionals: list[str] = []
    options: dict[str, list[str]] = {}
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--") and len(w) > 2:
            name, eq, value = w[2:].partition("=")
        elif w.startswith("-") and len(w) > 1 and w != "-":
            name, value, eq = flags.short.get(w[1], w[1]), w[2:], "=" if len(w) > 2 else ""
        else:
            positionals.append(w)
            i += 1
            continue
        if name not in flags.long:
            ctx.fail(f"{tool_name}: unknown flag {w!r} (not in --help)")
        elif flags.long[name] and not eq:
            i += 1
            value = words[i] if i < len(words) else ""
        options.setdefault(name, []).append(value)
        i += 1
    return positionals, options


def leading_positionals(words: list[str], root: Flags, n: int) -> list[str]:
    """The first ``n`` positional words, skipping the global flags (and their values) before them."""
    positionals: list[str] = []
    i = 0
    while i < len(words) and len(positionals) < n:
        w = words[i]
        if w.startswith("--"):
            name, eq, _ = w[2:].partition("=")
            i += 2 if root.long.get(name) and not eq else 1
        elif w.startswith("-") and w != "-":
            i += 2 if root.long.get(root.short.get(w[1], "")) and len(w) == 2 else 1
        else:
            positionals.append(w)
            i += 1
    return positionals


def _verb(words: list[str], root: Flags) -> list[str]:
    """kubectl's verb path (``get``, ``create namespace``, ``create secret generic``)."""
    positionals = leading_positionals(words, root, 3)
    if positionals[:1] == ["create"]:
        return positionals[:3] if positionals[1:2] == ["secret"] else positionals[:2]
    return positionals[:1]


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, selector.split(",")):
        key, op, value = re.match(r"^([^!=]+)(!=|==|=)?(.*)$", term).groups()
        if op in ("=", "==") and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op is None and key not in labels:
            return False
    return True


def _targets(positionals: list[str]) -> tuple[list[str], list[str]]:
    """(resource names as written, object names) of ``get pods,revisions NAME`` or ``get pod/NAME``."""
    if not positionals:
        return [], []
    if all("/" in p for p in positionals):
        pairs = [p.split("/", 1) for p in positionals]
        return [k for k, _ in pairs], [n for _, n in pairs]
    return positionals[0].split(","), positionals[1:]


def check_kubectl(words: list[str], ctx: Context) -> None:
    ctx.checked["kubectl"] += 1
    verb = _verb(words[1:], kubectl_flags("options"))
    if not verb:
        return ctx.fail("kubectl: no verb")
    positionals, opts = parse(words[1:], kubectl_flags(" ".join(verb)), ctx, "kubectl")
    args = positionals[len(verb) :]
    ns = (opts.get("namespace") or ["default"])[-1]
    objects = [o for o in world(ctx.profile) if "all-namespaces" in opts or o.namespace in (ns, None)]
    if verb[0] == "create":
        return _check_create(verb, args, opts, ns, words, ctx)
    if verb[0] == "apply":
        return  # input comes from the pipeline (checked there) and a cluster answers the rest
    if verb[0] in ("logs", "port-forward"):  # one pod: NAME or pod/NAME (or -l for logs)
        target = args[0] if args else ""
        resources, names = _targets([target]) if "/" in target else (["pod"], [target] if target else [])
    else:
        resources, names = _targets(args)
    selected = _select(resources, names, opts, objects, ns, ctx)
    if verb[0] == "logs" and opts.get("container"):
        container = opts["container"][-1]
        if not any(container in o.containers for o in selected):
            ctx.fail(f"kubectl logs: no container {container!r} in the pods (have {_containers(selected)})")
    if verb[0] == "port-forward":
        remote = [int(p.split(":")[-1]) for p in args[1:]]
        ports = {port for o in selected for ps in o.containers.values() for port in ps}
        if not set(remote) <= ports:
            ctx.fail(f"kubectl port-forward: port(s) {remote} not served by the pod (ports {sorted(ports)})")
    if verb[0] == "patch":
        _check_patch(opts, selected, ctx)


def _containers(objects: list[Obj]) -> list[str]:
    return sorted({c for o in objects for c in o.containers})


def _select(resources: list[str], names: list[str], opts: dict, objects: list[Obj], ns: str, ctx: Context) -> list[Obj]:
    selected: list[Obj] = []
    selector = (opts.get("selector") or [""])[-1]
    for resource in resources:
        kind = KINDS.get(resource.lower())
        if kind is None:
            ctx.fail(f"kubectl: resource type {resource!r} is none of the kinds these objects have")
            continue
        of_kind = [o for o in objects if o.kind == kind]
        if kind == "Event":
            continue
        if names:
            found = [o for o in of_kind if o.name in names]
            missing = set(names) - {o.name for o in found}
            if missing:
                have = ", ".join(sorted(o.name for o in of_kind)) or "none"
                ctx.fail(f"kubectl: no {kind} named {sorted(missing)} in namespace {ns} (there: {have})")
            of_kind = found
        if selector:
            of_kind = [o for o in of_kind if _selector_matches(selector, o.labels)]
            if not of_kind:
                ctx.fail(f"kubectl: no {kind} in namespace {ns} carries the labels {selector!r}")
        elif not of_kind and not names:
            ctx.fail(f"kubectl: no {kind} in namespace {ns} for profile {ctx.profile}")
        selected += of_kind
    return selected


def _check_patch(opts: dict, selected: list[Obj], ctx: Context) -> None:
    patch_type = (opts.get("type") or ["strategic"])[-1]
    body = (opts.get("patch") or [""])[-1]
    for obj in selected:
        if obj.kind == "ConfigMap" and obj.name == "config-features":
            _check_config_features(body, ctx)
        elif obj.raw is not None:
            if patch_type not in ("merge", "json"):
                ctx.fail(f"kubectl patch: a custom resource needs --type merge or json, not {patch_type}")
                continue
            _patch_locally(obj.raw, patch_type, body, ctx)


def _patch_locally(raw: dict, patch_type: str, body: str, ctx: Context) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(raw, f)
        f.flush()
        args = [tool("kubectl"), "patch", "--local", "-f", f.name, "--type", patch_type, "-p", body, "-o", "yaml"]
        result = run_tool(args)
    if result.returncode != 0:
        return ctx.fail(f"kubectl patch --local failed: {result.stderr.strip()}")
    errors = _validator().validate(yaml.safe_load(result.stdout)).errors
    if errors:
        ctx.fail("the patched object is invalid: " + "; ".join(errors))


_VALIDATOR: list[CrdValidator] = []


def _validator() -> CrdValidator:
    if not _VALIDATOR:
        _VALIDATOR.append(CrdValidator())
    return _VALIDATOR[0]


def _check_config_features(body: str, ctx: Context) -> None:
    """A patch of Knative's config-features: every key a flag Knative's CRD names, every value a Flag."""
    known = set(gated_fields(_validator()).values()) | ENABLED_BY_DEFAULT
    try:
        data = json.loads(body)["data"]
    except (ValueError, KeyError, TypeError) as e:
        return ctx.fail(f"config-features patch is not {{'data': {{...}}}} JSON: {e}")
    for flag, value in data.items():
        if flag not in known:
            ctx.fail(f"config-features: {flag!r} is no Knative feature flag (known: {', '.join(sorted(known))})")
        if str(value).lower() not in ("enabled", "disabled", "allowed"):
            ctx.fail(f"config-features: {flag}={value!r}; Knative takes Enabled, Disabled or Allowed")


def _check_create(verb: list[str], args: list[str], opts: dict, ns: str, words: list[str], ctx: Context) -> None:
    if verb[:2] == ["create", "namespace"]:
        if args != [NAMESPACE]:
            ctx.fail(f"kubectl create namespace {args}: the docs' release lives in {NAMESPACE}")
    elif verb[:3] == ["create", "secret", "generic"]:
        secrets = [o for o in world(ctx.profile) if o.kind == "Secret" and o.namespace == ns and o.name in args]
        literal_keys = {v.split("=", 1)[0] for v in opts.get("from-literal", [])}
        if not secrets:
            ctx.fail(f"kubectl create secret: the chart reads no Secret {args} in namespace {ns}")
        elif not secrets[0].data_keys <= literal_keys:
            ctx.fail(
                f"kubectl create secret: the chart reads key(s) {sorted(secrets[0].data_keys)}, "
                f"got {sorted(literal_keys)}"
            )
    else:
        return ctx.fail(f"kubectl {' '.join(verb)}: no check for this verb")
    dry = [w if "$(" not in w else re.sub(r"\$\(.*\)", "x", w) for w in words[1:]]
    if not any(w.startswith("--dry-run") for w in dry):
        dry += ["--dry-run=client", "-o", "yaml"]
    result = run_tool([tool("kubectl"), *dry])
    if result.returncode != 0:
        ctx.fail(f"kubectl {' '.join(dry)} failed: {result.stderr.strip()}")


# ---------------------------------------------------------------- helm


def _set_pairs(values: list[str]) -> list[str]:
    """``a=1,b={x,y}`` -> ``["a=1", "b={x,y}"]`` (commas inside braces belong to a list)."""
    out: list[str] = []
    for value in values:
        depth, start = 0, 0
        for i, ch in enumerate(value):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                out.append(value[start:i])
                start = i + 1
        out.append(value[start:])
    return out


def check_helm(words: list[str], ctx: Context) -> None:
    ctx.checked["helm"] += 1
    subs = leading_positionals(words[1:], helm_flags(""), 2)
    sub = subs[0] if subs else ""
    if sub == "get" and len(subs) > 1:
        sub = f"get {subs[1]}"
    positionals, opts = parse(words[1:], helm_flags(sub), ctx, "helm")
    args = positionals[len(sub.split()) :]
    ns = (opts.get("namespace") or ["default"])[-1]
    if ns != NAMESPACE and sub not in ("lint",):
        ctx.fail(f"helm {sub}: namespace {ns!r}; the release lives in {NAMESPACE} (add -n {NAMESPACE})")
    for pair in _set_pairs(opts.get("set", []) + opts.get("set-string", [])):
        if error := set_key_error(pair.split("=", 1)[0]):
            ctx.fail(error)
    if sub in ("install", "upgrade", "template"):
        _check_render(sub, args, opts, ctx)
    elif sub in ("rollback", "get values", "status", "history", "uninstall"):
        if not args or args[0] != RELEASE:
            ctx.fail(f"helm {sub}: release {args[:1]} is not the docs' release {RELEASE}")
    elif sub == "lint":
        result = run_tool([tool("helm"), "lint", *words[2:]])
        if result.returncode != 0:
            ctx.fail(f"helm lint failed: {result.stdout[-600:]}")
    else:
        ctx.fail(f"helm {sub}: no check for this subcommand")


def _check_render(sub: str, args: list[str], opts: dict, ctx: Context) -> None:
    if len(args) != 2:
        return ctx.fail(f'"helm {sub}" requires 2 arguments (release and chart), got {args}')
    release, chart = args
    if release != RELEASE:
        ctx.fail(f"helm {sub}: release {release!r}, the docs' release is {RELEASE}")
    if (REPO / chart).resolve() != CHART:
        return ctx.fail(f"helm {sub}: chart {chart!r} is not ./chart")
    files = [profile_file(ctx.profile)] if "reuse-values" in opts else []
    for f in opts.get("values", []):
        path = profile_file(ctx.profile) if f in PLACEHOLDER_FILES else REPO / f
        if not path.is_file():
            ctx.fail(f"helm {sub}: values file {f} does not exist")
        files.append(path)
    cmd = [tool("helm"), "template", release, str(CHART), "-n", (opts.get("namespace") or ["default"])[-1]]
    for f in files:
        cmd += ["-f", str(f)]
    for pair in opts.get("set", []):
        cmd += ["--set", pair]
    result = run_tool(cmd, cwd=Path(REPO))
    if result.returncode != 0:
        ctx.fail(f"helm template with these values fails: {result.stderr.strip()[-800:]}")
