"""Where the InferenceService is read and patched: a cluster (the ``kubernetes`` client), a YAML file
(``kubectl patch --local``, for rehearsals and tests), or either in dry-run mode (patches printed and
applied in memory only).

Patches are JSON merge patches (``application/merge-patch+json``). In a cluster they carry the
``metadata.resourceVersion`` the patch was computed from, so a change made in between makes the API
server answer 409 instead of applying a patch built for another object; they are sent with strict field
validation and the field manager ``image-classifier-canary``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Protocol

import yaml

from classifier_canary.errors import ApplyFailed, CanaryError, CanaryInputError, ChangedUnderneath
from classifier_canary.guard import ISVC_CRD_NAME
from classifier_canary.isvc import GROUP, KIND, PLURAL, VERSION
from classifier_canary.merge_patch import apply_merge_patch

FIELD_MANAGER = "image-classifier-canary"
TOOLS_DIRS = (Path(__file__).resolve().parents[2] / ".tools", Path(".tools"))
"""Where ``make tools`` puts kubectl: the checkout beside the package, then the working directory's."""


class Store(Protocol):
    """Reads and patches one InferenceService."""

    description: str

    def get(self) -> dict[str, Any]:
        """The object as it is now (raises :class:`CanaryInputError` when it cannot be read)."""
        ...

    def patch(self, body: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
        """Apply a JSON merge patch; returns the new object (raises :class:`ApplyFailed`)."""
        ...

    def cluster_crd(self) -> tuple[dict[str, Any] | None, str]:
        """The cluster's InferenceService CRD, or ``None`` and why not."""
        ...


class FileStore:
    """An InferenceService in a YAML file; patches applied with the real ``kubectl patch --local``."""

    def __init__(self, path: Path, namespace: str, name: str) -> None:
        self.path, self.namespace, self.name = Path(path), namespace, name
        self.kubectl = shutil.which("kubectl") or next(
            (str(d / "kubectl") for d in TOOLS_DIRS if (d / "kubectl").is_file()), None
        )
        if self.kubectl is None:
            raise CanaryInputError(
                "--isvc-file needs kubectl (it applies the patches with kubectl patch --local): not on PATH nor "
                "in .tools/; run `make tools` (puts kubectl into .tools/), or install kubectl"
            )
        self.description = f"file {self.path}"

    def get(self) -> dict[str, Any]:
        try:
            obj = yaml.safe_load(self.path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise CanaryInputError(f"cannot read --isvc-file {self.path}: {e}") from None
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            raise CanaryInputError(f"{self.path} holds no InferenceService (one object, kind {KIND})")
        meta = obj.get("metadata") or {}
        if meta.get("name") != self.name or meta.get("namespace", self.namespace) != self.namespace:
            raise CanaryInputError(
                f"InferenceService {self.namespace}/{self.name} not found: {self.path} holds "
                f"{meta.get('namespace', self.namespace)}/{meta.get('name')}"
            )
        return obj

    def patch(self, body: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
        cmd = [
            self.kubectl,
            "patch",
            "--local",
            "-f",
            str(self.path),
            "--type",
            "merge",
            "-p",
            json.dumps(body),
            "-o",
            "json",
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ApplyFailed(f"kubectl patch --local failed: {e}") from None
        if done.returncode != 0:
            raise ApplyFailed(f"kubectl patch --local exited {done.returncode}: {done.stderr.strip()}")
        obj = json.loads(done.stdout)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(obj, f, sort_keys=False)
        os.replace(tmp, self.path)  # readers never see half a file
        return obj

    def cluster_crd(self) -> tuple[dict[str, Any] | None, str]:
        return None, ""  # no cluster to ask


class DryRunStore:
    """Reads through to another store; patches are recorded and applied in memory, never sent."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.patches: list[dict[str, Any]] = []
        self.description = f"{inner.description} (dry run: nothing is changed)"

    def get(self) -> dict[str, Any]:
        obj = self.inner.get()
        for p in self.patches:
            obj = apply_merge_patch(obj, p)
        return obj

    def patch(self, body: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
        self.patches.append(body)
        return self.get()

    def cluster_crd(self) -> tuple[dict[str, Any] | None, str]:
        return self.inner.cluster_crd()


class LiveStore:
    """An InferenceService in a cluster, through the ``kubernetes`` client (in-cluster config or kubeconfig).

    Raises:
        CanaryInputError: no usable Kubernetes configuration.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        kubeconfig: Path | None = None,
        context: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        from kubernetes import client, config

        self.namespace, self.name, self.timeout_s = namespace, name, timeout_s
        try:
            if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()
                where = "in-cluster service account"
            else:
                config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None, context=context)
                where = f"kubeconfig {kubeconfig or '~/.kube/config'}" + (f" context {context}" if context else "")
        except (config.ConfigException, OSError, TypeError, ValueError) as e:
            raise CanaryInputError(f"no usable Kubernetes configuration: {e}") from None
        self.api = client.CustomObjectsApi()
        self.host = self.api.api_client.configuration.host
        self.description = f"cluster {self.host} ({where})"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.timeout_s, **kwargs)
        except ApiException as e:
            raise _api_error(what, e) from None
        except (HTTPError, OSError) as e:
            raise CanaryInputError(f"cannot reach the Kubernetes API at {self.host} to {what}: {e}") from None

    def get(self) -> dict[str, Any]:
        return self._call(
            f"get inferenceservice {self.namespace}/{self.name}",
            self.api.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            self.name,
        )

    def patch(self, body: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
        if resource_version:
            body = apply_merge_patch(body, {"metadata": {"resourceVersion": resource_version}})
        try:
            return self._call(
                f"patch inferenceservice {self.namespace}/{self.name}",
                self.api.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                body,
                field_manager=FIELD_MANAGER,
                field_validation="Strict",
                _content_type="application/merge-patch+json",
            )
        except CanaryInputError as e:  # mid-run: the run stops with traffic where it was
            raise ApplyFailed(str(e)) from None

    def cluster_crd(self) -> tuple[dict[str, Any] | None, str]:
        try:
            crd = self._call(
                f"get customresourcedefinition {ISVC_CRD_NAME}",
                self.api.get_cluster_custom_object,
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                ISVC_CRD_NAME,
            )
        except CanaryInputError as e:
            return None, str(e)
        return crd, f"customresourcedefinition {ISVC_CRD_NAME} of {self.host}"


def _api_error(what: str, e: Any) -> CanaryError:
    try:
        message = json.loads(e.body or "{}").get("message") or e.reason
    except ValueError:
        message = e.reason
    if e.status == 409:
        return ChangedUnderneath(f"{what}: the object changed since it was read (409 Conflict): {message}")
    if e.status in (400, 422) and what.startswith("patch"):
        return ApplyFailed(f"{what}: the API server refused the patch ({e.status}): {message}")
    if e.status == 404:
        return CanaryInputError(f"{what}: not found (404): {message}")
    if e.status in (401, 403):
        return CanaryInputError(f"{what}: {e.status} {e.reason}: {message} (check the ServiceAccount's Role)")
    return CanaryInputError(f"{what}: {e.status} {e.reason}: {message}")
