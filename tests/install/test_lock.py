"""The lock: uv.lock pins every package with hashes, the venv that `make run` / `make test` built is
exactly the lock, and the embedded default model built from it has one model_version everywhere."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LOCK_EXTRAS = re.search(r"^LOCK_EXTRAS := (.+)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
# The content hash of models/efficientnet-lite0 built by `make model` from the locked packages (transformers
# writes the config, timm the weights); the docs' sample outputs show it. A lock change that moves it must
# update both.
DEFAULT_MODEL_VERSION = "47ba7ee5fabe"


def _uv(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "uv"), *args], cwd=REPO, text=True, capture_output=True, timeout=timeout)


def _locked_for_this_interpreter() -> dict[str, str]:
    """Name → version of every package the Makefile installs here (the export's markers evaluated)."""
    result = _uv("export", "--frozen", "--no-emit-project", "--no-hashes", *LOCK_EXTRAS, "--format", "requirements-txt")
    assert result.returncode == 0, result.stderr
    locked = {}
    for line in result.stdout.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, _, marker = line.partition(";")
        name, _, version = requirement.strip().partition("==")
        if not marker.strip() or Marker(marker.strip()).evaluate():
            locked[canonicalize_name(name)] = version
    return locked


def test_every_locked_package_comes_from_a_registry_with_hashes():
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    packages = [p for p in lock["package"] if p["name"] != "image-classifier"]
    assert len(packages) > 100
    for package in packages:
        assert "registry" in package["source"], package["name"]
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files and all(f["hash"].startswith("sha256:") for f in files), package["name"]


def test_the_venv_is_exactly_the_lock():
    locked = _locked_for_this_interpreter()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    wrong = {n: (v, installed.get(n)) for n, v in locked.items() if installed.get(n) != v}
    assert not wrong, f"locked vs installed: {wrong}; run `make venv` (it installs uv.lock)"
    extra = set(installed) - set(locked) - {"pip", "image-classifier"}
    assert not extra, f"installed but not in the lock: {sorted(extra)}"
    assert "torch" in locked and "transformers" in locked


def test_the_lock_is_current_with_pyproject():
    """`uv lock --check` (what `make lock` writes) agrees with pyproject.toml: nobody edited one without the other."""
    result = _uv("lock", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_default_model_has_the_same_version_on_every_machine(default_model_dir):
    from predictor.engine.cache import model_content_hash

    assert model_content_hash(default_model_dir)[:12] == DEFAULT_MODEL_VERSION
