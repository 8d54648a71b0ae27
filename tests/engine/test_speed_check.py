"""The speed check (predictor/engine/speed_check.py): candidates, timing, the pick, the cache, and a real
pipeline that measures its backends after ready and serves the winner, then starts with it from the cache.

Timing is tested with real torch engines (the tiny random model) of which one is made slower by a
known amount, so which one must win does not depend on this machine's speed.
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

from predictor.config import Settings
from predictor.engine import speed_check
from predictor.engine.speed_check import PendingSpeedCheck, SpeedVerdict, Variant, candidates, pick, timed_rounds
from predictor.engine.torch_engine import TorchEngine
from predictor.metrics import PredictorMetrics
from predictor.pipeline import Pipeline
from predictor.preprocess import PreprocessSpec
from tests.support.servers import jpeg_bytes

OV_LAT, OV_TPUT = Variant("openvino", "fp32", "LATENCY"), Variant("openvino", "fp32", "THROUGHPUT")
ORT, TORCH = Variant("onnxruntime", "fp32"), Variant("torch", "fp32")


def test_fp32_candidates_are_every_cpu_backend_and_each_openvino_hint() -> None:
    assert candidates("fp32", "auto", "auto", None, openvino_ok=True) == [ORT, OV_LAT, OV_TPUT, TORCH]
    assert candidates("fp32", "auto", "LATENCY", None, openvino_ok=True) == [ORT, OV_LAT, TORCH]
    assert candidates("fp32", "openvino", "auto", None, openvino_ok=True) == [OV_LAT, OV_TPUT]
    assert candidates("fp32", "openvino", "THROUGHPUT", None, openvino_ok=True) == [OV_TPUT]  # nothing to pick
    assert candidates("fp32", "auto", "auto", None, openvino_ok=False) == [ORT, TORCH]


def test_reduced_precision_candidates_are_only_the_checked_backend() -> None:
    """bf16 keeps the answers only where the precision check said so: its backend, any hint."""
    bf16 = candidates("bf16", "auto", "auto", "openvino", openvino_ok=True)
    assert bf16 == [Variant("openvino", "bf16", "LATENCY"), Variant("openvino", "bf16", "THROUGHPUT")]
    assert candidates("bf16", "auto", "auto", "torch", openvino_ok=True) == [Variant("torch", "bf16")]


def test_labels_round_trip() -> None:
    for v in (OV_TPUT, ORT):
        assert Variant.parse(v.label) == v
    assert OV_TPUT.label == "openvino fp32 THROUGHPUT" and ORT.label == "onnxruntime fp32"


def test_pick_needs_the_margin_to_replace_the_serving_variant() -> None:
    assert pick({"a": 100.0, "b": 102.0}, serving="a") == "a"
    assert pick({"a": 100.0, "b": 104.0}, serving="a") == "b"
    assert pick({"a": 100.0, "b": 90.0}, serving="b") == "a"


class Slowed(TorchEngine):
    """The real engine, ``delay_s`` slower per image (a backend that is slower on this machine)."""

    def __init__(self, *args, delay_s: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delay_s = delay_s
        self.closed = False

    def infer(self, batch):
        time.sleep(self.delay_s * len(batch))
        return super().infer(batch)

    def close(self) -> None:
        self.closed = True
        super().close()


def _engine(model_dir: Path, delay_s: float = 0.0) -> Slowed:
    e = Slowed(PreprocessSpec.from_model_dir(model_dir), model_dir, threads=1, delay_s=delay_s)
    e.load()
    return e


def test_timed_rounds_measure_each_engine_and_run_the_background_work_beside_each_pass(tiny_model_dir: Path) -> None:
    fast, slow = _engine(tiny_model_dir), _engine(tiny_model_dir, delay_s=0.01)
    batch = np.zeros((4, 64, 64, 3), np.uint8)
    threads, started, joined = set(), [], []

    def run(fn):
        threads.add(threading.current_thread().name)
        return fn()

    def work(n: int):
        started.append(n)
        return lambda: joined.append(n)

    rates = timed_rounds({"fast": fast, "slow": slow}, batch, run, work, rounds=3, seconds_per_turn=0.05)
    assert set(rates) == {"fast", "slow"}
    # 10 ms per image on top of a pass of a few ms: the slow one is well under 100 img/s, the fast one above
    assert rates["slow"] < 100 < rates["fast"], rates
    assert started and all(n == 4 for n in started) and len(joined) == len(started)
    assert pick(rates, "slow") == "fast"


def test_a_pending_check_measures_caches_and_returns_the_winner_loaded(tiny_model_dir: Path, tmp_path: Path) -> None:
    serving = _engine(tiny_model_dir, delay_s=0.01)  # "openvino fp32 LATENCY", slow here
    built: list[Variant] = []

    def build(v: Variant):
        built.append(v)
        if v == ORT:
            raise ValueError("onnxruntime cannot run this model here")
        return Slowed(PreprocessSpec.from_model_dir(tiny_model_dir), tiny_model_dir, threads=1, delay_s=0.0)

    path = tmp_path / "speed.json"
    pending = PendingSpeedCheck([ORT, OV_LAT, TORCH], path, 2, (64, 64), build)
    verdict, winner, engine = pending.run(serving, OV_LAT, lambda fn: fn())
    assert winner == TORCH and isinstance(engine, Slowed) and engine.delay_s == 0.0
    assert verdict.winner == "torch fp32" and set(verdict.img_per_s) == {"openvino fp32 LATENCY", "torch fp32"}
    assert "onnxruntime cannot run" in verdict.failed["onnxruntime fp32"]
    assert not serving.closed  # the caller switches, then closes the old engine
    assert SpeedVerdict.from_json(path.read_text()) == verdict
    assert "fastest: torch fp32" in verdict.describe() and "failed: onnxruntime fp32" in verdict.describe()
    # the next start: read from the cache, nothing measured, only the winner built
    built.clear()
    verdict2, winner2, engine2 = pending.run(serving, OV_LAT, lambda fn: pytest.fail("measured again"))
    assert verdict2 == verdict and winner2 == TORCH and built == [TORCH] and engine2 is not None
    # already serving the winner: nothing to build
    built.clear()
    assert pending.run(engine2, TORCH, lambda fn: fn())[2] is None and built == []


def test_an_unreadable_verdict_is_measured_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "speed.json"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert speed_check.read_verdict(path) is None
    assert "measuring again" in caplog.text


async def test_a_pipeline_measures_its_backends_after_ready_and_starts_with_the_winner_next_time(
    tiny_model_dir: Path, tmp_path: Path, photos, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        model_dir=tiny_model_dir, cache_dir=tmp_path / "cache", precision="fp32", cpu_threads=2, max_batch_size=8
    )
    cat = jpeg_bytes(photos["chelsea"])
    with caplog.at_level(logging.INFO):
        p = Pipeline(settings, PredictorMetrics(CollectorRegistry()))
        await asyncio.to_thread(p.load)
        await p.start()
        before = await p.classify([cat], top_k=3)  # served while the check runs
        assert await asyncio.to_thread(p.runtime.speed_check_done.wait, 240)
        after = await p.classify([cat], top_k=3)
        served = p.engine_info
        await p.close()
    assert [x.class_id for x in after[0]] == [x.class_id for x in before[0]]  # fp32 everywhere: same answers
    log = caplog.text
    assert "speed check (" in log and "fastest: " in log, log[-3000:]
    (verdict_file,) = (tmp_path / "cache").glob("speed-fp32-*.json")
    verdict = SpeedVerdict.from_json(verdict_file.read_text())
    assert set(verdict.img_per_s) == {
        "onnxruntime fp32",
        "openvino fp32 LATENCY",
        "openvino fp32 THROUGHPUT",
        "torch fp32",
    }
    winner = Variant.parse(verdict.winner)
    assert served.backend == ("openvino-throughput" if winner == OV_TPUT else winner.backend), (served, winner)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = Pipeline(settings, PredictorMetrics(CollectorRegistry()))
        await asyncio.to_thread(again.load)
        assert again.engine_info == served  # straight from the cache: no fp32-LATENCY interlude
        assert again.runtime.speed_check_done.wait(60)
        await again.close()
    assert f"speed check (cached in {verdict_file.name})" in caplog.text


def test_a_winner_kept_by_the_margin_says_so() -> None:
    close = SpeedVerdict("openvino fp32 LATENCY", {"onnxruntime fp32": 54.6, "openvino fp32 LATENCY": 53.1}, 8, 9.0)
    assert "onnxruntime fp32 was 2.8% faster, under the 3% margin: the serving one stays" in close.describe()
    clear = SpeedVerdict("onnxruntime fp32", {"onnxruntime fp32": 60.0, "openvino fp32 LATENCY": 53.1}, 8, 9.0)
    assert "margin" not in clear.describe()
