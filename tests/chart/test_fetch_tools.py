"""scripts/fetch_k8s_tools.sh: links helm and kubectl from PATH when they are there, and a second run
changes nothing and returns at once. (The offline download path runs in `make tools` on a clean CI.)"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .chart_support import REPO_ROOT, tool

SCRIPT = REPO_ROOT / "scripts" / "fetch_k8s_tools.sh"


def _run(out_dir: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run(["bash", str(SCRIPT), str(out_dir)], capture_output=True, text=True, env=env, timeout=120)


def test_links_from_path_and_is_idempotent(tmp_path):
    helm, kubectl = Path(tool("helm")).resolve(), Path(tool("kubectl")).resolve()
    checkov_venv = Path(tool("checkov")).resolve().parents[1]
    assert (checkov_venv / "bin" / "python").exists()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "helm").symlink_to(helm)
    (bin_dir / "kubectl").symlink_to(kubectl)
    out = tmp_path / "tools"
    out.mkdir()
    (out / "checkov-venv").symlink_to(checkov_venv)  # already installed: no PyPI needed here
    path = f"{out}:{bin_dir}:{os.environ['PATH']}"  # DIR first, as `make test` has it

    first = _run(out, path)
    assert first.returncode == 0, first.stderr
    assert (out / "helm").resolve() == helm and (out / "kubectl").resolve() == kubectl
    assert (out / "checkov").resolve() == (checkov_venv / "bin" / "checkov").resolve()

    before = {p.name: os.readlink(p) for p in out.iterdir() if p.is_symlink()}
    start = time.monotonic()
    second = _run(out, path)
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - start < 10
    assert "fetching" not in second.stdout and "installing" not in second.stdout
    assert {p.name: os.readlink(p) for p in out.iterdir() if p.is_symlink()} == before


def test_a_broken_link_is_replaced(tmp_path):
    out = tmp_path / "tools"
    out.mkdir()
    (out / "helm").symlink_to(tmp_path / "missing-helm")
    checkov_venv = Path(tool("checkov")).resolve().parents[1]
    (out / "checkov-venv").symlink_to(checkov_venv)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "helm").symlink_to(Path(tool("helm")).resolve())
    (bin_dir / "kubectl").symlink_to(Path(tool("kubectl")).resolve())
    result = _run(out, f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    assert subprocess.run([str(out / "helm"), "version", "--short"], capture_output=True).returncode == 0
