"""Validate custom resources against upstream CRDs the way an API server with strict field validation would.

The CRDs ship in :data:`CRD_DIR` (byte-identical upstream copies; ``crds/SOURCES.md`` names each one's
project, tag, commit, blob hash and license). Used by the chart tests on every rendered object, and by
anything that must not send an object (or a patch result) a cluster would refuse.

As far as an offline check can:

* every ``type: object`` node that lists ``properties`` and has neither ``additionalProperties`` nor
  ``x-kubernetes-preserve-unknown-fields`` is treated as closed, so a misspelled field fails (CRDs may
  not say ``additionalProperties: false``; the API server prunes or, strictly, rejects unknown fields);
* ``x-kubernetes-list-type: map`` keys and ``set`` items must be unique;
* ``metadata`` (only ``type: object`` in CRDs) is checked here: DNS-1123 names, string label and
  annotation values;
* CEL rules (``x-kubernetes-validations``) that apply to a node of the object are collected in
  :attr:`CrdResult.unchecked_cel` unless a rule evaluator is given; they are never counted as passes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parent / "crds"
"""The upstream CRDs shipped with the package."""

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the 2 MB InferenceService CRD in ~1 s


@dataclass
class CrdResult:
    """Outcome of validating one object: schema errors, and CEL rules that were not evaluated."""

    errors: list[str] = field(default_factory=list)
    unchecked_cel: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No errors (unchecked CEL rules are not errors, but are not passes either)."""
        return not self.errors


RuleHook = Callable[[dict[str, Any], Any, str, str, CrdResult], None]
"""``hook(rule, value, kind, path, result)``: called for each CEL rule on a node the object has."""


def _record_unchecked(rule: dict[str, Any], value: Any, kind: str, path: str, result: CrdResult) -> None:
    result.unchecked_cel.append(f"{kind} {path or '/'}: {rule['rule']}")


def close_objects(node: Any) -> None:
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
            close_objects(value)
    elif isinstance(node, list):
        for value in node:
            close_objects(value)


class CrdValidator:
    """Validators for every kind in a CRD directory, built once (the InferenceService schema is 2 MB).

    Args:
        crd_dir: Directory searched recursively for CRD YAML files (other documents are skipped).

    Raises:
        FileNotFoundError: ``crd_dir`` is not a directory.
    """

    def __init__(self, crd_dir: Path = CRD_DIR) -> None:
        crd_dir = Path(crd_dir)
        if not crd_dir.is_dir():
            raise FileNotFoundError(f"CRDs not found at {crd_dir}")
        self.crd_dir = crd_dir
        self.schemas: dict[tuple[str, str], dict[str, Any]] = {}
        self.validators: dict[tuple[str, str], jsonschema.Draft4Validator] = {}
        for path in sorted(crd_dir.rglob("*.yaml")):
            for doc in yaml.load_all(path.read_text(), Loader=_LOADER):
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue  # e.g. crds/keda/patches/: kustomize patches, not CRDs
                self.add_crd(doc)

    def add_crd(self, doc: dict[str, Any]) -> None:
        """Add (or replace) the served versions of one CRD document, e.g. one read from a live cluster."""
        group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
        for version in doc["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            close_objects(schema)
            key = (f"{group}/{version['name']}", kind)
            self.schemas[key] = schema
            self.validators[key] = jsonschema.Draft4Validator(schema)

    def knows(self, obj: dict[str, Any]) -> bool:
        """Whether a CRD for the object's apiVersion and kind is loaded."""
        return (obj.get("apiVersion"), obj.get("kind")) in self.validators

    def validate(self, obj: dict[str, Any], on_rule: RuleHook | None = None) -> CrdResult:
        """Schema errors, metadata errors and list uniqueness of ``obj``; CEL rules go to ``on_rule``."""
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key not in self.validators:
            return CrdResult(errors=[f"no CRD for {key[0]} {key[1]} in {self.crd_dir}"])
        result = CrdResult()
        for err in sorted(self.validators[key].iter_errors(obj), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            result.errors.append(f"{key[1]} {where}: {err.message}")
        result.errors += check_metadata(obj)
        self._walk(self.schemas[key], obj, key[1], "", result, on_rule or _record_unchecked)
        return result

    def _walk(self, schema: dict[str, Any], value: Any, kind: str, path: str, result: CrdResult, on_rule) -> None:
        """Visit CEL rules and check list-map/set uniqueness along the nodes the object has."""
        for rule in schema.get("x-kubernetes-validations", []):
            on_rule(rule, value, kind, path, result)
        if isinstance(value, dict):
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for k, v in value.items():
                if k in props:
                    self._walk(props[k], v, kind, f"{path}/{k}", result, on_rule)
                elif isinstance(extra, dict):
                    self._walk(extra, v, kind, f"{path}/{k}", result, on_rule)
        elif isinstance(value, list):
            _check_list(schema, value, kind, path, result)
            for i, item in enumerate(value):
                self._walk(schema.get("items", {}), item, kind, f"{path}/{i}", result, on_rule)


def _check_list(schema: dict[str, Any], value: list, kind: str, path: str, result: CrdResult) -> None:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
        if len(seen) != len(set(seen)):
            result.errors.append(f"{kind} {path}: duplicate list-map keys {keys}")
    elif list_type == "set":
        items = [yaml.safe_dump(item) for item in value]
        if len(items) != len(set(items)):
            result.errors.append(f"{kind} {path}: duplicate items in a set")


def check_metadata(obj: dict[str, Any]) -> list[str]:
    """DNS-1123 name, string label values (valid label syntax) and string annotation values."""
    errors = []
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not isinstance(name, str) or len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        errors.append(f"{obj.get('kind')} metadata.name {name!r} is not a DNS-1123 subdomain")
    errors += [f"{obj.get('kind')} {e}" for e in invalid_labels(meta.get("labels") or {})]
    for key, value in (meta.get("annotations") or {}).items():
        if not isinstance(value, str):
            errors.append(f"{obj.get('kind')} annotation {key}={value!r} is not a string")
    return errors


def invalid_labels(labels: dict[str, Any]) -> list[str]:
    """The labels whose values are not strings of valid label syntax (at most 63 characters)."""
    return [
        f"label {k}={v!r} is not a valid label value (string)"
        for k, v in labels.items()
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v)
    ]
