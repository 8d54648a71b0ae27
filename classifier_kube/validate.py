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
* structural defaults (``default:``) are applied first, as the API server does before validating;
* CEL rules (``x-kubernetes-validations``) on every node the object has are evaluated with a real CEL
  interpreter (:mod:`classifier_kube.celrules`): a rule that returns false or fails to evaluate is an
  error carrying the rule's message. Transition rules (``oldSelf``) run when ``old`` is given (an update,
  e.g. the result of a patch) and are otherwise listed in :attr:`CrdResult.not_applicable_cel`; a rule
  that cannot be compiled here is listed in :attr:`CrdResult.unchecked_cel` with the reason, never
  counted as a pass.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from classifier_kube.celrules import RuleEvaluator

CRD_DIR = Path(__file__).resolve().parent / "crds"
"""The upstream CRDs shipped with the package."""

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the 2 MB InferenceService CRD in ~1 s

ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()
"""Marks a node with no old value (a create, or a position an update does not correlate)."""


@dataclass
class CrdResult:
    """Outcome of validating one object.

    Attributes:
        errors: Schema, metadata and list errors, and failed CEL rules (with the rule's message).
        cel_evaluated: CEL rule evaluations that ran (passed or failed).
        not_applicable_cel: Transition rules skipped because there was no old object (a create).
        unchecked_cel: Rules that could not be evaluated here, each with the reason.
    """

    errors: list[str] = field(default_factory=list)
    cel_evaluated: int = 0
    not_applicable_cel: list[str] = field(default_factory=list)
    unchecked_cel: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No errors (unchecked CEL rules are not errors, but are not passes either)."""
        return not self.errors


@dataclass(frozen=True)
class RuleSite:
    """The node a CEL rule sits on: its schema, its value and (on an update) its old value."""

    kind: str
    path: str
    schema: dict[str, Any]
    value: Any
    old: Any = ABSENT

    @property
    def has_old(self) -> bool:
        """Whether the node has a correlated old value."""
        return self.old is not ABSENT


RuleHook = Callable[[dict[str, Any], RuleSite, CrdResult], None]
"""``hook(rule, site, result)``: called for each CEL rule on a node the object has."""


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


def apply_defaults(schema: dict[str, Any], value: Any) -> None:
    """Structural defaulting in place: missing fields get ``default``; nulls of non-nullable fields go first."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key in value and value[key] is None and not sub.get("nullable"):
                del value[key]  # the API server prunes such nulls before defaulting
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                apply_defaults(sub, child)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for child in value:
            apply_defaults(schema["items"], child)


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
        self.rules = RuleEvaluator()
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
            # Every object has these whether its schema lists them or not (Istio's list only spec, status).
            for name, kind_of in (("apiVersion", "string"), ("kind", "string"), ("metadata", "object")):
                schema.setdefault("properties", {}).setdefault(name, {"type": kind_of})
            close_objects(schema)
            key = (f"{group}/{version['name']}", kind)
            self.schemas[key] = schema
            self.validators[key] = jsonschema.Draft4Validator(schema)

    def knows(self, obj: dict[str, Any]) -> bool:
        """Whether a CRD for the object's apiVersion and kind is loaded."""
        return (obj.get("apiVersion"), obj.get("kind")) in self.validators

    def validate(self, obj: dict[str, Any], on_rule: RuleHook | None = None, *, old: Any = None) -> CrdResult:
        """Validate ``obj`` as a create, or as an update of ``old`` (transition rules then run).

        Args:
            obj: The object (not modified; defaults are applied to a copy).
            on_rule: Called for each CEL rule instead of evaluating it.
            old: The object before the update (e.g. before a ``kubectl patch``); None for a create.
        """
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key not in self.validators:
            return CrdResult(errors=[f"no CRD for {key[0]} {key[1]} in {self.crd_dir}"])
        schema = self.schemas[key]
        obj = copy.deepcopy(obj)
        apply_defaults(schema, obj)
        result = CrdResult()
        for err in sorted(self.validators[key].iter_errors(obj), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            result.errors.append(f"{key[1]} {where}: {err.message}")
        result.errors += check_metadata(obj)
        if old is None:
            old = ABSENT
        else:
            old = copy.deepcopy(old)
            apply_defaults(schema, old)
        self._walk(schema, RuleSite(key[1], "", schema, obj, old), result, on_rule or self.evaluate_rule)
        return result

    def evaluate_rule(self, rule: dict[str, Any], site: RuleSite, result: CrdResult) -> None:
        """The default rule hook: evaluate with CEL and record the outcome on ``result``."""
        outcome = self.rules.evaluate(rule, site.schema, site.value, site.old, site.has_old)
        where = f"{site.kind} {site.path or '/'}{rule.get('fieldPath', '')}"
        if outcome.status in ("passed", "failed"):
            result.cel_evaluated += 1
        if outcome.status == "failed":
            result.errors.append(f"{where}: {outcome.message} (x-kubernetes-validations rule: {rule['rule']})")
        elif outcome.status == "not_applicable":
            result.not_applicable_cel.append(f"{where}: {rule['rule']}")
        elif outcome.status == "uncompilable":
            result.unchecked_cel.append(f"{where}: {rule['rule']} ({outcome.message})")

    def uncompilable_rules(self) -> list[str]:
        """Every rule of every loaded CRD that cannot be evaluated here, with the reason."""
        found = []
        for (_, kind), schema in sorted(self.schemas.items()):
            for path, rule in iter_rules(schema):
                compiled = self.rules.compiled(rule)
                if compiled.program is None:
                    found.append(f"{kind} {path or '/'}: {rule['rule']} ({compiled.problem})")
        return found

    def _walk(self, schema: dict[str, Any], site: RuleSite, result: CrdResult, on_rule: RuleHook) -> None:
        """Visit CEL rules and check list-map/set uniqueness along the nodes the object has."""
        value, old = site.value, site.old
        if value is None:
            return  # the API server evaluates no rule on a null
        for rule in schema.get("x-kubernetes-validations", []):
            on_rule(rule, site, result)
        if isinstance(value, dict):
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for k, v in value.items():
                sub = props.get(k, extra if isinstance(extra, dict) else None)
                if sub is not None:
                    child_old = old.get(k, ABSENT) if isinstance(old, dict) else ABSENT
                    self._walk(sub, RuleSite(site.kind, f"{site.path}/{k}", sub, v, child_old), result, on_rule)
        elif isinstance(value, list):
            _check_list(schema, value, site.kind, site.path, result)
            items = schema.get("items", {})
            olds = _correlate(schema, value, old)
            for i, item in enumerate(value):
                self._walk(items, RuleSite(site.kind, f"{site.path}/{i}", items, item, olds[i]), result, on_rule)


def iter_rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``(path, rule)`` in a schema (``[]`` for list items, ``*`` for map values)."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for key, sub in schema.get("properties", {}).items():
        yield from iter_rules(sub, f"{path}/{key}")
    if isinstance(schema.get("items"), dict):
        yield from iter_rules(schema["items"], f"{path}/[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from iter_rules(schema["additionalProperties"], f"{path}/*")


def _correlate(schema: dict[str, Any], items: list[Any], old: Any) -> list[Any]:
    """Old value of each item: only ``x-kubernetes-list-type: map`` items correlate (by their keys)."""
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list):
        return [ABSENT] * len(items)
    keys = schema.get("x-kubernetes-list-map-keys", [])
    by_key = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
    return [by_key.get(tuple(i.get(k) for k in keys), ABSENT) if isinstance(i, dict) else ABSENT for i in items]


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
