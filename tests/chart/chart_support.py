"""Shared helpers of the chart tests: real helm/kubectl/promtool processes and a CRD schema validator.

The validator checks custom resources against the upstream CRDs in ``../shared/crds`` the way the API
server would with strict field validation, as far as an offline check can:

* every ``type: object`` node that lists ``properties`` and has neither ``additionalProperties`` nor
  ``x-kubernetes-preserve-unknown-fields`` is treated as closed, so a misspelled field fails;
* ``x-kubernetes-list-type: map`` keys and ``set`` items must be unique;
* ``metadata`` (only ``type: object`` in CRDs) is checked here: DNS-1123 names, string label and
  annotation values;
* CEL rules (``x-kubernetes-validations``) cannot be evaluated here; every rule that applies to a
  node of the object is returned as *unchecked*, never counted as a pass.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "chart"
CRDS = REPO_ROOT.parent / "shared" / "crds"
PROFILES = sorted((CHART / "ci").glob("*-values.yaml"))
K8S_MINOR = "1.33"
"""Kubernetes minor the core kinds are validated against (kubernetes-validate, strict)."""

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


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


# ------------------------------------------------------------------------------------ CRD validation


@dataclass
class CrdResult:
    """Outcome of validating one object: schema errors, and CEL rules that were not evaluated."""

    errors: list[str] = field(default_factory=list)
    unchecked_cel: list[str] = field(default_factory=list)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the 2 MB InferenceService CRD in ~1 s


def _close_objects(node: Any) -> None:
    """Mark every object node with properties and no additionalProperties/preserve-unknown as closed."""
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


class CrdValidator:
    """Validators for every kind in the CRD directory, built once (the InferenceService schema is 2 MB)."""

    def __init__(self, crd_dir: Path) -> None:
        if not crd_dir.is_dir():
            pytest.fail(f"CRDs not found at {crd_dir} (expected ../shared/crds beside the repository)")
        self.schemas: dict[tuple[str, str], dict[str, Any]] = {}
        self.validators: dict[tuple[str, str], jsonschema.Draft4Validator] = {}
        for path in sorted(crd_dir.rglob("*.yaml")):
            for doc in yaml.load_all(path.read_text(), Loader=_LOADER):
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue  # e.g. crds/keda/patches/: kustomize patches, not CRDs
                group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
                for version in doc["spec"]["versions"]:
                    if not version.get("served"):
                        continue
                    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                    _close_objects(schema)
                    key = (f"{group}/{version['name']}", kind)
                    self.schemas[key] = schema
                    self.validators[key] = jsonschema.Draft4Validator(schema)

    def knows(self, obj: dict[str, Any]) -> bool:
        return (obj.get("apiVersion"), obj.get("kind")) in self.validators

    def validate(self, obj: dict[str, Any]) -> CrdResult:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key not in self.validators:
            return CrdResult(errors=[f"no CRD for {key[0]} {key[1]} in {CRDS}"])
        result = CrdResult()
        for err in sorted(self.validators[key].iter_errors(obj), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            result.errors.append(f"{key[1]} {where}: {err.message}")
        result.errors += check_metadata(obj)
        self._walk(self.schemas[key], obj, key[1], "", result)
        return result

    def _walk(self, schema: dict[str, Any], value: Any, kind: str, path: str, result: CrdResult) -> None:
        """Record CEL rules and check list-map/set uniqueness along the nodes the object has."""
        for rule in schema.get("x-kubernetes-validations", []):
            result.unchecked_cel.append(f"{kind} {path or '/'}: {rule['rule']}")
        if isinstance(value, dict):
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for k, v in value.items():
                if k in props:
                    self._walk(props[k], v, kind, f"{path}/{k}", result)
                elif isinstance(extra, dict):
                    self._walk(extra, v, kind, f"{path}/{k}", result)
        elif isinstance(value, list):
            list_type = schema.get("x-kubernetes-list-type")
            if list_type == "map":
                keys = schema.get("x-kubernetes-list-map-keys", [])
                seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
                if len(seen) != len(set(seen)):
                    result.errors.append(f"{kind} {path}: duplicate list-map keys {keys}")
            elif list_type == "set":
                seen = [yaml.safe_dump(item) for item in value]
                if len(seen) != len(set(seen)):
                    result.errors.append(f"{kind} {path}: duplicate items in a set")
            for i, item in enumerate(value):
                self._walk(schema.get("items", {}), item, kind, f"{path}/{i}", result)


def check_metadata(obj: dict[str, Any]) -> list[str]:
    """DNS-1123 name, string label values (valid label syntax) and string annotation values."""
    errors = []
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not isinstance(name, str) or len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        errors.append(f"{obj.get('kind')} metadata.name {name!r} is not a DNS-1123 subdomain")
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            errors.append(f"{obj.get('kind')} label {key}={value!r} is not a valid label value (string)")
    for key, value in (meta.get("annotations") or {}).items():
        if not isinstance(value, str):
            errors.append(f"{obj.get('kind')} annotation {key}={value!r} is not a string")
    return errors


def pod_labels_valid(labels: dict[str, Any]) -> list[str]:
    return [
        f"label {k}={v!r}"
        for k, v in labels.items()
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v)
    ]
