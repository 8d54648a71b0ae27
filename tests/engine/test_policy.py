"""The engine choice (predictor/engine/choice.py): which backend, device, precision and hint ``auto`` picks,
and what it refuses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from predictor.config import Settings
from predictor.engine import build_engine, choose
from predictor.engine.cpu import detect_cpu, parse_cpuinfo
from predictor.engine.onnx_engine import OnnxRuntimeEngine
from predictor.engine.openvino_engine import OpenVinoEngine
from predictor.engine.torch_engine import TorchEngine
from predictor.preprocess import PreprocessSpec
from tests.support.cpuinfo import SAPPHIRE_RAPIDS, SKYLAKE, ZEN4

AMX, AVX512_BF16, NO_BF16 = parse_cpuinfo(SAPPHIRE_RAPIDS), parse_cpuinfo(ZEN4), parse_cpuinfo(SKYLAKE)


@pytest.mark.parametrize("cpu", [AMX, AVX512_BF16], ids=["amx", "zen4"])
def test_auto_on_native_bf16_cpus_is_openvino_bf16_subject_to_the_precision_check(cpu) -> None:
    choice = choose(Settings(), cpu=cpu, cuda_available=False, openvino_available=True)
    assert (choice.backend, choice.device, choice.precision, choice.verify_against) == (
        "openvino",
        "cpu",
        "bf16",
        "fp32",
    )
    assert "checked before ready" in choice.reason and "avx512_bf16" in choice.reason


def test_auto_without_native_bf16_is_openvino_fp32_unchecked() -> None:
    choice = choose(Settings(), cpu=NO_BF16, cuda_available=False, openvino_available=True)
    assert (choice.backend, choice.precision, choice.verify_against) == ("openvino", "fp32", None)
    assert "no native bf16" in choice.reason


def test_without_openvino_auto_is_checked_torch_bf16_or_onnxruntime_fp32() -> None:
    """OpenVINO is a dependency, but a broken install must still serve: the next candidates in speed order."""
    choice = choose(Settings(), cpu=AMX, cuda_available=False, openvino_available=False)
    assert (choice.backend, choice.precision, choice.verify_against) == ("torch", "bf16", "fp32")
    choice = choose(Settings(), cpu=NO_BF16, cuda_available=False, openvino_available=False)
    assert (choice.backend, choice.precision, choice.verify_against) == ("onnxruntime", "fp32", None)


def test_torch_backend_auto_precision_follows_the_cpu() -> None:
    torch_bf16 = choose(Settings(backend="torch"), cpu=AVX512_BF16, cuda_available=False)
    torch_old = choose(Settings(backend="torch"), cpu=NO_BF16, cuda_available=False)
    assert (torch_bf16.precision, torch_bf16.verify_against) == ("bf16", "fp32")
    assert (torch_old.precision, torch_old.verify_against) == ("fp32", None)


def test_explicit_precision_is_never_checked() -> None:
    for precision in ("fp32", "bf16"):
        choice = choose(Settings(precision=precision), cpu=AMX, cuda_available=False, openvino_available=True)
        assert (choice.precision, choice.verify_against) == (precision, None)


def test_explicit_bf16_opts_in_to_the_fastest_bf16_backend() -> None:
    choice = choose(Settings(precision="bf16"), cpu=AMX, cuda_available=False, openvino_available=True)
    assert (choice.backend, choice.precision) == ("openvino", "bf16")


def test_auto_with_cuda_is_torch_fp16() -> None:
    choice = choose(Settings(), cpu=AMX, cuda_available=True, openvino_available=True)
    assert (choice.backend, choice.device, choice.precision, choice.verify_against) == ("torch", "cuda", "fp16", "fp32")


def test_explicit_settings_are_kept() -> None:
    s = Settings(backend="torch", precision="fp32", device="cpu")
    choice = choose(s, cpu=AMX, cuda_available=True)
    assert (choice.backend, choice.device, choice.precision) == ("torch", "cpu", "fp32")


def test_onnxruntime_auto_precision_is_fp32_on_cpu() -> None:
    choice = choose(Settings(backend="onnxruntime"), cpu=AMX, cuda_available=False)
    assert choice.precision == "fp32"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(backend="openvino", device="cuda"), "does not run on cuda"),
        (dict(backend="torch", device="cpu", precision="fp16"), "not fp16"),
        (dict(backend="onnxruntime", device="cpu", precision="bf16"), "not bf16"),
    ],
)
def test_impossible_combinations_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose(Settings(**settings), cpu=AMX, cuda_available=True)


def test_cuda_asked_without_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        choose(Settings(device="cuda"), cpu=AMX, cuda_available=False)


def test_openvino_hint_auto_is_latency_and_an_explicit_hint_is_kept() -> None:
    auto = choose(Settings(backend="openvino", precision="fp32"), cpu=AMX, cuda_available=False)
    assert auto.openvino_hint == "LATENCY" and "(LATENCY)" in auto.describe()
    explicit = choose(Settings(backend="openvino", openvino_hint="THROUGHPUT"), cpu=AMX, cuda_available=False)
    assert explicit.openvino_hint == "THROUGHPUT"


def test_auto_fp32_on_this_machine_builds_openvino(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Without a reduced precision to check, ``auto`` here is OpenVINO fp32, its artefacts in the cache dir."""
    spec = PreprocessSpec.from_model_dir(tiny_model_dir)
    settings = Settings(model_dir=tiny_model_dir, cache_dir=tmp_path, device="cpu", precision="fp32")
    engine = build_engine(choose(settings), settings, spec)
    assert isinstance(engine, OpenVinoEngine)
    engine.load()
    assert engine.info.dtype == "float32", detect_cpu().describe()
    assert engine.info.backend == "openvino" and engine.info.device == "cpu"
    assert str(engine.artifact_dir).startswith(str(tmp_path))


