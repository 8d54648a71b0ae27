"""The pod this process runs in: its name and namespace, with or without the downward API.

The chart sets ``POD_NAME`` and ``POD_NAMESPACE`` from the downward API (``fieldRef``) where it may. A
stock Knative refuses ``fieldRef`` (feature flag ``kubernetes.podspec-fieldref``), so in Knative mode the
chart may pass only ``POD_NAMESPACE`` as a plain value (the release's namespace) and no ``POD_NAME``:
the kubelet sets a pod's hostname to its name (cut to 63 characters), so the hostname stands in.
"""

from __future__ import annotations

import os
from pathlib import Path

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
"""Where Kubernetes mounts the pod's namespace when a service-account token is mounted."""


def pod_name() -> str:
    """``$POD_NAME``, else the hostname (a pod's hostname is its name)."""
    return os.environ.get("POD_NAME") or os.uname().nodename


def pod_namespace(sa_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """``$POD_NAMESPACE``, else the service-account mount's namespace file, else ``""`` (not in a pod)."""
    namespace = os.environ.get("POD_NAMESPACE")
    if namespace:
        return namespace
    try:
        return sa_file.read_text().strip()
    except OSError:
        return ""
