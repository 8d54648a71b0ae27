"""The start-up path (predictor/lifecycle.py): the precision check decides before ready, and what it chose serves.

The candidate engines here are real torch engines on the tiny random model (its fp32 answers vary enough
for the check to be conclusive) whose answers a test controls (unchanged: the check surely passes;
shifted by one class: it surely fails), so each outcome is tested on every CPU, whatever its bf16
support. The runtime runs every engine call on a real batcher's inference thread.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from predictor.batching import DynamicBatcher
from predictor.config import Settings
from predictor.engine import ServingChoice, load_engine
from predictor.engine.base import Engine, EngineInfo
from predictor.engine.torch_engine import TorchEngine
from predictor.lifecycle import ModelRuntime
from predictor.metrics import PredictorMetrics
from predictor.preprocess import PreprocessSpec
from tests.support.servers import REPO

INFERENCE_THREAD = "inference"


class Controlled(Engine):
    """A real torch fp32 engine whose logits pass through ``transform``; records the threads it ran on."""

    def __init__(self, model_dir: Path, dtype: str, transform=None) -> None:
        spec = PreprocessSpec.from_model_dir(model_dir)
        super().__init__(spec)
        self.inner = TorchEngine(spec, model_dir, "cpu", "fp32", threads=1)
        self.dtype, self.transform = dtype, transform
        self.threads: set[str] = set()
        self.passes = 0
        self.closed = False

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("controlled", "cpu", self.dtype)

    def load(self) -> None:
        self.threads.add(threading.current_thread().name)
        self.inner.load()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.passes += 1
        out = self.inner.infer(batch)
        return self.transform(out) if self.transform else out

    def close(self) -> None:
        self.closed = True


def _model_info(metrics: PredictorMetrics) -> list[dict[str, str]]:
    return [s.labels for m in metrics.model_info.collect() for s in m.samples if s.value == 1]


CHOICE = ServingChoice("controlled", "cpu", "bf16", "test", verify_against="fp32")


class Built:
    """The ``build`` hook of :func:`load_engine`: one fresh engine per precision asked for."""

    def __init__(self, model_dir: Path, candidate_transform=None) -> None:
        self.model_dir, self.transform = model_dir, candidate_transform
        self.engines: dict[str, Controlled] = {}

    def __call__(self, choice: ServingChoice, settings: Settings, spec: PreprocessSpec) -> Controlled:
        assert choice.verify_against is None, "only concrete choices are built"
        dtype = {"fp32": "float32", "bf16": "bfloat16"}[choice.precision]
        transform = self.transform if choice.precision == "bf16" else None
        engine = self.engines[choice.precision] = Controlled(self.model_dir, dtype, transform)
        return engine


async def _load(settings: Settings, built: Built) -> tuple[ModelRuntime, DynamicBatcher, PredictorMetrics]:
    metrics = PredictorMetrics(CollectorRegistry())
    runtime: ModelRuntime

    def infer(items):
        return runtime.engine.infer_items(items)

    def loader(spec, run):
        return load_engine(settings, spec, run, choice=CHOICE, build=built)

    batcher = DynamicBatcher(infer, max_batch_size=8, max_batch_delay_ms=1, thread_name=INFERENCE_THREAD)
    runtime = ModelRuntime(settings, metrics, batcher.run_on_handler_thread, loader=loader)
    await asyncio.to_thread(runtime.load)
    batcher.start()
    return runtime, batcher, metrics


@pytest.fixture
def settings(tiny_model_dir: Path, tmp_path: Path) -> Settings:
    return Settings(model_dir=tiny_model_dir, device="cpu", cache_dir=tmp_path, max_batch_size=8)


def _image(spec_hw: tuple[int, int], value: int) -> np.ndarray:
    return np.full((*spec_hw, 3), value, np.uint8)


async def _serve(runtime: ModelRuntime, batcher: DynamicBatcher) -> None:
    hw = runtime.spec.crop_hw
    out = await batcher.submit([_image(hw, 90), _image(hw, 160)], time.monotonic() + 30)
    assert len(out) == 2 and out[0].shape == out[1].shape


def _on_inference_thread_only(engine: Controlled) -> bool:
    return bool(engine.threads) and all(t.startswith(INFERENCE_THREAD) for t in engine.threads)


async def test_a_candidate_that_keeps_the_answers_serves_from_the_first_request(settings, tmp_path) -> None:
    built = Built(settings.model_dir)
    runtime, batcher, metrics = await _load(settings, built)
    reference, candidate = built.engines["fp32"], built.engines["bf16"]
    verdict = runtime.precision_verdict
    assert verdict is not None and verdict.conclusive and verdict.passed, verdict
    assert runtime.engine is candidate and reference.closed and not candidate.closed
    assert runtime.choice.precision == "bf16" and runtime.choice.verify_against is None
    assert "precision check (checked in" in runtime.choice.reason and "keeps the answers" in runtime.choice.reason
    assert [(i["backend"], i["dtype"]) for i in _model_info(metrics)] == [("controlled", "bfloat16")]
    assert list(tmp_path.glob("precision-controlled-bf16-*.json")), "the verdict is cached"
    reference_passes = reference.passes
    await _serve(runtime, batcher)
    assert reference.passes == reference_passes and candidate.passes > 0
    assert _on_inference_thread_only(reference) and _on_inference_thread_only(candidate)
    await batcher.close()


async def test_a_candidate_that_changes_the_answers_is_closed_and_fp32_serves(settings) -> None:
    built = Built(settings.model_dir, candidate_transform=lambda logits: np.roll(logits, 1, axis=1))
    runtime, batcher, metrics = await _load(settings, built)
    reference, candidate = built.engines["fp32"], built.engines["bf16"]
    verdict = runtime.precision_verdict
    assert verdict is not None and verdict.conclusive and not verdict.passed
    assert verdict.photos_agreeing == 0 and verdict.varied_agreement < 0.1
    assert runtime.engine is reference and candidate.closed and not reference.closed
    assert runtime.choice.precision == "fp32" and "changes the answers" in runtime.choice.reason
    assert [i["dtype"] for i in _model_info(metrics)] == ["float32"]
    candidate_passes = candidate.passes
    await _serve(runtime, batcher)
    assert candidate.passes == candidate_passes
    await batcher.close()


async def test_a_cached_verdict_builds_and_loads_only_the_chosen_engine(settings) -> None:
    first, batcher, _ = await _load(settings, Built(settings.model_dir))
    await batcher.close()
    again = Built(settings.model_dir)
    runtime, batcher, metrics = await _load(settings, again)
    assert list(again.engines) == ["bf16"], "no reference engine, no calibration passes"
    assert runtime.precision_verdict == first.precision_verdict
    assert "precision check (cached)" in runtime.choice.reason
    assert [i["dtype"] for i in _model_info(metrics)] == ["bfloat16"]
    await batcher.close()


async def test_a_failing_load_closes_what_it_built(settings) -> None:
    """A candidate that cannot load fails the start (no pod reports ready on half a decision), and the
    reference already loaded is closed, not leaked."""

    class Broken(Built):
        def __call__(self, choice, settings, spec):
            engine = super().__call__(choice, settings, spec)
            if choice.precision == "bf16":
                engine.load = lambda: (_ for _ in ()).throw(RuntimeError("no bf16 kernels"))  # type: ignore[method-assign]
            return engine

    built = Broken(settings.model_dir)
    with pytest.raises(RuntimeError, match="no bf16 kernels"):
        await _load(settings, built)
    assert built.engines["fp32"].closed and built.engines["bf16"].closed


def test_freezing_the_start_up_heap_collects_its_garbage_first_and_keeps_the_rest_out_of_full_collections() -> None:
    # In a fresh interpreter: freezing is process-wide.
    code = """
import gc, weakref
from predictor.lifecycle import freeze_startup_heap
class Node:
    pass
garbage = Node(); garbage.self = garbage; ref = weakref.ref(garbage); del garbage
keep = [[i] for i in range(50_000)]
frozen = freeze_startup_heap()
assert ref() is None, "start-up's garbage cycles are collected before the freeze"
assert frozen >= 50_000 and gc.get_freeze_count() == frozen, frozen
assert len(gc.get_objects(2)) < 1_000, "a full collection would scan the start-up heap"
print(frozen)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
