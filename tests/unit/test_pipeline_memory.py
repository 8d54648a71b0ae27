"""The pipeline with a device that runs out of memory (a real torch engine on the CPU raising the real
``torch.cuda.OutOfMemoryError``, tests/support/faulty_engine.py): warm-up, per-image outcomes, the cap."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from predictor.config import Settings
from predictor.errors import InsufficientMemory
from predictor.metrics import PredictorMetrics
from predictor.pipeline import Pipeline
from predictor.preprocess import PreprocessSpec
from tests.support.faulty_engine import HUGE_RGB, MemoryLimitedEngine
from tests.support.servers import jpeg_bytes


def _engine(model_dir: Path, fits: int, max_batch_size: int) -> MemoryLimitedEngine:
    spec = PreprocessSpec.from_model_dir(model_dir)
    # padded to buckets, as on CUDA: the warm-up runs every bucket up to max_batch_size
    return MemoryLimitedEngine(
        spec, model_dir, "cpu", "fp32", threads=1, max_batch_size=max_batch_size, pad_to_buckets=True, fits=fits
    )


def _pipeline(model_dir: Path, engine: MemoryLimitedEngine, max_batch_size: int) -> Pipeline:
    settings = Settings(model_dir=model_dir, max_batch_size=max_batch_size, max_batch_delay_ms=1, device="cpu")
    return Pipeline(settings, PredictorMetrics(CollectorRegistry()), engine=engine)


def _cap_gauge(p: Pipeline) -> float:
    return p.metrics.batch_cap.collect()[0].samples[0].value


def test_a_warm_up_batch_that_does_not_fit_caps_batches_instead_of_failing_the_start(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(tiny_model_dir, fits=4, max_batch_size=16)
    p = _pipeline(tiny_model_dir, engine, 16)
    with caplog.at_level(logging.WARNING):
        p.load()
    assert engine.calls[:4] == [1, 2, 4, 8]  # the buckets, until 8 ran out of memory; 16 was not tried
    assert 16 not in engine.calls
    assert p.batch_cap == 4 and _cap_gauge(p) == 4 and p.ready
    assert "warm-up: a batch of 8 ran out of device memory (CUDA out of memory." in caplog.text
    assert "batches capped at 4 images (was 16, max_batch_size=16)" in caplog.text


def test_a_device_too_small_for_one_image_fails_the_start(tiny_model_dir: Path) -> None:
    p = _pipeline(tiny_model_dir, _engine(tiny_model_dir, fits=0, max_batch_size=4), 4)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="CUDA out of memory"):
        p.load()


@pytest.fixture
async def pipeline(tiny_model_dir: Path) -> AsyncIterator[tuple[Pipeline, MemoryLimitedEngine]]:
    engine = _engine(tiny_model_dir, fits=8, max_batch_size=8)
    p = _pipeline(tiny_model_dir, engine, 8)
    p.load()
    await p.start()
    yield p, engine
    await p.close()


async def test_per_image_outcomes_put_the_misfit_in_its_place_and_answer_the_rest(pipeline, photos) -> None:
    p, _ = pipeline
    huge = np.full((64, 64, 3), HUGE_RGB, np.uint8)  # RGB pixels (a tensor input), resized to the model's size
    cat, coffee = jpeg_bytes(photos["chelsea"]), jpeg_bytes(photos["coffee"])
    expected = await p.classify([cat, coffee], top_k=3)
    outcomes = await p.classify_each([cat, huge, coffee], top_k=3)
    assert isinstance(outcomes[1], InsufficientMemory) and outcomes[1].status_code == 507
    _same(outcomes[0], expected[0])
    _same(outcomes[2], expected[1])
    with pytest.raises(InsufficientMemory, match=r"^image 1: the cpu device ran out of memory"):
        await p.classify([cat, huge], top_k=3)
    _same((await p.classify([cat], top_k=3))[0], expected[0])  # still serving


def _same(got: list, want: list) -> None:
    """The same classes with the same scores (other batch sizes change the last float bits)."""
    assert [x.class_id for x in got] == [x.class_id for x in want]
    assert [x.score for x in got] == pytest.approx([x.score for x in want], abs=1e-5)
