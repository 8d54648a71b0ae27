"""The planner finds helm where `make tools` puts it, and says how to get it when it is nowhere (issue 26)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from classifier_canary import store
from classifier_canary.errors import CanaryInputError
from classifier_plan.errors import PlanInputError

render = importlib.import_module("classifier_plan.chart.render")  # the package re-exports a function of that name


def tool(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_helm_from_tools_when_not_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helm = tool(tmp_path / ".tools", "helm")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(render, "TOOLS_DIRS", (tmp_path / "elsewhere", tmp_path / ".tools"))
    assert render.helm_binary() == str(helm)


def test_helm_on_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = tool(tmp_path / "bin", "helm")
    tool(tmp_path / ".tools", "helm")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(render, "TOOLS_DIRS", (tmp_path / ".tools",))
    assert render.helm_binary() == str(on_path)


def test_no_helm_anywhere_says_make_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(render, "TOOLS_DIRS", (tmp_path / ".tools",))
    with pytest.raises(PlanInputError, match=r"not found on PATH nor in \.tools/: run `make tools`"):
        render.helm_binary()


def test_canary_rehearsal_finds_kubectl_in_tools_or_says_make_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(store, "TOOLS_DIRS", (tmp_path / ".tools",))
    with pytest.raises(CanaryInputError, match="run `make tools`"):
        store.FileStore(tmp_path / "isvc.yaml", "ml", "classifier")
    kubectl = tool(tmp_path / ".tools", "kubectl")
    assert store.FileStore(tmp_path / "isvc.yaml", "ml", "classifier").kubectl == str(kubectl)
