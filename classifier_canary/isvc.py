"""The InferenceService side of a canary: which revisions are stable and canary, and the merge patches
that move traffic, promote and roll back, generated from the live object in both deployment modes.

* Knative: ``spec.predictor.canaryTrafficPercent`` splits traffic between the latest created revision
  (canary) and the latest rolled-out one (stable); Prometheus tells them apart by the ``revision`` label
  (the Knative revision name). Promote removes the field (the latest revision takes all traffic, and the
  next revision is split again by the chart's value); roll back sets it to 0.
* Standard: the canary is ``spec.canary[0]`` (``trafficPercent`` and a whole predictor, an atomic list
  that a merge patch replaces whole); the ``revision`` label is the pod's ``image-classifier.io/track``.
  Promote makes the canary's pod the stable predictor (keeping the stable's replicas and autoscaling)
  and removes ``spec.canary``; roll back removes ``spec.canary``.

Every patch is the RFC 7386 diff between the live ``spec`` and the wanted one (:mod:`merge_patch`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from classifier_canary.errors import CanaryInputError
from classifier_canary.merge_patch import create_merge_patch

GROUP, VERSION, PLURAL, KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODES = {"Knative": "Knative", "Serverless": "Knative", "Standard": "Standard", "RawDeployment": "Standard"}
TRACK_LABEL = "image-classifier.io/track"
COMPONENT_FIELDS = frozenset(
    {
        "minReplicas",
        "maxReplicas",
        "scaleTarget",
        "scaleMetric",
        "scaleMetricType",
        "autoScaling",
        "containerConcurrency",
        "timeout",
        "canaryTrafficPercent",
        "deploymentStrategy",
        "batcher",
        "logger",
        "annotations",
    }
)
"""Predictor fields that describe the component (replicas, autoscaling, rollout), not the pod: on a
Standard-mode promotion they stay the stable's, everything else comes from the canary."""


@dataclass(frozen=True)
class CanaryState:
    """What the live object says about its canary."""

    mode: str
    has_canary: bool
    ready: bool
    reconciled: bool
    """The controller has seen the latest spec (``status.observedGeneration`` >= ``metadata.generation``)."""
    stable_revision: str
    canary_revision: str
    traffic_percent: int | None
    identity: Any
    """What names the canary (Knative: its revision; Standard: its predictor), to notice a change."""
    detail: str


def deployment_mode(obj: dict[str, Any]) -> str:
    """``Knative`` or ``Standard``, from the annotation, else from the status.

    Raises:
        CanaryInputError: not an InferenceService, or the mode is unknown.
    """
    if obj.get("kind") != KIND or not str(obj.get("apiVersion", "")).startswith(f"{GROUP}/"):
        raise CanaryInputError(f"not an InferenceService: apiVersion {obj.get('apiVersion')} kind {obj.get('kind')}")
    raw = (obj.get("metadata", {}).get("annotations") or {}).get(MODE_ANNOTATION) or obj.get("status", {}).get(
        "deploymentMode"
    )
    if raw not in MODES:
        raise CanaryInputError(
            f"cannot tell the deployment mode of {name_of(obj)}: annotation {MODE_ANNOTATION} is {raw!r}; "
            f"expected one of {', '.join(MODES)}"
        )
    return MODES[raw]


def name_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def _reconciled(obj: dict[str, Any]) -> bool:
    generation = obj.get("metadata", {}).get("generation")
    observed = obj.get("status", {}).get("observedGeneration")
    return generation is None or (observed is not None and observed >= generation)


def read_state(obj: dict[str, Any]) -> CanaryState:
    """The canary of ``obj`` in either mode.

    Raises:
        CanaryInputError: a canary the tool cannot analyse (several ``spec.canary`` entries, no track labels).
    """
    mode = deployment_mode(obj)
    return _knative_state(obj) if mode == "Knative" else _standard_state(obj)


