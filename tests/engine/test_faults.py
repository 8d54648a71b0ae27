"""Device faults (predictor/engine/faults.py): which errors are which, the batch cap, split-and-retry.

The engine is a real torch engine on the CPU (the default model, real photos) that raises the real
``torch.cuda.OutOfMemoryError`` above a chosen batch size, or on a "huge" image, and the real
``torch.AcceleratorError`` of an illegal memory access when told to (tests/support/faulty_engine.py). Every
answer that survives a split is compared with the same engine's answer for the image on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, RuntimeException

from predictor.engine.faults import BatchCap, DeviceGuard, is_context_broken, is_out_of_memory
from predictor.errors import EngineBroken, InsufficientMemory, InvalidInput
from predictor.preprocess import PreprocessSpec
from tests.support.faulty_engine import HUGE_RGB, ILLEGAL_ADDRESS, MemoryLimitedEngine

ORT_ARENA_OOM = (
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. Name:'/conv1' "
    "Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* "
    "onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, "
    "onnxruntime::WaitNotificationFn) Failed to allocate memory for requested buffer of size 411041792"
)
ORT_CUDA_OOM = "[ONNXRuntimeError] : 1 : FAIL : CUDA failure 2: out of memory ; GPU=0 ; hostname=pod ; expr=cudaMalloc"
ORT_ILLEGAL = (
    "[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access was encountered ; GPU=0 ; "
    "expr=cudaStreamSynchronize"
)


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB."),
        RuntimeError("CUDA error: out of memory"),  # torch < 2.8 outside the caching allocator
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you tried"),
        RuntimeException(ORT_ARENA_OOM),
        Fail(ORT_CUDA_OOM),
        MemoryError(),
    ],
    ids=["torch", "torch-old", "cublas", "torch-cpu", "ort-arena", "ort-cuda", "memoryerror"],
)
def test_out_of_memory_errors_are_recognised(error: Exception) -> None:
    assert is_out_of_memory(error)
    assert not is_context_broken(error)


@pytest.mark.parametrize(
    "error",
    [
        torch.AcceleratorError(ILLEGAL_ADDRESS),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        RuntimeError("CUDA error: uncorrectable ECC error encountered"),
        RuntimeError("CUDA error: unspecified launch failure"),
        RuntimeError("CUDA error: device-side assert triggered"),
        Fail(ORT_ILLEGAL),
    ],
    ids=["torch", "torch-old", "ecc", "launch", "assert", "ort"],
)
def test_broken_context_errors_are_recognised(error: Exception) -> None:
    assert is_context_broken(error)
    assert not is_out_of_memory(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("uint8 batch must be [N,224,224,3], got [2, 3]"),
        RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
        InvalidInput("image 2 is out of memory-sized bounds"),  # ours: never a device fault
        KeyboardInterrupt(),
    ],
)
def test_other_errors_are_neither(error: BaseException) -> None:
    assert not is_out_of_memory(error) and not is_context_broken(error)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cap_lowers_to_what_worked_and_grows_back_a_quarter_per_quiet_period() -> None:
    clock, changes = Clock(), []
    cap = BatchCap(32, recovery_s=60, on_change=lambda new, old: changes.append((old, new)), clock=clock)
    assert cap.value == 32
    cap.quiet()
    assert cap.value == 32 and not changes  # at the maximum: nothing to raise
    cap.lower(8)
    assert cap.value == 8 and changes == [(32, 8)]
    clock.now += 59
    cap.quiet()
    assert cap.value == 8  # not a whole quiet period yet
    steps = []
    while cap.value < 32:
        clock.now += 60
        cap.quiet()
        steps.append(cap.value)
    assert steps == [10, 12, 15, 18, 22, 27, 32], steps
    assert [new for _, new in changes] == [8, *steps]
    clock.now += 600
    cap.quiet()
    assert cap.value == 32 and len(changes) == 8


def test_cap_never_rises_above_the_running_value_when_lowered_and_stays_at_least_one() -> None:
    cap = BatchCap(16, recovery_s=1, clock=Clock())
    cap.lower(0)  # not even one image fitted
    assert cap.value == 1
    cap.lower(12)  # a batch of at most the cap ran; more cannot have worked
    assert cap.value == 1


def test_a_raise_that_runs_out_of_memory_soon_doubles_the_quiet_period() -> None:
    clock = Clock()
    cap = BatchCap(32, recovery_s=10, clock=clock)
    cap.lower(8)
    clock.now += 10
    cap.quiet()
    assert cap.value == 10 and cap.period_s == 10
    clock.now += 3  # the raised cap ran out of memory within one period
    cap.lower(5)
    assert cap.value == 5 and cap.period_s == 20
    clock.now += 19
    cap.quiet()
    assert cap.value == 5
    clock.now += 1
    cap.quiet()
    assert cap.value == 6
    clock.now += 1
    cap.lower(6)  # again too soon: 40 s
    assert cap.period_s == 40
    for _ in range(10):  # the back-off is bounded
        clock.now += cap.period_s
        cap.quiet()
        clock.now += 1
        cap.lower(cap.value - 1 or 1)
    assert cap.period_s == 10 * BatchCap.MAX_BACKOFF
    clock.now += cap.period_s
    cap.quiet()
    clock.now += cap.period_s  # the raise held for a whole period: back to the base period
    cap.quiet()
    assert cap.period_s == 10


def test_cap_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        BatchCap(0, 1)
    with pytest.raises(ValueError, match="recovery_s must be > 0"):
        BatchCap(4, 0)


@pytest.fixture(scope="module")
def engine(default_model_dir: Path, lite0_spec: PreprocessSpec) -> Iterator[MemoryLimitedEngine]:
    e = MemoryLimitedEngine(lite0_spec, default_model_dir, "cpu", "fp32", threads=1)
    e.load()
    yield e
    e.close()


@pytest.fixture(scope="module")
def alone(
    engine: MemoryLimitedEngine, photo_batch: np.ndarray, varied_batch: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Eight distinct inputs and each one's logits when inferred on its own (the independent reference)."""
    images = np.concatenate([photo_batch, varied_batch[::50][:3]])
    assert len(images) == 8
    engine.fits = 1_000_000
    return images, np.concatenate([engine.infer(images[i : i + 1]) for i in range(8)])


