"""JPEG decoding through simplejpeg (libjpeg-turbo) agrees with the PIL path it replaced, on real photos.

The reference is the PIL path as it was: ``Image.open``, ``draft`` at ``DRAFT_MARGIN`` x the resize
target, ``ImageOps.exif_transpose``, RGB, :func:`prepare_pil`. Both decoders are libjpeg-turbo with the
accurate DCT and upsampling, so they agree within a grey level or two.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from predictor.errors import InvalidInput
from predictor.preprocess import (
    DRAFT_MARGIN,
    PreprocessSpec,
    _decode_jpeg_turbo,
    decode_image,
    prepare_array,
    prepare_pil,
)

# The reference path hands PIL's read-only buffers to torch (only read), as prepare_pil always has.
pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
MAX_PIXELS = 10**9
TOL = 2  # grey levels, max abs diff
# 224 crop after a 256 shortest-edge resize (ResNet/EfficientNet style): 1/2 from 1024 px, 1/4 from 2048.
SPEC_224 = PreprocessSpec(crop_hw=(224, 224), resize_shortest_edge=256)
# A small target: 1/2, 1/4 and 1/8 scaling from ordinary photo sizes (1/8 from 576 px).
SPEC_SMALL = PreprocessSpec(crop_hw=(32, 32), resize_shortest_edge=36)
# Fixed-size, non-square squash (aspect not kept): a wrong transpose cannot hide behind a square crop.
SPEC_SQUASH = PreprocessSpec(crop_hw=(40, 64), resize_shortest_edge=None)


@pytest.fixture(scope="module", autouse=True)
def _big_progressive_buffers():
    # PIL's encoder needs a larger block buffer for big progressive JPEGs.
    old, ImageFile.MAXBLOCK = ImageFile.MAXBLOCK, 2**24
    yield
    ImageFile.MAXBLOCK = old


def encode(arr: np.ndarray, size: tuple[int, int] | None = None, mode: str = "RGB", **save: object) -> bytes:
    """A JPEG of ``arr`` (resized to (width, height), converted to ``mode``), saved with ``save`` options."""
    img = Image.fromarray(arr)
    if size is not None:
        img = img.resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    img.convert(mode).save(buf, format="JPEG", **{"quality": 90, **save})
    return buf.getvalue()


def pil_path(data: bytes, spec: PreprocessSpec) -> np.ndarray:
    """The PIL decode path (the reference, and today's fallback)."""
    img = Image.open(io.BytesIO(data))
    rw, rh = spec.resized_size(*img.size)
    img.draft("RGB", (DRAFT_MARGIN * rw, DRAFT_MARGIN * rh))
    return prepare_pil(ImageOps.exif_transpose(img).convert("RGB"), spec)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def check_output(out: np.ndarray, spec: PreprocessSpec) -> None:
    assert out.shape == (*spec.crop_hw, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous


@pytest.mark.parametrize(
    ("photo", "size", "save"),
    [
        ("chelsea", None, {}),  # 451x300, 4:2:0 (PIL's default)
        ("coffee", (640, 480), {"subsampling": 0}),  # 4:4:4
        ("astronaut", (641, 479), {"progressive": True}),
        ("rocket", (1920, 1080), {"subsampling": 1}),  # 4:2:2
        ("motorcycle", (1920, 1080), {"progressive": True, "subsampling": 0}),
        ("chelsea", (4000, 3000), {"quality": 80}),
        ("coffee", (333, 777), {}),  # odd sizes, portrait
        ("astronaut", (1001, 999), {"subsampling": 0, "progressive": True}),
    ],
)
@pytest.mark.parametrize("spec", [SPEC_224, SPEC_SMALL, SPEC_SQUASH], ids=["224", "small", "squash"])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_decode_matches_pil_path(photos, photo, size, save, spec, mode):
    data = encode(photos[photo], size, mode=mode, **save)
    out = decode_image(data, spec, MAX_PIXELS)
    check_output(out, spec)
    assert max_diff(out, pil_path(data, spec)) <= TOL


@pytest.mark.parametrize(
    "size", [(640, 480), (641, 479), (1920, 1080), (4000, 3000), (300, 200), (333, 777), (17, 9), (2049, 1537)]
)
@pytest.mark.parametrize("progressive", [False, True])
def test_scaled_decode_is_pil_draft(photos, size, progressive):
    """Every DCT scale (1, 1/2, 1/4, 1/8) gives PIL draft's output size and, within a grey level, its pixels."""
    data = encode(photos["coffee"], size, progressive=progressive)
    w, h = size
    for scale in (1, 2, 4, 8):
        request = (max(1, w // scale), max(1, h // scale))
        ours = _decode_jpeg_turbo(data, Image.open(io.BytesIO(data)), request)
        ref = Image.open(io.BytesIO(data))
        ref.draft("RGB", request)
        ref_arr = np.asarray(ref.convert("RGB"))
        assert ours is not None
        assert ours.shape == ref_arr.shape == (-(-h // scale), -(-w // scale), 3), (size, scale)
        assert max_diff(ours, ref_arr) <= 1, (size, scale)


def _with_orientation(data: bytes, orientation: int) -> bytes:
    img = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "test camera"
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("spec", [SPEC_224, SPEC_SMALL, SPEC_SQUASH], ids=["224", "small", "squash"])
def test_exif_orientation_matches_exif_transpose(photos, orientation, spec):
    data = _with_orientation(encode(photos["rocket"], (700, 420)), orientation)  # landscape, not square
    out = decode_image(data, spec, MAX_PIXELS)
    check_output(out, spec)
    assert max_diff(out, pil_path(data, spec)) <= TOL
    # And at full resolution: the array op is exactly the PIL transpose of the same pixels.
    img = Image.open(io.BytesIO(data))
    full = _decode_jpeg_turbo(data, img, img.size)  # no DCT scaling
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert full is not None and full.shape == ref.shape
    assert max_diff(full, ref) <= 1
    if orientation != 1:
        upright = decode_image(_with_orientation(data, 1), SPEC_SQUASH, MAX_PIXELS)
        assert max_diff(decode_image(data, SPEC_SQUASH, MAX_PIXELS), upright) > 20  # it did turn


def test_xmp_orientation_is_applied_as_pil_does(photos):
    base = encode(photos["chelsea"])
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    buf = io.BytesIO()
    Image.open(io.BytesIO(base)).save(buf, format="JPEG", quality=95, xmp=xmp)
    data = buf.getvalue()
    info = Image.open(io.BytesIO(data)).info
    assert "xmp" in info and "exif" not in info  # pyproject requires a Pillow that writes XMP (>= 11)
    out = decode_image(data, SPEC_SQUASH, MAX_PIXELS)
    assert max_diff(out, pil_path(data, SPEC_SQUASH)) <= TOL
    assert max_diff(out, decode_image(base, SPEC_SQUASH, MAX_PIXELS)) > 20


def test_cmyk_jpeg_decodes_through_pil(photos):
    data = encode(photos["coffee"], mode="CMYK")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert _decode_jpeg_turbo(data, Image.open(io.BytesIO(data)), (1, 1)) is None  # PIL converts CMYK
    for spec in (SPEC_224, SPEC_SMALL):
        out = decode_image(data, spec, MAX_PIXELS)
        check_output(out, spec)
        np.testing.assert_array_equal(out, pil_path(data, spec))
        # Right colours, not just PIL's: close to the same photo sent as RGB.
        rgb = decode_image(encode(photos["coffee"]), spec, MAX_PIXELS)
        assert np.abs(out.astype(np.int16) - rgb).mean() < 3


@pytest.fixture(scope="module")
def cat(photos) -> bytes:
    return encode(photos["chelsea"], (640, 480))


@pytest.mark.parametrize("cut", [2000, 0.5, -2], ids=["2000-bytes", "half", "no-EOI"])
def test_truncated_jpeg_is_invalid_input(cat, cut):
    data = cat[:cut] if isinstance(cut, int) else cat[: int(len(cat) * cut)]
    with pytest.raises(InvalidInput, match="corrupt or truncated"):
        decode_image(data, SPEC_224, MAX_PIXELS)


def test_truncated_header_is_invalid_input(cat):
    with pytest.raises(InvalidInput, match="corrupt or truncated"):
        decode_image(cat[:300], SPEC_224, MAX_PIXELS)


def test_corrupt_scan_is_invalid_input(cat):
    data = bytearray(cat)
    data[len(data) // 2 : len(data) // 2 + 50] = b"\xff" * 50  # a run of bogus markers in the scan
    with pytest.raises(InvalidInput, match="corrupt or truncated"):
        decode_image(bytes(data), SPEC_224, MAX_PIXELS)


def test_damage_pil_tolerates_still_decodes_as_pil_does(cat):
    """libjpeg warnings (flipped bits in the scan, an early EOI): simplejpeg refuses, PIL decodes as before."""
    flipped = bytearray(cat)
    for i in np.random.default_rng(1).integers(1000, len(cat) - 10, 40):
        flipped[i] ^= 0x5A
    early_eoi = bytearray(cat)
    early_eoi[len(cat) // 2 : len(cat) // 2 + 2] = b"\xff\xd9"
    for data in (bytes(flipped), bytes(early_eoi)):
        assert _decode_jpeg_turbo(data, Image.open(io.BytesIO(data)), (448, 448)) is None
        np.testing.assert_array_equal(decode_image(data, SPEC_224, MAX_PIXELS), pil_path(data, SPEC_224))


def test_non_jpeg_formats_unchanged(photos):
    for fmt in ("PNG", "WEBP", "BMP"):
        buf = io.BytesIO()
        Image.fromarray(photos["astronaut"]).save(buf, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        out = decode_image(buf.getvalue(), SPEC_224, MAX_PIXELS)
        check_output(out, SPEC_224)
        np.testing.assert_array_equal(out, prepare_pil(Image.fromarray(photos["astronaut"]), SPEC_224))


def pillow_reference(arr: np.ndarray, shortest: int, crop: int, resample: int) -> np.ndarray:
    """Independent of our code: Pillow's own resize (shortest edge, ``int`` of the scaled long edge, as
    transformers' ``get_resize_output_image_size``) and torchvision ``CenterCrop``'s rounding of the origin."""
    img = Image.fromarray(arr)
    w, h = img.size
    size = (shortest, int(shortest * h / w)) if w <= h else (int(shortest * w / h), shortest)
    img = img.resize(size, resample=resample)
    left, top = round((size[0] - crop) / 2.0), round((size[1] - crop) / 2.0)
    return np.asarray(img.crop((left, top, left + crop, top + crop)))


@pytest.mark.parametrize("resample", [0, 1, 2, 3, 4, 5])
def test_array_entry_equals_pillows_resize_and_crop(photos, resample):
    """Nearest, bilinear and bicubic run torchvision's uint8 kernels (ported from Pillow's): within a grey
    level or two of Pillow; box, lanczos and hamming run Pillow itself: equal."""
    spec = PreprocessSpec(crop_hw=(224, 224), resize_shortest_edge=256, resample=resample)
    for name in ("motorcycle", "chelsea"):  # landscape 2960 px and 451 px wide: down by 11x and 1.2x
        arr = photos[name]
        out = prepare_array(arr, spec)
        check_output(out, spec)
        ref = pillow_reference(arr, 256, 224, resample)
        diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
        if resample in (1, 4, 5):
            assert int(diff.max()) == 0, (name, resample)
        else:
            assert int(diff.max()) <= 2 and float(diff.mean()) < 0.2, (name, resample, diff.max(), diff.mean())
    # Strided views (what the EXIF ops produce) give the same as their contiguous copies.
    view = arr[::-1, ::-1].transpose(1, 0, 2)
    np.testing.assert_array_equal(prepare_array(view, spec), prepare_array(np.ascontiguousarray(view), spec))
