"""The repository stands alone: nothing refers to the workspace around it, and the chart tests pass in a
fresh `git clone` of the committed state, in an empty folder with nothing beside it.

The clone runs with this run's interpreter and PATH (its venv and .tools, which are git-ignored and so not
in the clone) and PYTHONPATH set to the clone, so the clone's own ``predictor`` package and CRDs are the
ones tested. The cloned run ignores this module, so it does not recurse.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .chart_support import REPO_ROOT, run, tool

THIS = Path(__file__).resolve().relative_to(REPO_ROOT).as_posix()
WORKSPACE_REFERENCES = ["../" + "shared", "/work/" + "shared"]  # split so this file does not match itself
CLONED_SUITES = ["tests/chart", "tests/kube"]


def test_no_file_refers_to_the_workspace_around_the_repository():
    hits = []
    for needle in WORKSPACE_REFERENCES:
        found = run(["git", "-C", str(REPO_ROOT), "grep", "-n", "-I", "-F", needle], check=False)
        assert found.returncode in (0, 1), found.stderr  # 1: no match
        hits += found.stdout.splitlines()
    assert hits == [], "\n".join(hits)


def _clone(tmp_path: Path) -> Path:
    """`git clone` of the committed state into an otherwise empty folder."""
    assert not any(tmp_path.iterdir())
    clone = tmp_path / "image-classifier"
    run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image-classifier"]  # nothing beside it
    return clone


def _env(clone: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONPATH"] = str(clone)
    env["PATH"] = os.pathsep.join([str(Path(tool("helm")).parent), env.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_chart_tests_pass_in_a_fresh_clone_with_nothing_beside_it(tmp_path):
    clone = _clone(tmp_path)
    env = _env(clone)
    where = subprocess.run(
        [sys.executable, "-c", "import classifier_kube.validate as v; print(v.__file__); print(v.CRD_DIR)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    module, crd_dir = where.stdout.split()
    assert Path(module).is_relative_to(clone) and Path(crd_dir).is_relative_to(clone), where.stdout

    cmd = [sys.executable, "-m", "pytest", *CLONED_SUITES, "-q", "-p", "no:cacheprovider", f"--ignore={THIS}"]
    result = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    tail = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    assert THIS.rsplit("/", 1)[1] not in result.stdout  # the cloned run did not run this module
    summary = re.search(r"(\d+) passed", result.stdout.splitlines()[-1])
    assert summary and int(summary.group(1)) >= 300, tail
    assert "rules in the shipped CRDs that cannot be compiled: 0" in result.stdout, tail
