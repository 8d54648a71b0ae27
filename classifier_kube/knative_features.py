"""Would a stock (or a given) Knative accept a Knative-mode InferenceService's predictor?

In Knative mode KServe turns ``spec.predictor`` into a Knative ``Service`` (KServe v0.20
``reconcilers/knative/ksvc_reconciler.go``, ``createKnativeService``): the pod-spec fields become
``spec.template.spec``; ``timeout`` becomes ``timeoutSeconds`` and ``responseStartTimeoutSeconds``,
``containerConcurrency`` stays; ``labels``/``annotations`` go to the template's metadata; the other
component fields become annotations or traffic targets. Knative's webhook then refuses any field behind
a feature flag its ``config-features`` ConfigMap does not enable. Knative's own Service CRD names that
flag in the field's description ("This is accessible behind a feature flag - kubernetes.podspec-fieldref"):
this module reads those notes (:func:`gated_fields`), maps the predictor onto the Service template
(:func:`knative_service`), and reports (:func:`check_predictor`) the fields Knative's schema does not
have and the gated fields used without their flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from classifier_kube.validate import CrdValidator

SERVICE_KEY = ("serving.knative.dev/v1", "Service")
FLAG_NOTE = re.compile(r"This is accessible behind a feature flag - ([a-z0-9][a-z0-9.-]*[a-z0-9])")
"""How Knative's CRD descriptions name a field's feature flag."""

ENABLED_BY_DEFAULT = frozenset({"kubernetes.podspec-volumes-emptydir"})
"""The gated flags a stock Knative Serving enables (``defaultFeaturesConfig()`` in knative/serving
``pkg/apis/config/features.go``, v1.23: every other flag the CRD names is ``Disabled``)."""

COMPONENT_FIELDS = frozenset(
    {
        # KServe v0.20 ComponentExtensionSpec: not part of the pod spec Knative receives.
        "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling",
        "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels",
        "annotations", "deploymentStrategy", "storageUris",
    }
)  # fmt: skip


def pod_spec_fields() -> frozenset[str]:
    """Field names of a Kubernetes PodSpec (the kubernetes client's model, a KServe dependency)."""
    from kubernetes.client.models.v1_pod_spec import V1PodSpec

    return frozenset(V1PodSpec.attribute_map.values())


def _template_spec_schema(validator: CrdValidator) -> dict[str, Any]:
    schema = validator.schemas[SERVICE_KEY]
    return schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]


def gated_fields(validator: CrdValidator) -> dict[str, str]:
    """``{path under spec.template.spec: feature flag}`` from the Knative Service CRD's descriptions.

    List items are written ``[]``, e.g. ``containers[].env[].valueFrom.fieldRef``.
    """
    found: dict[str, str] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        match = FLAG_NOTE.search(node.get("description", ""))
        if match and path:
            found[path] = match.group(1)
            return  # everything below a gated field is gated by the same flag
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}" if path else name)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(_template_spec_schema(validator), "")
    return found


@dataclass
class KnativeCheck:
    """What Knative would say about one predictor: schema errors and gated fields in use."""

    service: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    gated: dict[str, str] = field(default_factory=dict)
    """``{concrete path in spec.template.spec: flag}`` of every gated field the pod uses."""

    def needs(self) -> set[str]:
        """The flags this pod needs beyond a stock Knative's."""
        return set(self.gated.values()) - ENABLED_BY_DEFAULT

    def refused(self, enabled: Iterable[str]) -> list[str]:
        """Messages for the gated fields whose flag is neither in ``enabled`` nor on by default."""
        allowed = set(enabled) | ENABLED_BY_DEFAULT
        return [
            f"spec.predictor.{path} needs Knative feature {flag} (config-features), not enabled"
            for path, flag in sorted(self.gated.items())
            if flag not in allowed
        ]


def knative_service(isvc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The Knative Service KServe would create for ``isvc``'s predictor, and fields it could not place."""
    predictor = isvc["spec"]["predictor"]
    pod_fields = pod_spec_fields()
    spec = {k: v for k, v in predictor.items() if k in pod_fields}
    unplaced = sorted(set(predictor) - pod_fields - COMPONENT_FIELDS)
    if "timeout" in predictor:
        spec["timeoutSeconds"] = spec["responseStartTimeoutSeconds"] = predictor["timeout"]
    if "containerConcurrency" in predictor:
        spec["containerConcurrency"] = predictor["containerConcurrency"]
    template_meta = {k: predictor[k] for k in ("labels", "annotations") if k in predictor}
    meta = isvc.get("metadata", {})
    service = {
        "apiVersion": SERVICE_KEY[0],
        "kind": SERVICE_KEY[1],
        "metadata": {"name": f"{meta.get('name', '')}-predictor", "namespace": meta.get("namespace", "default")},
        "spec": {"template": {"metadata": template_meta, "spec": spec}},
    }
    return service, [
        f"spec.predictor.{k}: neither a pod-spec nor a component field (only custom-container predictors are mapped)"
        for k in unplaced
    ]


def check_predictor(isvc: dict[str, Any], validator: CrdValidator | None = None) -> KnativeCheck:
    """Map ``isvc``'s predictor onto a Knative Service and check it against Knative's CRD.

    Args:
        isvc: a ``serving.kserve.io/v1beta1`` InferenceService (Knative mode).
        validator: the CRD validator holding Knative's Service CRD (default: the shipped CRDs).
    """
    validator = validator or CrdValidator()
    service, errors = knative_service(isvc)
    result = validator.validate(service)
    check = KnativeCheck(service, errors + result.errors)
    notes = gated_fields(validator)
    _collect_gated(service["spec"]["template"]["spec"], "", "", notes, check.gated)
    return check


def _collect_gated(value: Any, pattern: str, path: str, notes: dict[str, str], out: dict[str, str]) -> None:
    """Record each node of ``value`` whose schema path (``pattern``) is gated; descend otherwise."""
    if pattern in notes:
        out[path] = notes[pattern]
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _collect_gated(v, f"{pattern}.{k}" if pattern else k, f"{path}.{k}" if path else k, notes, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _collect_gated(v, f"{pattern}[]", f"{path}[{i}]", notes, out)
