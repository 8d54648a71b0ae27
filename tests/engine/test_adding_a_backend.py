"""Adding a backend is its module plus one ``register`` call: the registry is the one list of backends.

A backend defined only in the tests (:mod:`tests.support.fake_backend`: an ``Engine`` subclass and a
``registry.register`` call, no file of the package changed) is accepted by the settings, offered by the
CLI, built by ``registry.create`` and chosen, loaded and served by the real server. Before it is
registered, the same name is refused everywhere with the list of registered ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from predictor.__main__ import build_parser
from predictor.config import Settings, settings_from_args
from predictor.engine import choose, load_engine, registry
from predictor.preprocess import PreprocessSpec
from tests.support import fake_backend
from tests.support.fake_backend import FakeEngine, expected_class, num_labels
from tests.support.servers import REPO, jpeg_bytes, start_server


@pytest.fixture
def fake_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake backend registered in a copy of the registry, which the test's end puts back."""
    monkeypatch.setattr(registry, "BACKENDS", dict(registry.BACKENDS))
    fake_backend.register()


def _serve_help() -> str:
    sub = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    return " ".join(sub.format_help().split())


def test_an_unregistered_backend_is_refused_with_the_registered_ones() -> None:
    assert fake_backend.NAME not in registry.BACKENDS
    with pytest.raises(ValidationError, match=r"'auto', 'torch', 'openvino' or 'onnxruntime' .*, not 'fake'"):
        Settings(backend=fake_backend.NAME)
    assert "--backend {auto,torch,openvino,onnxruntime}" in _serve_help()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--backend", fake_backend.NAME])


def test_a_registered_backend_is_accepted_by_settings_the_cli_and_create(
    fake_registered: None, tiny_model_dir: Path, tmp_path: Path
) -> None:
    assert Settings(backend="fake", precision="fp32").backend == "fake"
    assert "--backend {auto,torch,openvino,onnxruntime,fake}" in _serve_help()
    settings = settings_from_args(
        build_parser().parse_args(["serve", "--backend", "fake", "--model-dir", str(tiny_model_dir)]),
        cache_dir=tmp_path,
    )
    assert settings.backend == "fake"

    spec = PreprocessSpec.from_model_dir(tiny_model_dir)
    args = registry.BuildArgs(spec=spec, model_dir=tiny_model_dir, cache_dir=tmp_path, device="cpu", precision="fp32")
    built = registry.create("fake", args)
    assert isinstance(built, FakeEngine) and built.labels == 0, "create builds, it does not load"
    with pytest.raises(ValueError, match="backend fake does not run on cuda"):
        registry.create("fake", replace(args, device="cuda"))
    with pytest.raises(ValueError, match="backend fake on cpu runs fp32, not bf16"):
        registry.create("fake", replace(args, precision="bf16"))

    choice = choose(settings, cuda_available=False)
    assert (choice.backend, choice.device, choice.precision, choice.verify_against) == ("fake", "cpu", "fp32", None)
    loaded = load_engine(settings, spec)
    assert isinstance(loaded.engine, FakeEngine) and loaded.choice == choice and loaded.verdict is None
    gray = np.full((2, *spec.crop_hw, 3), 77, dtype=np.uint8)
    assert loaded.engine.checked_infer(gray).argmax(axis=1).tolist() == [77, 77]


def test_the_real_server_serves_through_a_backend_added_by_registration(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``python -m predictor serve`` in a process where only a test module registered the backend."""
    helped = subprocess.run(
        [sys.executable, "-m", "tests.support.fake_backend", "serve", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert helped.returncode == 0 and "{auto,torch,openvino,onnxruntime,fake}" in helped.stdout, helped.stderr
    server = start_server(tiny_model_dir, tmp_path, module="tests.support.fake_backend", backend="fake")
    try:
        assert "backend=fake device=cpu dtype=float32" in server.log(), server.log()[-3000:]
        pixels = np.full((64, 48, 3), 200, dtype=np.uint8)
        r = server.client.post("/classify", files={"image": ("x.jpg", jpeg_bytes(pixels), "image/jpeg")})
        assert r.status_code == 200, r.text
        top = r.json()["predictions"][0][0]
        labels = json.loads((tiny_model_dir / "config.json").read_text())["id2label"]
        expected = expected_class(pixels, num_labels(tiny_model_dir))
        assert (top["class_id"], top["label"]) == (expected, labels[str(expected)])
        assert server.metric("classifier_model_info", backend="fake", device="cpu", dtype="float32") == 1
    finally:
        assert server.stop() == 0, server.log()[-3000:]
