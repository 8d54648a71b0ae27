"""``jpeg_decode=device``: batched JPEG decoding on the engine's device (here the CPU device; nvJPEG on a GPU
runs the same code with ``device="cuda"``, see tests/gpu)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from predictor.config import Settings
from predictor.engine.torch_decode import DeviceJpegDecoder
from predictor.errors import InvalidInput
from predictor.pipeline import Pipeline
from predictor.preprocess import EncodedJpeg, PreprocessSpec, decode_image, inspect_jpeg, prepare_pil
from tests.support.references import MAX_PIXELS, PHOTO_NAMES
from tests.support.servers import ServerProcess, jpeg_bytes, start_server

CPU = torch.device("cpu")
CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


def _full_decode_reference(data: bytes, spec: PreprocessSpec) -> np.ndarray:
    """PIL full-size decode, EXIF orientation, then our resize/crop: what the device path must equal."""
    return prepare_pil(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"), spec)


def _with_orientation(data: bytes, orientation: int) -> bytes:
    img = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 3]


@pytest.mark.parametrize("size", [(224, 224), (640, 480), (1601, 1067)])
def test_device_path_equals_a_full_size_decode(photos: dict[str, np.ndarray], lite0_spec: PreprocessSpec, size):
    datas = [jpeg_bytes(np.asarray(Image.fromarray(photos[n]).resize(size)), quality=90) for n in PHOTO_NAMES]
    items = [inspect_jpeg(d, MAX_PIXELS) for d in datas]
    out = DeviceJpegDecoder(lite0_spec, CPU).decode(items)
    for name, data, px in zip(PHOTO_NAMES, datas, out, strict=True):
        assert isinstance(px, torch.Tensor) and px.dtype == torch.uint8 and tuple(px.shape) == (224, 224, 3)
        diff = np.abs(px.numpy().astype(int) - _full_decode_reference(data, lite0_spec).astype(int)).max()
        assert diff <= 2, (name, size, diff)


def test_orientations_and_greyscale(photos: dict[str, np.ndarray], lite0_spec: PreprocessSpec):
    base = jpeg_bytes(np.asarray(Image.fromarray(photos["astronaut"]).resize((400, 300))), quality=92)
    datas = [_with_orientation(base, o) for o in range(1, 9)]
    grey = io.BytesIO()
    Image.fromarray(photos["coffee"]).convert("L").save(grey, format="JPEG", quality=90)
    datas.append(grey.getvalue())
    items = [inspect_jpeg(d, MAX_PIXELS) for d in datas]
    assert [it.orientation for it in items] == [*range(1, 9), 1]
    out = DeviceJpegDecoder(lite0_spec, CPU).decode(items)
    for i, (data, px) in enumerate(zip(datas, out, strict=True)):
        ref = _full_decode_reference(data, lite0_spec)
        assert np.abs(px.numpy().astype(int) - ref.astype(int)).max() <= 2, f"item {i}"
    upright = out[0].numpy().astype(int)
    assert all(np.abs(out[i].numpy().astype(int) - upright).max() > 20 for i in range(1, 8))  # each one turned


def test_a_truncated_jpeg_never_reaches_the_device_decoder(photo_jpegs: dict[str, bytes], lite0_spec: PreprocessSpec):
    """A hardware decoder checks only the header and may return partial pixels of a truncated file without
    an error (torchvision's CPU decoder does too, once EOI is appended): no EOI marker, no device decode."""
    bad = _truncated(photo_jpegs["rocket"])
    assert inspect_jpeg(bad, MAX_PIXELS) is None
    assert inspect_jpeg(photo_jpegs["rocket"] + b"\x00" * 16, MAX_PIXELS) is not None  # NUL padding after EOI
    assert inspect_jpeg(photo_jpegs["rocket"] + b"trailer", MAX_PIXELS) is None  # trailing data: CPU path decides
    assert decode_image(photo_jpegs["rocket"] + b"trailer", lite0_spec, MAX_PIXELS).shape == (*lite0_spec.crop_hw, 3)


def test_a_jpeg_the_device_refuses_fails_alone_with_the_cpu_paths_error_and_is_counted(
    photo_jpegs: dict[str, bytes], lite0_spec: PreprocessSpec
):
    bad = _truncated(photo_jpegs["rocket"])
    w, h = Image.open(io.BytesIO(bad)).size
    refused = EncodedJpeg(bad, w, h, 1, MAX_PIXELS)  # what a decoder gets if a corrupt file passed the header checks
    fallbacks: list[str] = []
    good, err = DeviceJpegDecoder(lite0_spec, CPU, fallbacks.append).decode(
        [inspect_jpeg(photo_jpegs["chelsea"], MAX_PIXELS), refused]
    )
    assert isinstance(good, torch.Tensor)
    assert isinstance(err, InvalidInput) and "corrupt or truncated" in err.message
    assert fallbacks == ["device_error"]
    with pytest.raises(InvalidInput) as cpu_err:
        decode_image(bad, lite0_spec, MAX_PIXELS)
    assert err.message == cpu_err.value.message


def test_good_photos_never_take_the_cpu_fallback(photo_jpegs: dict[str, bytes], lite0_spec: PreprocessSpec):
    fallbacks: list[str] = []
    items = [inspect_jpeg(photo_jpegs[n], MAX_PIXELS) for n in PHOTO_NAMES]
    out = DeviceJpegDecoder(lite0_spec, CPU, fallbacks.append).decode(items)
    assert all(isinstance(o, torch.Tensor) for o in out)
    assert fallbacks == []


def test_inspect_leaves_other_formats_and_refuses_what_decode_refuses(photos: dict[str, np.ndarray]):
    png = io.BytesIO()
    Image.fromarray(photos["coffee"]).save(png, format="PNG")
    assert inspect_jpeg(png.getvalue(), MAX_PIXELS) is None
    cmyk = io.BytesIO()
    Image.fromarray(photos["coffee"]).convert("CMYK").save(cmyk, format="JPEG")
    assert inspect_jpeg(cmyk.getvalue(), MAX_PIXELS) is None
    jpeg = jpeg_bytes(photos["coffee"])
    assert isinstance(inspect_jpeg(jpeg, MAX_PIXELS), EncodedJpeg)
    for data, words in [(b"", "empty"), (b"garbage", "not a decodable image"), (jpeg, "over the limit")]:
        with pytest.raises(InvalidInput, match=words):
            inspect_jpeg(data, 1000 if data is jpeg else MAX_PIXELS)


@pytest.fixture
async def device_pipeline(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A pipeline with jpeg_decode=device on the torch CPU engine, bound to this test's event loop."""
    settings = Settings(
        model_dir=default_model_dir,
        backend="torch",
        device="cpu",
        precision="fp32",
        jpeg_decode="device",
        max_batch_delay_ms=50,
        cache_dir=tmp_path_factory.mktemp("device-decode"),
    )
    pipeline = Pipeline(settings)
    pipeline.load()
    await pipeline.start()
    yield pipeline
    await pipeline.close()


async def test_pipeline_classifies_device_decoded_jpegs_with_other_inputs_in_one_batch(
    device_pipeline: Pipeline, photo_jpegs: dict[str, bytes], photos: dict[str, np.ndarray], lite0_spec
):
    png = io.BytesIO()
    Image.fromarray(photos["chelsea"]).save(png, format="PNG")
    fp32 = lite0_spec.normalize(decode_image(photo_jpegs["coffee"], lite0_spec, MAX_PIXELS)[None])[0]
    inputs = [photo_jpegs["chelsea"], png.getvalue(), fp32, photos["coffee"], photo_jpegs["coffee"]]

    labels = [r[0].label for r in await device_pipeline.classify(inputs, top_k=1)]
    assert labels[0] in CAT_CLASSES and labels[1] in CAT_CLASSES, labels
    assert labels[2:] == ["espresso"] * 3, labels


async def test_pipeline_bad_device_jpeg_fails_its_image_only(device_pipeline: Pipeline, photo_jpegs: dict[str, bytes]):
    inputs = [photo_jpegs["chelsea"], _truncated(photo_jpegs["rocket"]), photo_jpegs["coffee"]]

    each = await device_pipeline.classify_each(inputs, top_k=1)
    with pytest.raises(InvalidInput) as raised:
        await device_pipeline.classify(inputs, top_k=1)
    whole = raised.value
    assert each[0][0].label in CAT_CLASSES and each[2][0].label == "espresso"
    assert isinstance(each[1], InvalidInput) and "corrupt or truncated" in each[1].message
    assert whole.message.startswith("image 1: image data is corrupt or truncated")
    assert device_pipeline.queue_depth == 0
    # the truncated JPEG failed the EOI check and was refused by the CPU decoder: no device fallback
    assert _fallbacks(device_pipeline) == 0


def _fallbacks(pipeline: Pipeline) -> float:
    return sum(
        s.value
        for m in pipeline.metrics.jpeg_device_fallbacks.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )


async def test_pipeline_counts_device_fallbacks(device_pipeline: Pipeline, photo_jpegs: dict[str, bytes]):
    bad = _truncated(photo_jpegs["rocket"])
    w, h = Image.open(io.BytesIO(bad)).size
    before = _fallbacks(device_pipeline)
    assert before == 0, "the warm-up and good photos never fall back"
    out = await device_pipeline._batcher.submit(
        [EncodedJpeg(bad, w, h, 1, MAX_PIXELS)], deadline=1e12, return_exceptions=True
    )
    assert isinstance(out[0], InvalidInput)
    assert _fallbacks(device_pipeline) == 1


def test_device_decode_needs_the_torch_backend(tiny_model_dir: Path, tmp_path: Path):
    pipeline = Pipeline(Settings(model_dir=tiny_model_dir, jpeg_decode="device", device="cpu", cache_dir=tmp_path))
    with pytest.raises(ValueError, match=r"jpeg_decode=device .* set backend=torch"):
        pipeline.load()


def test_server_with_device_decode(default_model_dir: Path, tmp_path: Path, photo_jpegs: dict[str, bytes]):
    server: ServerProcess = start_server(
        default_model_dir, tmp_path, backend="torch", device="cpu", precision="fp32", jpeg_decode="device"
    )
    try:
        r = server.client.post("/classify", files={"image": ("cat.jpg", photo_jpegs["chelsea"])})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0][0]["label"] in CAT_CLASSES
        bad = _truncated(photo_jpegs["rocket"])
        r = server.client.post(
            "/classify", files=[("image", ("a.jpg", photo_jpegs["coffee"])), ("image", ("b.jpg", bad))]
        )
        assert r.status_code == 400 and "image 1: image data is corrupt" in r.json()["error"], r.text
        server.assert_healthy(photo_jpegs["chelsea"])
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_device_path_matches_auto_image_processor(
    default_model_dir: Path, photo_jpegs: dict[str, bytes], lite0_spec: PreprocessSpec, reference_model
):
    """The issue's agreement rule for the device path too: same top-1, softmax within 0.02."""
    from transformers import AutoImageProcessor

    from tests.support.references import reference_logits

    processor = AutoImageProcessor.from_pretrained(default_model_dir)
    pil = [Image.open(io.BytesIO(photo_jpegs[n])).convert("RGB") for n in PHOTO_NAMES]
    with torch.inference_mode():
        theirs = reference_model(pixel_values=processor(pil, return_tensors="pt")["pixel_values"]).logits
    items = [inspect_jpeg(photo_jpegs[n], MAX_PIXELS) for n in PHOTO_NAMES]
    batch = torch.stack(DeviceJpegDecoder(lite0_spec, CPU).decode(items)).numpy()
    ours = torch.from_numpy(reference_logits(reference_model, lite0_spec, batch))
    assert ours.argmax(1).tolist() == theirs.argmax(1).tolist()
    assert float((ours.softmax(1) - theirs.softmax(1)).abs().max()) < 0.02