def _knative_state(obj: dict[str, Any]) -> CanaryState:
    comp = obj.get("status", {}).get("components", {}).get("predictor", {})
    created, ready_rev = comp.get("latestCreatedRevision", ""), comp.get("latestReadyRevision", "")
    stable = comp.get("latestRolledoutRevision", "")
    reconciled = _reconciled(obj)
    has_canary = bool(created and stable and created != stable)
    ready = has_canary and ready_rev == created
    detail = (
        f"latestCreatedRevision={created or '-'} latestReadyRevision={ready_rev or '-'} "
        f"latestRolledoutRevision={stable or '-'}" + ("" if reconciled else " (controller has not seen the spec yet)")
    )
    traffic = obj.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")
    return CanaryState("Knative", has_canary, ready, reconciled, stable, created, traffic, created, detail)


def _standard_state(obj: dict[str, Any]) -> CanaryState:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    canaries = spec.get("canary") or []
    reconciled = _reconciled(obj)
    if not canaries:
        note = (
            " (canaryTrafficPercent is ignored in Standard mode)"
            if "canaryTrafficPercent" in spec.get("predictor", {})
            else ""
        )
        return CanaryState("Standard", False, False, reconciled, "", "", None, None, f"no spec.canary{note}")
    if len(canaries) > 1:
        raise CanaryInputError(f"{name_of(obj)} has {len(canaries)} spec.canary entries; the tool analyses one")
    canary = canaries[0]
    stable_track = (spec.get("predictor", {}).get("labels") or {}).get(TRACK_LABEL)
    canary_track = (canary.get("predictor", {}).get("labels") or {}).get(TRACK_LABEL)
    if not stable_track or not canary_track or stable_track == canary_track:
        raise CanaryInputError(
            f"{name_of(obj)}: spec.predictor and spec.canary[0].predictor need distinct {TRACK_LABEL} labels "
            f"(got {stable_track!r} and {canary_track!r}): the PodMonitor turns them into the revision label "
            "that tells canary from stable"
        )
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    canary_statuses = status.get("canaryStatuses") or []
    ready = conditions.get("Ready") == "True" and all(c.get("ready") for c in canary_statuses)
    detail = (
        f"Ready={conditions.get('Ready', '-')}"
        + "".join(f" canary {c.get('name')} ready={c.get('ready')}" for c in canary_statuses)
        + ("" if reconciled else " (controller has not seen the spec yet)")
    )
    identity = {k: v for k, v in canary.items() if k != "trafficPercent"}
    return CanaryState(
        "Standard",
        True,
        ready,
        reconciled,
        stable_track,
        canary_track,
        canary.get("trafficPercent"),
        identity,
        detail,
    )


def _spec_patch(obj: dict[str, Any], wanted_spec: dict[str, Any]) -> dict[str, Any]:
    return {"spec": create_merge_patch(obj.get("spec", {}), wanted_spec)}


def traffic_patch(obj: dict[str, Any], percent: int) -> dict[str, Any]:
    """The merge patch that gives the canary ``percent`` of the traffic."""
    spec = copy.deepcopy(obj.get("spec", {}))
    if deployment_mode(obj) == "Knative":
        spec.setdefault("predictor", {})["canaryTrafficPercent"] = percent
    else:
        spec["canary"][0]["trafficPercent"] = percent
    return _spec_patch(obj, spec)


def rollback_patch(obj: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that sends every request to the stable revision."""
    spec = copy.deepcopy(obj.get("spec", {}))
    if deployment_mode(obj) == "Knative":
        spec.setdefault("predictor", {})["canaryTrafficPercent"] = 0
    else:
        spec.pop("canary", None)
    return _spec_patch(obj, spec)


def promote_patch(obj: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that makes the canary the stable revision."""
    spec = copy.deepcopy(obj.get("spec", {}))
    if deployment_mode(obj) == "Knative":
        spec.get("predictor", {}).pop("canaryTrafficPercent", None)
        return _spec_patch(obj, spec)
    stable, canary = spec["predictor"], spec.pop("canary")[0]["predictor"]
    promoted = {k: v for k, v in canary.items() if k not in COMPONENT_FIELDS}
    promoted.update({k: v for k, v in stable.items() if k in COMPONENT_FIELDS})
    labels = dict(promoted.get("labels") or {})
    if TRACK_LABEL in labels:
        labels[TRACK_LABEL] = (stable.get("labels") or {}).get(TRACK_LABEL, labels[TRACK_LABEL])
        promoted["labels"] = labels
    spec["predictor"] = promoted
    return _spec_patch(obj, spec)