def test_build_engine_builds_each_backend(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = PreprocessSpec.from_model_dir(tiny_model_dir)
    base = dict(model_dir=tiny_model_dir, cache_dir=tmp_path, device="cpu", cpu_threads=1, precision="fp32")

    def build(**settings) -> object:
        s = Settings(**settings, **base)
        return build_engine(choose(s), s, spec)

    torch_engine = build(backend="torch", torch_compile=True)
    assert isinstance(torch_engine, TorchEngine) and torch_engine.threads == 1 and torch_engine.compile
    ort_engine = build(backend="onnxruntime")
    assert isinstance(ort_engine, OnnxRuntimeEngine) and ort_engine.cache_dir == tmp_path
    ov_engine = build(backend="openvino", openvino_hint="THROUGHPUT")
    assert isinstance(ov_engine, OpenVinoEngine) and ov_engine.performance_hint == "THROUGHPUT"


def test_a_gpu_attached_but_unusable_is_logged_with_the_driver_it_needs(monkeypatch, caplog) -> None:
    """On a node whose driver is older than the wheel's CUDA, torch sees no GPU: say so, not silently serve on CPU."""
    import logging

    import torch

    from predictor.engine import choice as policy

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")
    with caplog.at_level(logging.WARNING, logger="predictor.engine.choice"):
        assert policy._cuda_available() is False
    assert "driver >= 580.65.06" in caplog.text and "NVIDIA_VISIBLE_DEVICES=all" in caplog.text
    caplog.clear()
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "void")  # no GPU given: nothing to warn about
    with caplog.at_level(logging.WARNING, logger="predictor.engine.choice"):
        assert policy._cuda_available() is False
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("backend", "device", "precision", "message"),
    [
        ("torch", "cpu", "fp16", "backend torch on cpu runs fp32, bf16, not fp16"),
        ("onnxruntime", "cpu", "bf16", "backend onnxruntime on cpu runs fp32, not bf16"),
        ("openvino", "cuda", "fp32", "backend openvino does not run on cuda; on cuda use onnxruntime or torch"),
        ("tensorrt", "cuda", "fp16", "unknown backend 'tensorrt'"),
    ],
)
def test_the_registry_refuses_what_its_table_does_not_list(
    tiny_model_dir: Path, tmp_path: Path, backend: str, device: str, precision: str, message: str
) -> None:
    """The one backend/precision table is the registry's: an engine is never built outside it."""
    from predictor.engine import registry

    args = registry.BuildArgs(
        spec=PreprocessSpec.from_model_dir(tiny_model_dir),
        model_dir=tiny_model_dir,
        cache_dir=tmp_path,
        device=device,
        precision=precision,
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        registry.create(backend, args)
