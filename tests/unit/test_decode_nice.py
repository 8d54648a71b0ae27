"""``decode_nice``: the decode pool's threads run at the niceness asked for, the others as before."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from predictor.config import Settings
from predictor.metrics import PredictorMetrics
from predictor.pipeline import Pipeline


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # on Linux: the calling thread's


@pytest.mark.parametrize("nice", [0, 7])
def test_decode_threads_run_at_the_niceness_asked_for(tiny_model_dir: Path, nice: int) -> None:
    base = _niceness()
    settings = Settings(model_dir=tiny_model_dir, device="cpu", backend="torch", decode_threads=2, decode_nice=nice)
    p = Pipeline(settings, PredictorMetrics(CollectorRegistry()))
    p.load()
    try:
        seen = {p._decode_pool.submit(_niceness).result() for _ in range(8)}
        assert seen == {nice if nice else base}
        assert _niceness() == base  # the loading (and inference) threads keep theirs
    finally:
        asyncio.run(p.close())


def test_decode_nice_is_bounded_by_what_linux_accepts() -> None:
    with pytest.raises(ValueError, match="decode_nice"):
        Settings(decode_nice=20)
