"""Every patch is validated before it is sent: the patched object must pass the InferenceService CRD
with the package's validator (:mod:`classifier_kube.validate`, the one the chart tests use).

The cluster's own CRD is preferred (read with ``get`` on ``customresourcedefinitions``); the CRD shipped in
``classifier_kube/crds`` is the fallback. Only ``spec`` and the identifying metadata are validated: the
status and the server's metadata are not the patch's business. Errors the live object already has (a
shipped CRD older or newer than the cluster's) are reported once and do not block; an error a patch
introduces does, and that patch is never sent.
"""

from __future__ import annotations

from typing import Any

from classifier_canary.errors import ApplyFailed
from classifier_canary.merge_patch import apply_merge_patch
from classifier_kube.validate import CRD_DIR, CrdValidator

ISVC_CRD_NAME = "inferenceservices.serving.kserve.io"


def _validated_view(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    view_meta = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": view_meta,
        "spec": obj.get("spec", {}),
    }


class PatchGuard:
    """Validates patched InferenceServices against one CRD.

    Args:
        cluster_crd: The cluster's CRD document, or ``None`` to use the shipped one.
    """

    def __init__(self, cluster_crd: dict[str, Any] | None = None) -> None:
        self.validator = CrdValidator(CRD_DIR / "kserve")
        self.source = f"shipped ({(CRD_DIR / 'kserve').relative_to(CRD_DIR.parents[1])})"
        if cluster_crd is not None:
            self.validator.add_crd(cluster_crd)
            self.source = f"cluster (customresourcedefinition {ISVC_CRD_NAME})"

    def errors(self, obj: dict[str, Any]) -> list[str]:
        """Schema errors of ``obj``'s spec and metadata."""
        return self.validator.validate(_validated_view(obj)).errors

    def check(self, live: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        """The object ``patch`` would produce; raises if it brings errors the live object did not have.

        Raises:
            ApplyFailed: the patched object would be refused; the patch is not to be sent.
        """
        patched = apply_merge_patch(live, patch)
        before = set(self.errors(live))
        new = [e for e in self.errors(patched) if e not in before]
        if new:
            raise ApplyFailed(f"patch {patch} refused by the {self.source} CRD, not sent: " + "; ".join(new))
        return patched
