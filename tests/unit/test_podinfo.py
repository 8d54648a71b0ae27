"""predictor.podinfo: the pod's name and namespace with and without the downward API."""

from __future__ import annotations

import os

from predictor.config import Settings
from predictor.podinfo import pod_name, pod_namespace


def test_env_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("POD_NAME", "classifier-predictor-00001-deployment-5d8f-x2x4z")
    monkeypatch.setenv("POD_NAMESPACE", "ml")
    sa = tmp_path / "namespace"
    sa.write_text("other\n")
    assert pod_name() == "classifier-predictor-00001-deployment-5d8f-x2x4z"
    assert pod_namespace(sa) == "ml"


def test_without_the_downward_api_the_hostname_and_the_service_account_mount(monkeypatch, tmp_path):
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    sa = tmp_path / "namespace"
    sa.write_text("ml\n")
    assert pod_name() == os.uname().nodename
    assert pod_namespace(sa) == "ml"
    assert pod_namespace(tmp_path / "missing") == ""


def test_the_worker_consumer_name_defaults_to_the_pod_name(monkeypatch):
    monkeypatch.delenv("POD_NAME", raising=False)
    assert Settings().consumer_name == os.uname().nodename
    monkeypatch.setenv("POD_NAME", "classifier-worker-6c8d9f-abcde")
    assert Settings().consumer_name == "classifier-worker-6c8d9f-abcde"
