"""On a CUDA device: GPU memory that runs out for real, and a CUDA context broken for real.

Marked ``gpu`` (deselected without a CUDA device); in ``bench/gpu_suite.sh``'s pytest stage these run
after tests/gpu/test_cuda.py (file order), so a tight budget cuts these first. Each is short:

* memory filled for real (a tensor holding all but room for a few images' activations): a batch of 64
  runs out of memory, is split and answered in full with the unconstrained answers, and the batch cap
  drops below 64; with the memory freed and a quiet period passed the cap grows again;
* ``gpu_memory_fraction``: the torch engine's allocator refuses more than that share of the device;
* a device-side assert (CUDA's sticky error 710) in a process of its own, through the real pipeline:
  503 for that request and every later one without touching the device, and the model not ready.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from predictor.engine.faults import BatchCap, DeviceGuard
from predictor.engine.torch_engine import TorchEngine
from predictor.preprocess import PreprocessSpec
from tests.support.servers import REPO

pytestmark = pytest.mark.gpu

BATCH = 64
MIB = 1 << 20


@pytest.fixture(scope="module")
def engine(default_model_dir: Path, lite0_spec: PreprocessSpec) -> Iterator[TorchEngine]:
    e = TorchEngine(lite0_spec, default_model_dir, "cuda", "fp16", max_batch_size=BATCH)
    e.load()
    e.warmup(e.warmup_sizes(BATCH))  # cuDNN picks its kernels for every bucket before memory is short
    yield e
    e.close()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_gpu_memory_filled_for_real_splits_the_batch_and_caps_it(engine: TorchEngine, varied_batch) -> None:
    batch = varied_batch[:BATCH]
    want = engine.infer(batch)
    torch.cuda.synchronize()
    engine.release_memory()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    engine.infer(batch[:8])
    per_8 = torch.cuda.max_memory_allocated() - base  # activations of a batch of 8 (inputs included)
    engine.release_memory()
    free, _ = torch.cuda.mem_get_info()
    room = 3 * per_8  # 8 images surely fit, 64 (8 x per_8) surely do not
    filler = torch.empty(max(0, free - room), dtype=torch.uint8, device="cuda")  # another tenant, say
    clock, ooms = Clock(), []
    guard = DeviceGuard(BatchCap(BATCH, recovery_s=60, clock=clock), ooms.append)
    try:
        rows = guard.infer(engine, list(batch))
        print(f"\nper 8 images {per_8 / MIB:.0f} MiB, room {room / MIB:.0f} MiB: out of memory at {ooms}, "
              f"cap {guard.cap.value}")  # fmt: skip
        assert ooms and ooms[0] == BATCH, ooms  # the real OutOfMemoryError, recognised
        assert 1 <= guard.cap.value < BATCH
        got = np.stack(rows)
        assert got.shape == want.shape
        assert list(got.argmax(1)) == list(want.argmax(1))  # every image answered, in order
        assert float(np.abs(got - want).max()) < 0.5  # fp16: other batch sizes, other kernels
    finally:
        del filler
        engine.release_memory()
    capped = guard.cap.value
    clock.now += 60
    guard.infer(engine, list(batch[:capped]))  # memory is back: a quiet forward pass raises the cap
    assert guard.cap.value > capped


def test_gpu_memory_fraction_limits_the_engines_allocator(default_model_dir: Path, lite0_spec: PreprocessSpec) -> None:
    total = torch.cuda.get_device_properties(0).total_memory
    e = TorchEngine(lite0_spec, default_model_dir, "cuda", "fp16", max_batch_size=8, memory_fraction=0.05)
    try:
        e.load()
        e.warmup([1])  # the model fits in 5 %
        with pytest.raises(torch.cuda.OutOfMemoryError):
            torch.empty(int(total * 0.06), dtype=torch.uint8, device="cuda")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)  # the limit is per process: give the rest of the tests theirs
        e.close()


def test_a_broken_cuda_context_answers_503_and_the_model_is_not_ready(tiny_model_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.broken_context", str(tiny_model_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\n{out}")
    assert out["first"] == 1
    assert out["broken"]["status"] == 503 and out["broken"]["reason"] == "engine_broken", out
    assert "device-side assert" in out["broken"]["message"], out
    assert out["after"]["status"] == 503 and not out["after"]["reached_engine"], out  # latched, device untouched
    assert "device-side assert" in out["pipeline_broken"] and out["model_ready"] is False, out
    assert "answering 503, reporting not live" in proc.stderr, proc.stderr[-3000:]
