"""Artefact cache: content keys, atomic builds, and engines reusing exports on a second load."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from predictor.engine import cache
from predictor.engine.cache import get_or_build, model_content_hash, resolve_cache_dir
from predictor.engine.onnx_engine import OnnxRuntimeEngine
from predictor.engine.openvino_engine import OpenVinoEngine
from predictor.preprocess import PreprocessSpec


def test_hash_follows_content_not_cache(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy, ignore=shutil.ignore_patterns(".cache"))
    h = model_content_hash(copy)
    assert h == model_content_hash(tiny_model_dir)
    (copy / ".cache").mkdir(exist_ok=True)
    (copy / ".cache" / "junk").write_text("x")
    assert model_content_hash(copy) == h
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_content_hash(copy) != h


def test_remembered_hash_follows_a_rewrite_of_the_same_size(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The hash is remembered between calls, but a file rewritten in place (same size) is hashed again."""
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    first = model_content_hash(model)
    assert model_content_hash(model) == first
    weights = next(p for p in model.iterdir() if p.suffix == ".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    weights.write_bytes(bytes(data))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks: make the change visible
    assert model_content_hash(model) != first


def test_get_or_build_builds_once_and_leaves_no_temp(tmp_path: Path) -> None:
    calls = []

    def build(d: Path) -> None:
        calls.append(d)
        (d / "a.txt").write_text("hello")

    path, built = get_or_build(tmp_path, "k1", build)
    assert built and (path / "a.txt").read_text() == "hello"
    path2, built2 = get_or_build(tmp_path, "k1", build)
    assert (path2, built2) == (path, False) and len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1"]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(d: Path) -> None:
        (d / "half").write_text("x")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        get_or_build(tmp_path, "k", build)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_builders_end_with_one_complete_copy(tmp_path: Path) -> None:
    barrier = threading.Barrier(2)
    results = []

    def build(d: Path) -> None:
        barrier.wait(timeout=10)  # both are mid-build before either renames
        (d / "f").write_text(str(threading.get_ident()))

    def worker() -> None:
        results.append(get_or_build(tmp_path, "k", build))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == 2 and results[0][0] == results[1][0]
    assert (tmp_path / "k" / "f").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_cache_dir(tmp_path, tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_cache_dir(tmp_path, None) == tmp_path / ".cache"
    monkeypatch.setattr(cache.os, "access", lambda *_: False)  # read-only model dir (root ignores modes)
    fallback = resolve_cache_dir(tmp_path / "ro", None)
    assert fallback.parent == Path(cache.tempfile.gettempdir())


@pytest.mark.parametrize("engine_cls", [OpenVinoEngine, OnnxRuntimeEngine])
def test_second_load_reuses_the_export(
    engine_cls: type, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = PreprocessSpec.from_model_dir(tiny_model_dir)
    first = engine_cls(spec, tiny_model_dir, tmp_path)
    first.load()
    assert first.exported is True
    files = {p: p.stat().st_mtime_ns for p in first.artifact_dir.iterdir()}
    x = np.random.default_rng(0).integers(0, 256, (2, *spec.crop_hw, 3), dtype=np.uint8)
    expected = first.infer(x)

    def no_export(self: object, out_dir: Path) -> None:
        raise AssertionError("the second load exported again instead of reusing the cache")

    monkeypatch.setattr(engine_cls, "_export", no_export)
    second = engine_cls(spec, tiny_model_dir, tmp_path)
    second.load()
    assert second.exported is False
    assert second.artifact_dir == first.artifact_dir
    assert {p: p.stat().st_mtime_ns for p in second.artifact_dir.iterdir()} == files
    np.testing.assert_allclose(second.infer(x), expected, rtol=1e-5, atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert os.access(second.artifact_dir, os.R_OK)