class Guarded:
    """A DeviceGuard with a cap of 32 on a test clock, recording what it reports."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.ooms: list[int] = []
        self.broken: list[str] = []
        self.guard = DeviceGuard(BatchCap(32, recovery_s=60, clock=self.clock), self.ooms.append, self.broken.append)


def _reset(engine: MemoryLimitedEngine, fits: int) -> Guarded:
    engine.fits, engine.broken, engine.break_at_call, engine.calls, engine.released = fits, False, None, [], 0
    return Guarded()


def test_a_batch_that_does_not_fit_is_split_in_halves_and_every_image_answered(engine, alone) -> None:
    images, reference = alone
    g = _reset(engine, fits=3)
    rows = g.guard.infer(engine, list(images))
    assert engine.calls == [8, 4, 2, 2, 4, 2, 2]  # 8 and each 4 ran out of memory; the pairs ran
    assert g.ooms == [8, 4, 4] and engine.released == 3  # freed before every retry
    assert g.guard.cap.value == 2  # the largest batch that worked
    assert len(rows) == 8
    for got, want in zip(rows, reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # in input order
    assert [int(r.argmax()) for r in rows] == [int(r.argmax()) for r in reference]


def test_an_uneven_split_keeps_the_order_and_caps_at_the_largest_part(engine, alone) -> None:
    images, reference = alone
    g = _reset(engine, fits=4)
    rows = g.guard.infer(engine, list(images[:7]))
    assert engine.calls == [7, 3, 4]
    assert g.guard.cap.value == 4
    for got, want in zip(rows, reference[:7], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_an_image_that_does_not_fit_alone_fails_alone(engine, alone, lite0_spec: PreprocessSpec) -> None:
    images, reference = alone
    h, w = lite0_spec.crop_hw
    huge = np.empty((h, w, 3), np.uint8)
    huge[:] = HUGE_RGB
    batch = [images[0], huge, images[2], images[3]]
    g = _reset(engine, fits=100)
    rows = g.guard.infer(engine, batch)
    assert engine.calls == [4, 2, 1, 1, 2]
    assert g.ooms == [4, 2, 1]
    assert isinstance(rows[1], InsufficientMemory) and rows[1].status_code == 507
    assert "ran out of memory for this image even in a batch of its own" in rows[1].message
    assert "CUDA out of memory" in rows[1].message and rows[1].headers() == {"Retry-After": "1"}
    for i in (0, 2, 3):
        np.testing.assert_allclose(rows[i], reference[i], rtol=1e-4, atol=1e-4)
    assert g.guard.cap.value == 2


def test_nothing_fits_every_image_fails_alone_and_the_cap_is_one(engine, alone) -> None:
    images, _ = alone
    g = _reset(engine, fits=0)
    rows = g.guard.infer(engine, list(images[:2]))
    assert all(isinstance(r, InsufficientMemory) for r in rows)
    assert g.guard.cap.value == 1


def test_a_batch_that_fits_runs_once_and_lets_the_cap_recover(engine, alone) -> None:
    images, reference = alone
    g = _reset(engine, fits=8)
    g.guard.cap.lower(2)
    rows = g.guard.infer(engine, list(images[:2]))
    assert engine.calls == [2] and not g.ooms
    np.testing.assert_allclose(np.stack(rows), reference[:2], rtol=1e-4, atol=1e-4)
    assert g.guard.cap.value == 2
    g.clock.now += 60
    g.guard.infer(engine, list(images[:2]))
    assert g.guard.cap.value == 3


def test_a_broken_context_latches_and_no_later_batch_touches_the_device(engine, alone) -> None:
    images, _ = alone
    g = _reset(engine, fits=100)
    engine.broken = True
    with pytest.raises(EngineBroken, match=r"inference device is unusable .*illegal memory access") as info:
        g.guard.infer(engine, list(images[:4]))
    assert info.value.status_code == 503 and info.value.headers() == {"Retry-After": "1"}
    assert isinstance(info.value.__cause__, torch.AcceleratorError)
    assert g.guard.broken == "cpu: CUDA error: an illegal memory access was encountered"
    engine.broken = False  # even if the device answered again, the process must restart
    with pytest.raises(EngineBroken):
        g.guard.infer(engine, list(images[:1]))
    assert engine.calls == [4] and g.broken == [g.guard.broken]


def test_a_broken_context_while_splitting_latches_too(engine, alone) -> None:
    images, _ = alone
    g = _reset(engine, fits=1)
    engine.break_at_call = 2  # the batch of 4 runs out of memory, its first half breaks the context
    with pytest.raises(EngineBroken):
        g.guard.infer(engine, list(images[:4]))
    assert engine.calls == [4, 2] and len(g.broken) == 1 and g.guard.broken is not None


def test_other_engine_errors_pass_through_unchanged(engine) -> None:
    g = _reset(engine, fits=100)
    with pytest.raises(ValueError, match=r"uint8 batch must be \[N,224,224,3\]"):
        g.guard.infer(engine, [np.zeros((10, 10, 3), np.uint8)])
    assert not g.ooms and g.guard.broken is None and g.guard.cap.value == 32
