"""Shared fixtures: model directories, sample photos, and real server processes on free ports."""

from __future__ import annotations

import faulthandler
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.servers import DEFAULT_MODEL_DIR, REPO, ServerProcess, jpeg_bytes, start_server

pytest_plugins = ["tests.support.engine_fixtures"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """The skimage sample photos of real objects, as RGB uint8 arrays."""
    from skimage import data

    return {
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "astronaut": data.astronaut(),
        "motorcycle": data.stereo_motorcycle()[0],
    }


@pytest.fixture(scope="session")
def cat_jpeg(photos: dict[str, np.ndarray]) -> bytes:
    return jpeg_bytes(photos["chelsea"])


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The embedded EfficientNet-Lite0 (real ImageNet weights), built by `make test` before pytest."""
    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        subprocess.run(
            [sys.executable, "-m", "models.build_default", "--out", str(DEFAULT_MODEL_DIR)],
            cwd=REPO,
            check=True,
        )
    return DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random ResNet (fast) for protocol and lifecycle tests."""
    from models.random_resnet import build_random_resnet

    return build_random_resnet(tmp_path_factory.mktemp("tiny-resnet"), size="tiny")


@pytest.fixture(scope="session")
def default_server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The embedded default model served with default settings (shared by the protocol tests)."""
    server = start_server(default_model_dir, tmp_path_factory.mktemp("default-server"))
    yield server
    server.stop()


# --- gpu-marked tests: run where CUDA is, deselected (and counted) where it is not ---------------------

_GPU_DESELECTED = pytest.StashKey[int]()


DEADLOCK_S = float(os.environ.get("TESTS_DEADLOCK_S", "900"))
"""A test still running after this long is stuck below Python (a native deadlock holding the GIL, which
no Python-level timeout, pytest-timeout's 600 s included, can interrupt): dump every thread's stack and
exit, so CI fails with a diagnosis instead of hanging until its own limit."""


def _terminal_fd(config: pytest.Config) -> int:
    """The stderr pytest had before it captured fd 2 (output written to the capture is lost on exit)."""
    capture = getattr(config.pluginmanager.getplugin("capturemanager"), "_global_capturing", None)
    saved = getattr(getattr(capture, "err", None), "targetfd_save", None)
    return saved if isinstance(saved, int) else sys.__stderr__.fileno()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    faulthandler.dump_traceback_later(DEADLOCK_S, exit=True, file=_terminal_fd(item.config))
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(trylast=True)  # after ``-m`` / ``-k`` deselection: count only gpu tests that would run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect ``@pytest.mark.gpu`` tests when this machine has no CUDA device, so they are neither run
    nor reported as skipped; the terminal summary says how many. torch is imported only when gpu tests
    were collected."""
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    config.hook.pytest_deselected(items=gpu)
    items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
    config.stash[_GPU_DESELECTED] = len(gpu)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    n = config.stash.get(_GPU_DESELECTED, 0)
    if n:
        terminalreporter.write_line(f"{n} gpu tests deselected: no CUDA device")
