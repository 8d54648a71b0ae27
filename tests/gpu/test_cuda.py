"""On a CUDA device: the GPU path keeps the answers, is what ``auto`` picks, and serves for real.

Every test here is marked ``gpu``; without a CUDA device they are deselected (tests/conftest.py says
how many in the terminal summary). Run them on a GPU machine with ``pytest -m gpu tests/gpu`` (or
``bash bench/gpu_suite.sh``, which also benchmarks).

In the order they run (``bench/gpu_suite.sh`` has a hard time budget: the most valuable first):

* A real server process with ``device=auto`` classifies the cat photo on the GPU over ``/classify``
  and v2 binary, and its ``/metrics`` carries the DCGM-named GPU gauges with this GPU's numbers.
* nvJPEG: batched device decode matches the CPU path, good photos never fall back to the CPU, and a
  server with ``jpeg_decode=device`` answers on the GPU.
* ``choose`` with default settings picks torch fp16 on cuda.
* torch fp16 on CUDA against transformers' fp32 eager forward pass on the CPU: top-1 identical on the
  five real-object photos and >= 95 % top-1 agreement on the varied set (the rule
  ``tests/engine/test_backends.py`` holds bf16 to); ``torch.compile`` buckets with CUDA graphs the
  same (marked ``compile``: its own stage of the suite, compilations take minutes).
* Batch sizes of every bucket and between buckets return their rows in input order.
* ONNX Runtime on CUDA: runs and keeps the answers where ``CUDAExecutionProvider`` loads; elsewhere
  (the CPU-only ``onnxruntime`` wheel) loading fails at once, before any export, saying what to install.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from predictor.engine.onnx_engine import OnnxRuntimeEngine
from predictor.engine.torch_engine import TorchEngine
from predictor.preprocess import PreprocessSpec
from tests.support.references import PHOTO_NAMES
from tests.support.servers import ServerProcess, jpeg_bytes, start_server
from tests.support.v2 import CAT_CLASSES, decode_v2_binary, v2_binary_request

pytestmark = pytest.mark.gpu

MIN_AGREEMENT = 0.95
COMPILE_MAX_BATCH = 8
"""Compiled buckets 1, 2, 4, 8: the photos (5) and the varied set (chunks of 8) compile one bucket."""


@pytest.fixture(scope="module")
def fp16_engine(default_model_dir: Path, lite0_spec: PreprocessSpec) -> Iterator[TorchEngine]:
    engine = TorchEngine(lite0_spec, default_model_dir, "cuda", "fp16", max_batch_size=128)
    engine.load()
    yield engine
    engine.close()


def _in_chunks(engine, batch: np.ndarray, chunk: int) -> np.ndarray:
    return np.concatenate([engine.infer(batch[i : i + chunk]) for i in range(0, len(batch), chunk)])


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


def _assert_keeps_answers(name: str, photos: np.ndarray, photo_ref: np.ndarray, varied: np.ndarray, varied_ref):
    mismatched = [n for n, a, b in zip(PHOTO_NAMES, photos.argmax(1), photo_ref.argmax(1), strict=True) if a != b]
    agree = _agreement(varied, varied_ref)
    print(f"\n{name} vs fp32 eager: photos {len(PHOTO_NAMES) - len(mismatched)}/{len(PHOTO_NAMES)}, varied {agree:.1%}")
    assert not mismatched, f"{name} changed the top-1 of {mismatched}"
    assert agree >= MIN_AGREEMENT, f"{name}: top-1 agreement {agree:.1%} on the varied set"


@pytest.fixture(scope="module")
def gpu_server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    server = start_server(default_model_dir, tmp_path_factory.mktemp("gpu-server"), device="auto")
    yield server
    server.stop()


def test_server_classifies_on_the_gpu(gpu_server: ServerProcess, photos: dict[str, np.ndarray]) -> None:
    # auto serves fp16 only if the precision check says it keeps the answers, decided before ready: the
    # server answered ready (start_server), so the decision is in the log already and never changes
    log = gpu_server.log()
    kept = "serving torch fp16 on cuda" in log and "fp16 keeps the answers" in log
    assert kept or "fp16 changes the answers" in log, log[-3000:]  # and conclusive
    dtype = "float16" if kept else "float32"
    assert gpu_server.metric("classifier_model_info", device="cuda", dtype=dtype, backend="torch") == 1, (
        gpu_server.log()[-3000:]
    )
    cat = jpeg_bytes(photos["chelsea"])
    r = gpu_server.client.post("/classify", files={"image": ("cat.jpg", cat, "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0][0]["label"] in CAT_CLASSES, r.json()
    body, headers = v2_binary_request([cat, jpeg_bytes(photos["coffee"])], binary_outputs=True, top_k=3)
    r = gpu_server.client.post(f"/v2/models/{gpu_server.model_name}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    out = decode_v2_binary(r.content, int(r.headers["inference-header-content-length"]))
    assert out["label"][0] in CAT_CLASSES and out["label"][3] == "espresso", out["label"]


def test_server_exports_dcgm_gpu_metrics(gpu_server: ServerProcess, photos: dict[str, np.ndarray]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from predictor.gpu_metrics import FB_FREE, FB_USED, MIB, UTIL

    gpu_server.assert_healthy(jpeg_bytes(photos["chelsea"]))
    samples = {
        s.name: s
        for fam in text_string_to_metric_families(gpu_server.metrics())
        for s in fam.samples
        if s.name in (UTIL, FB_USED, FB_FREE) and s.labels.get("gpu") == "0"
    }
    assert set(samples) == {UTIL, FB_USED, FB_FREE}, gpu_server.metrics()[-3000:]
    labels = samples[FB_USED].labels
    assert labels["device"] == "nvidia0" and labels["UUID"].startswith("GPU-"), labels
    assert labels["modelName"] and labels["container"] == "kserve-container", labels
    total_mib = torch.cuda.get_device_properties(0).total_memory / MIB
    used, free = samples[FB_USED].value, samples[FB_FREE].value
    assert used > 100, used  # the served model and its CUDA context live there
    assert 0.9 * total_mib <= used + free <= 1.1 * total_mib, (used, free, total_mib)
    assert 0 <= samples[UTIL].value <= 100


def test_device_jpeg_decode_on_cuda(photo_jpegs: dict[str, bytes], lite0_spec: PreprocessSpec) -> None:
    """nvJPEG decode + resize on the GPU: the CPU device's pixels (within rounding), a bad JPEG fails alone."""
    import io

    from PIL import Image

    from predictor.engine.torch_decode import DeviceJpegDecoder
    from predictor.errors import InvalidInput
    from predictor.preprocess import EncodedJpeg, inspect_jpeg

    max_pixels = 40_000_000
    bad = photo_jpegs["rocket"][: len(photo_jpegs["rocket"]) // 3]
    assert inspect_jpeg(bad, max_pixels) is None  # no EOI: never sent to nvJPEG
    w, h = Image.open(io.BytesIO(bad)).size
    items = [inspect_jpeg(photo_jpegs[n], max_pixels) for n in PHOTO_NAMES] + [EncodedJpeg(bad, w, h, 1, max_pixels)]
    fallbacks: list[str] = []
    on_gpu = DeviceJpegDecoder(lite0_spec, torch.device("cuda"), fallbacks.append).decode(items)
    on_cpu = DeviceJpegDecoder(lite0_spec, torch.device("cpu")).decode(items)
    # only the corrupt one left the GPU (nvJPEG refused it, or returned other dimensions), never a good photo
    assert len(fallbacks) <= 1, fallbacks
    for name, g, c in zip(PHOTO_NAMES, on_gpu, on_cpu, strict=False):
        assert isinstance(g, torch.Tensor) and g.device.type == "cuda" and g.dtype == torch.uint8, name
        diff = (g.cpu().int() - c.int()).abs()
        assert diff.float().mean() < 1.0 and diff.max() <= 24, (name, diff.float().mean(), diff.max())
    assert isinstance(on_gpu[-1], InvalidInput), on_gpu[-1]


def test_server_with_device_jpeg_decode_on_the_gpu(
    default_model_dir: Path, tmp_path: Path, photos: dict[str, np.ndarray]
) -> None:
    server = start_server(default_model_dir, tmp_path, device="cuda", backend="torch", jpeg_decode="device")
    try:
        cat = jpeg_bytes(photos["chelsea"])
        r = server.client.post("/classify", files={"image": ("cat.jpg", cat, "image/jpeg")})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0][0]["label"] in CAT_CLASSES, r.json()
        bad = cat[: len(cat) // 3]
        r = server.client.post("/classify", files=[("image", ("a.jpg", cat)), ("image", ("b.jpg", bad))])
        assert r.status_code == 400 and "image 1:" in r.json()["error"], r.text
        server.assert_healthy(cat)
        assert server.metric("classifier_model_info", device="cuda", backend="torch") == 1, server.metrics()[-2000:]
        # the good photos were decoded by nvJPEG, not sent to the CPU decoder
        assert server.metric("classifier_jpeg_device_fallbacks_total") == 0, server.log()[-2000:]
    finally:
        server.stop()


def test_auto_choice_is_torch_fp16_on_cuda() -> None:
    from predictor.config import Settings
    from predictor.engine import choose

    choice = choose(Settings())
    assert (choice.device, choice.backend, choice.precision, choice.verify_against) == (
        "cuda",
        "torch",
        "fp16",
        "fp32",
    ), choice


def test_torch_fp16_keeps_the_answers(
    fp16_engine: TorchEngine,
    photo_batch: np.ndarray,
    photo_reference: np.ndarray,
    varied_batch: np.ndarray,
    varied_reference: np.ndarray,
    lite0_spec: PreprocessSpec,
) -> None:
    info = fp16_engine.info
    assert (info.backend, info.device, info.dtype) == ("torch", "cuda", "float16"), info
    photos = fp16_engine.infer(photo_batch)
    assert photos.dtype == np.float32 and photos.shape == photo_reference.shape
    _assert_keeps_answers(
        "torch fp16 cuda", photos, photo_reference, _in_chunks(fp16_engine, varied_batch, 32), varied_reference
    )
    # the already-normalised float32 input path gives the same answers
    floats = fp16_engine.infer(lite0_spec.normalize(photo_batch))
    assert list(floats.argmax(1)) == list(photos.argmax(1))
    assert float(np.abs(floats - photos).max()) < 0.1


@pytest.mark.compile
def test_torch_fp16_compiled_buckets_keep_the_answers(
    default_model_dir: Path,
    lite0_spec: PreprocessSpec,
    photo_batch: np.ndarray,
    photo_reference: np.ndarray,
    varied_batch: np.ndarray,
    varied_reference: np.ndarray,
) -> None:
    engine = TorchEngine(lite0_spec, default_model_dir, "cuda", "fp16", compile=True, max_batch_size=COMPILE_MAX_BATCH)
    assert engine.buckets == [1, 2, 4, 8]
    engine.load()
    t0 = time.perf_counter()
    engine.warmup([COMPILE_MAX_BATCH])
    print(f"\ncompiled bucket {COMPILE_MAX_BATCH} in {time.perf_counter() - t0:.1f}s")
    assert engine.info.backend == "torch-compile"
    photos = engine.infer(photo_batch)  # 5 rows padded to the bucket of 8, trimmed back to 5
    assert photos.shape == photo_reference.shape
    first = photos.copy()
    varied = _in_chunks(engine, varied_batch, COMPILE_MAX_BATCH)
    _assert_keeps_answers("torch fp16 cuda compiled", photos, photo_reference, varied, varied_reference)
    # CUDA-graph replays reuse their output buffers: results handed out earlier must not change, and the
    # same input must give the same answer after other batches went through the graph
    np.testing.assert_array_equal(photos, first)
    np.testing.assert_allclose(engine.infer(photo_batch), first, rtol=1e-3, atol=1e-3)
    engine.close()


BATCH_SIZES = (1, 2, 3, 7, 8, 31, 32, 65, 100, 128)
"""Buckets and sizes between them: each pads to a bucket, so no new shape reaches cuDNN after warm-up."""


def test_batch_sizes_keep_input_order(fp16_engine: TorchEngine, varied_batch: np.ndarray) -> None:
    _, first = np.unique(varied_batch.reshape(len(varied_batch), -1), axis=0, return_index=True)
    batch = varied_batch[np.sort(first)[:128]]  # distinct images only (skimage's cat is chelsea, ...)
    full = fp16_engine.infer(batch)
    assert full.shape[0] == 128
    assert len(set(full.argmax(axis=1))) > 30  # rows differ, so a mix-up would show
    assert fp16_engine.buckets == [1, 2, 4, 8, 16, 32, 64, 128]  # eager CUDA pads too
    for n in BATCH_SIZES:
        out = fp16_engine.infer(batch[:n])
        assert out.shape == (n, full.shape[1]), n
        # each row is closest to its own row of the full batch (cuDNN picks other kernels per size, so
        # fp16 logits differ in the last bits, never by as much as two different images do)
        ref = full[:n]
        dist = (out**2).sum(1)[:, None] - 2 * out @ ref.T + (ref**2).sum(1)[None, :]
        assert list(dist.argmin(axis=1)) == list(range(n)), f"batch {n}: rows out of order"
        assert float(np.abs(out - ref).max()) < 0.5, f"batch {n}"


def test_onnxruntime_on_cuda(
    default_model_dir: Path,
    lite0_spec: PreprocessSpec,
    tmp_path: Path,
    photo_batch: np.ndarray,
    photo_reference: np.ndarray,
) -> None:
    """Runs and keeps the photos' answers with ``onnxruntime-gpu``; with the CPU-only wheel it fails at
    load with an error naming the missing provider (``choose`` does not check providers)."""
    import onnxruntime as ort

    from predictor.config import Settings
    from predictor.engine import choose

    choice = choose(Settings(backend="onnxruntime"))
    assert (choice.backend, choice.device, choice.precision) == ("onnxruntime", "cuda", "fp32"), choice
    providers = ort.get_available_providers()
    print(f"\nonnxruntime {ort.__version__} providers: {providers}")
    if "CUDAExecutionProvider" not in providers:
        engine = OnnxRuntimeEngine(lite0_spec, default_model_dir, tmp_path, "cuda", "fp32")
        with pytest.raises(ValueError, match=r"CUDAExecutionProvider.*onnxruntime-gpu"):
            engine.load()
        assert not any(tmp_path.iterdir()), "the provider check comes before the (slow) export"
        return
    for precision in ("fp32", "fp16"):
        engine = OnnxRuntimeEngine(lite0_spec, default_model_dir, tmp_path, "cuda", precision)
        engine.load()
        assert engine._session("uint8").get_providers()[0] == "CUDAExecutionProvider"
        out = engine.infer(photo_batch)
        assert list(out.argmax(1)) == list(photo_reference.argmax(1)), precision
        if precision == "fp32":
            np.testing.assert_allclose(out, photo_reference, rtol=1e-2, atol=2e-2)
        engine.close()
