"""The pipeline keeps each forward pass within an eighth of the queue-wait budget: a real torch engine on
the CPU, slowed to 20 ms an image, and the memory's cap beside it (the lower of the two applies)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from predictor.config import Settings
from predictor.metrics import PredictorMetrics
from predictor.pipeline import Pipeline
from predictor.preprocess import PreprocessSpec
from tests.support.faulty_engine import MemoryLimitedEngine
from tests.support.servers import jpeg_bytes

PER_IMAGE_S = 0.02


class SlowEngine(MemoryLimitedEngine):
    """The real forward pass, plus 20 ms an image (a model that is slow on this device)."""

    def infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        time.sleep(PER_IMAGE_S * int(batch.shape[0]))
        return super().infer(batch)


def _pipeline(model_dir: Path, fits: int, budget_ms: int) -> tuple[Pipeline, SlowEngine]:
    spec = PreprocessSpec.from_model_dir(model_dir)
    engine = SlowEngine(spec, model_dir, "cpu", "fp32", threads=1, max_batch_size=16, fits=fits)
    settings = Settings(
        model_dir=model_dir, max_batch_size=16, max_batch_delay_ms=1, device="cpu", max_queue_wait_ms=budget_ms
    )
    return Pipeline(settings, PredictorMetrics(CollectorRegistry()), engine=engine), engine


def _cap_gauge(p: Pipeline) -> float:
    return p.metrics.batch_cap.collect()[0].samples[0].value


async def test_slow_passes_lower_the_batch_cap_to_an_eighth_of_the_budget(tiny_model_dir: Path, photos) -> None:
    p, engine = _pipeline(tiny_model_dir, fits=1_000_000, budget_ms=800)  # a pass may take 100 ms: 4 images
    p.load()
    await p.start()
    try:
        # The pass timed after the warm-up (20 ms an image) sets the cap before any request.
        assert p.batch_cap == 4 and _cap_gauge(p) == 4
        engine.calls.clear()
        cat = jpeg_bytes(photos["chelsea"])
        first = await p.classify([cat] * 16, top_k=1)
        assert engine.calls and max(engine.calls) <= 4, engine.calls
        assert p.batch_cap == 4 and _cap_gauge(p) == 4
        again = await p.classify([cat] * 16, top_k=1)
        assert [r[0].class_id for r in again] == [r[0].class_id for r in first]
    finally:
        await p.close()


async def test_until_images_drain_the_drain_rate_is_the_warm_pass_not_none(tiny_model_dir: Path, photos) -> None:
    """A pod that has just started (a wake) admits by what it can drain: a capped batch of 4 at 20 ms an
    image after the 1-ms batch delay, about 49 images/s; the first drained images replace the estimate."""
    p, _ = _pipeline(tiny_model_dir, fits=1_000_000, budget_ms=800)
    p.load()
    await p.start()
    try:
        rate = p.admission.rate
        assert not rate.measured
        estimate = rate.images_per_s()
        assert estimate is not None and 25 < estimate <= 4 / (0.001 + 4 * PER_IMAGE_S), estimate
        assert p.admission.expected_wait_s(8) == 8 / estimate
        await p.classify([jpeg_bytes(photos["chelsea"])] * 4, top_k=1)
        assert rate.measured and rate.images_per_s() != estimate
    finally:
        await p.close()


async def test_the_lower_of_the_memory_cap_and_the_latency_cap_applies(tiny_model_dir: Path, photos) -> None:
    p, _ = _pipeline(tiny_model_dir, fits=2, budget_ms=800)  # memory: 2 images; latency: 4
    p.load()
    await p.start()
    try:
        cat = jpeg_bytes(photos["chelsea"])
        for _ in range(4):  # the first pass, split after running out of memory, took long; the median forgets it
            await p.classify([cat] * 8, top_k=1)
        assert p.batch_cap == 2 and _cap_gauge(p) == 2
    finally:
        await p.close()
    q, _ = _pipeline(tiny_model_dir, fits=1_000_000, budget_ms=30_000)  # a pass may take 3.75 s: no cap
    q.load()
    await q.start()
    try:
        await q.classify([jpeg_bytes(photos["chelsea"])] * 16, top_k=1)
        assert q.batch_cap == 16 and _cap_gauge(q) == 16
    finally:
        await q.close()
