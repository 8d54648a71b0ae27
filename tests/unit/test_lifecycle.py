"""The start-up path (predictor/lifecycle.py): the deferred precision check and the engine swap.

The candidate engines here are real torch engines on the tiny random model (its fp32 answers vary enough
for the check to be conclusive) whose answers a test controls
(unchanged: the check surely passes; shifted by one class: it surely fails), so each outcome is tested on
every CPU, whatever its bf16 support. Requests go through a real batcher on the inference thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from predictor.batching import DynamicBatcher
from predictor.config import Settings
from predictor.engine import EnginePlan, PendingCheck
from predictor.engine.base import Engine, EngineInfo
from predictor.engine.torch_engine import TorchEngine
from predictor.lifecycle import ModelRuntime
from predictor.metrics import PredictorMetrics
from predictor.preprocess import PreprocessSpec


class Controlled(Engine):
    """A real torch fp32 engine whose logits pass through ``transform``; its load may wait on a gate."""

    def __init__(self, model_dir: Path, dtype: str, transform=None, gate: threading.Event | None = None) -> None:
        spec = PreprocessSpec.from_model_dir(model_dir)
        super().__init__(spec)
        self.inner = TorchEngine(spec, model_dir, "cpu", "fp32", threads=1)
        self.dtype, self.transform, self.gate = dtype, transform, gate
        self.loading = threading.Event()
        self.closed = False

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("controlled", "cpu", self.dtype)

    def load(self) -> None:
        self.loading.set()
        if self.gate is not None:
            assert self.gate.wait(60)
        self.inner.load()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self.inner.infer(batch)
        return self.transform(out) if self.transform else out

    def close(self) -> None:
        self.closed = True


def _model_info(metrics: PredictorMetrics) -> list[dict[str, str]]:
    return [s.labels for m in metrics.model_info.collect() for s in m.samples if s.value == 1]


async def _runtime(settings: Settings, candidate: Controlled, tmp_path: Path):
    reference = Controlled(settings.model_dir, "float32")
    spec = PreprocessSpec.from_model_dir(settings.model_dir)
    plan = EnginePlan("controlled", "cpu", "bf16", "test", verify_against="fp32")
    pending = PendingCheck(plan, settings, spec, tmp_path / "verdict.json", build=lambda *_: candidate)
    metrics = PredictorMetrics(CollectorRegistry())
    runtime: ModelRuntime

    def infer(items):
        return runtime.engine.infer_items(items)

    batcher = DynamicBatcher(infer, max_batch_size=8, max_batch_delay_ms=1)
    runtime = ModelRuntime(settings, metrics, batcher.run_on_handler_thread, engine=reference, pending=pending)
    await asyncio.to_thread(runtime.load)
    batcher.start()
    return runtime, batcher, reference, metrics


@pytest.fixture
def settings(tiny_model_dir: Path, tmp_path: Path) -> Settings:
    return Settings(model_dir=tiny_model_dir, device="cpu", cache_dir=tmp_path, max_batch_size=8)


def _image(spec_hw: tuple[int, int], value: int) -> np.ndarray:
    return np.full((*spec_hw, 3), value, np.uint8)


async def _serve_until(done: threading.Event, batcher: DynamicBatcher, hw: tuple[int, int]) -> int:
    answered = 0
    while not done.is_set():
        out = await batcher.submit([_image(hw, 90), _image(hw, 160)], time.monotonic() + 30)
        assert len(out) == 2 and out[0].shape == out[1].shape
        answered += 2
        await asyncio.sleep(0)
    return answered


async def test_a_candidate_that_keeps_the_answers_is_swapped_in_while_serving(settings, tmp_path) -> None:
    candidate = Controlled(settings.model_dir, "bfloat16")
    runtime, batcher, reference, metrics = await _runtime(settings, candidate, tmp_path)
    assert [i["dtype"] for i in _model_info(metrics)] == ["float32"]
    runtime.start_background_check()
    answered = await _serve_until(runtime.precision_check_done, batcher, runtime.spec.crop_hw)
    assert answered > 0, "requests are answered while the check runs"
    verdict = runtime.precision_verdict
    assert verdict is not None and verdict.conclusive and verdict.passed, verdict
    assert runtime.engine is candidate and reference.closed and not candidate.closed
    assert [(i["backend"], i["dtype"]) for i in _model_info(metrics)] == [("controlled", "bfloat16")]
    assert (tmp_path / "verdict.json").is_file()
    await batcher.close()


async def test_a_candidate_that_changes_the_answers_is_closed_and_fp32_stays(settings, tmp_path) -> None:
    candidate = Controlled(settings.model_dir, "bfloat16", transform=lambda logits: np.roll(logits, 1, axis=1))
    runtime, batcher, reference, metrics = await _runtime(settings, candidate, tmp_path)
    runtime.start_background_check()
    await _serve_until(runtime.precision_check_done, batcher, runtime.spec.crop_hw)
    verdict = runtime.precision_verdict
    assert verdict is not None and verdict.conclusive and not verdict.passed
    assert verdict.photos_agreeing == 0 and verdict.varied_agreement < 0.1
    assert runtime.engine is reference and candidate.closed and not reference.closed
    assert [i["dtype"] for i in _model_info(metrics)] == ["float32"]
    await batcher.close()


async def test_the_candidates_load_never_holds_up_the_inference_thread(settings, tmp_path) -> None:
    gate = threading.Event()
    candidate = Controlled(settings.model_dir, "bfloat16", gate=gate)
    runtime, batcher, _, _ = await _runtime(settings, candidate, tmp_path)
    runtime.start_background_check()
    try:
        assert await asyncio.to_thread(candidate.loading.wait, 60), "the check reached the candidate's load"
        t0 = time.monotonic()
        out = await batcher.submit([_image(runtime.spec.crop_hw, 120)], time.monotonic() + 30)
        assert len(out) == 1 and time.monotonic() - t0 < 10
        assert not runtime.precision_check_done.is_set(), "answered while the candidate was still loading"
    finally:
        gate.set()
    assert await asyncio.to_thread(runtime.precision_check_done.wait, 120)
    await batcher.close()


async def test_shutting_down_during_the_check_stops_it_at_its_next_step(settings, tmp_path, caplog) -> None:
    gate = threading.Event()
    candidate = Controlled(settings.model_dir, "bfloat16", gate=gate)
    runtime, batcher, reference, _ = await _runtime(settings, candidate, tmp_path)
    runtime.start_background_check()
    assert await asyncio.to_thread(candidate.loading.wait, 60)
    with caplog.at_level(logging.INFO, logger="predictor.lifecycle"):
        runtime.stop_background_work()  # as KServe's stop does, while the candidate is still loading
        gate.set()
        assert await asyncio.to_thread(runtime.precision_check_done.wait, 30)
    assert "precision check stopped: shutting down" in caplog.text
    assert runtime.precision_verdict is None and not (tmp_path / "verdict.json").exists(), "no forward pass ran"
    assert runtime.engine is reference and candidate.closed
    await batcher.close()
