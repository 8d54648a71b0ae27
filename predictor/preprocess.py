"""Image preprocessing: decode, resize and crop in uint8, reproducing the model's own preprocessor.

:class:`PreprocessSpec` is read from the model directory's ``preprocessor_config.json`` (any Hugging
Face image processor with a shortest-edge or fixed-size resize, ConvNeXt's ``crop_pct`` rule, or the
timm wrapper's ``pretrained_cfg``). Decoding produces ``uint8 [H, W, 3]`` at the model's input size;
rescale and normalisation happen later, on the engine's device, on whole batches.

JPEGs are decoded with libjpeg-turbo through ``simplejpeg`` (straight to an RGB array, faster than PIL's
decode), at reduced size where the target is much smaller than the photo: DCT scaling by 1/2, 1/4
or 1/8, the same factor and output size PIL's ``draft`` picks (only these factors: libjpeg-turbo's other
M/8 scales are slower than a full decode), which is most of the decoding cost saved at no visible loss.
PIL still reads the header (format, pixel limit, decompression-bomb guard) and the EXIF orientation
(:mod:`predictor.orientation`), which is applied to the array. CMYK/YCCK JPEGs, and any JPEG
``simplejpeg`` refuses (it is strict: truncated or corrupt data, libjpeg warnings included), go through
the PIL path as before, so they decode, or fail with :class:`~predictor.errors.InvalidInput`, exactly as PIL decides.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from predictor.errors import InvalidInput
from predictor.orientation import NUMPY_HWC, pil_ops, read_orientation
from predictor.orientation import apply as orientation_apply

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
_ACCEPTED_TEXT = "JPEG, PNG, WebP, BMP or GIF"

# PIL resample codes as Hugging Face stores them (PILImageResampling) and timm's names.
_TIMM_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}
DRAFT_MARGIN = 2
"""JPEG DCT-scaled decoding stops at this multiple of the resize target (the resize filters the rest)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """How one model wants its input: resize, crop, rescale and normalise."""

    crop_hw: tuple[int, int]
    """Model input height and width."""
    resize_shortest_edge: int | None
    """Resize so the shorter side has this length (keeping aspect), then centre-crop ``crop_hw``;
    ``None`` means resize straight to ``crop_hw`` (aspect not kept, no crop)."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    rescale_factor: float = 1 / 255
    resample: int = 3

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> PreprocessSpec:
        """Read ``preprocessor_config.json`` (or the timm wrapper's ``config.json``)."""
        model_dir = Path(model_dir)
        pp_path = model_dir / "preprocessor_config.json"
        cfg = json.loads(pp_path.read_text()) if pp_path.exists() else {}
        model_cfg_path = model_dir / "config.json"
        model_cfg = json.loads(model_cfg_path.read_text()) if model_cfg_path.exists() else {}
        if cfg.get("image_processor_type", "").startswith("TimmWrapper") or (not cfg and "pretrained_cfg" in model_cfg):
            return cls._from_timm(cfg.get("pretrained_cfg") or model_cfg.get("pretrained_cfg") or {})
        if not cfg:
            raise FileNotFoundError(f"{pp_path} is missing: the model directory needs its preprocessor config")
        return cls._from_hf(cfg)

    @classmethod
    def _from_timm(cls, pcfg: dict) -> PreprocessSpec:
        _, h, w = pcfg.get("test_input_size") or pcfg.get("input_size") or (3, 224, 224)
        crop_pct = pcfg.get("test_crop_pct") or pcfg.get("crop_pct") or 0.875
        crop_mode = pcfg.get("crop_mode", "center")
        if crop_mode not in ("center", "squash"):
            raise ValueError(f"timm crop_mode {crop_mode!r} is not supported (center or squash)")
        if crop_mode == "squash":
            shortest = None
        else:
            shortest = math.floor(min(h, w) / crop_pct)
        return cls(
            crop_hw=(int(h), int(w)),
            resize_shortest_edge=shortest,
            mean=tuple(pcfg.get("mean", IMAGENET_MEAN)),
            std=tuple(pcfg.get("std", IMAGENET_STD)),
            rescale_factor=1 / 255,
            resample=_TIMM_RESAMPLE.get(pcfg.get("interpolation", "bicubic"), 3),
        )

    @classmethod
    def _from_hf(cls, cfg: dict) -> PreprocessSpec:
        size = cfg.get("size") or {}
        if isinstance(size, int):
            size = {"shortest_edge": size}
        crop = cfg.get("crop_size") or {}
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        do_resize = cfg.get("do_resize", True)
        if not do_resize:
            raise ValueError("preprocessor configs without resizing are not supported")
        proc = cfg.get("image_processor_type", "")
        if "crop_pct" in cfg and "shortest_edge" in size and proc.startswith("ConvNext"):
            # ConvNeXt rule: below 384, resize to shortest_edge / crop_pct then crop shortest_edge.
            se = int(size["shortest_edge"])
            if se < 384:
                shortest: int | None = int(se / cfg["crop_pct"])
                crop_hw = (se, se)
            else:
                shortest, crop_hw = None, (se, se)
        elif "height" in size and "width" in size:
            shortest, crop_hw = None, (int(size["height"]), int(size["width"]))
            if cfg.get("do_center_crop") and crop:
                raise ValueError("fixed-size resize followed by a crop is not supported")
        elif "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
            if cfg.get("do_center_crop", bool(crop)) and crop:
                crop_hw = (int(crop["height"]), int(crop["width"]))
            else:
                raise ValueError("a shortest-edge resize without a centre crop gives ragged shapes")
        else:
            raise ValueError(f"unsupported 'size' in preprocessor config: {size!r}")
        do_norm = cfg.get("do_normalize", True)
        return cls(
            crop_hw=crop_hw,
            resize_shortest_edge=shortest,
            mean=tuple(cfg.get("image_mean", IMAGENET_MEAN)) if do_norm else (0.0, 0.0, 0.0),
            std=tuple(cfg.get("image_std", IMAGENET_STD)) if do_norm else (1.0, 1.0, 1.0),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
            resample=int(cfg.get("resample", 3)),
        )

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) an image of this size is resized to before the crop."""
        if self.resize_shortest_edge is None:
            return self.crop_hw[1], self.crop_hw[0]
        se = self.resize_shortest_edge
        if width <= height:
            return se, max(1, int(se * height / width))
        return max(1, int(se * width / height)), se

    def raw_mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std in raw 0..255 pixel units: ``model_input = (raw - mean) / std``.

        The one home of the normalisation constants; every engine and graph derives its own form from it.
        """
        mean = np.asarray(self.mean, np.float64) / self.rescale_factor
        std = np.asarray(self.std, np.float64) / self.rescale_factor
        return mean, std

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel float32 ``(scale, shift)`` with ``model_input = raw * scale - shift``: one fused
        multiply-subtract turns uint8 pixels into model input on whatever device or graph runs it."""
        mean, std = self.raw_mean_std()
        return (1.0 / std).astype(np.float32), (mean / std).astype(np.float32)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """``uint8 [N,H,W,3]`` → normalised ``float32 [N,3,H,W]`` (the CPU reference path)."""
        scale, shift = self.scale_shift()
        x = batch.astype(np.float32).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x * scale.reshape(1, 3, 1, 1) - shift.reshape(1, 3, 1, 1))


def decode_image(data: bytes, spec: PreprocessSpec, max_image_pixels: int) -> np.ndarray:
    """Decode encoded image bytes to ``uint8 [H, W, 3]`` at the model's input size.

    Raises:
        InvalidInput: empty, not an image, an unsupported format, too many pixels, or truncated data.
    """
    with _refusals(max_image_pixels):
        img = _open_checked(data, max_image_pixels)
        if img.format == "JPEG":
            rw, rh = spec.resized_size(*img.size)
            # Keep DRAFT_MARGIN x above the resize target: DCT scaling straight to the target size would
            # replace the antialiased resize and move scores visibly against AutoImageProcessor.
            draft_size = (DRAFT_MARGIN * rw, DRAFT_MARGIN * rh)
            arr = _decode_jpeg_turbo(data, img, draft_size)
            if arr is not None:
                return resize_crop(arr, spec)
            img.draft("RGB", draft_size)  # CMYK, or refused by simplejpeg: PIL decodes (or fails) as before
        img = _to_rgb(img)
        return prepare_pil(img, spec)


def decode_cost_pixels(data: bytes | np.ndarray, spec: PreprocessSpec) -> int:
    """Pixels decoding ``data`` produces, from its header alone (cheap: nothing is decoded): width x height,
    for a JPEG at the DCT-scaled size :func:`decode_image` decodes it to; a tensor's own pixels.

    What fair decoding (:mod:`predictor.fair_pool`) and admission (``max_queue_pixels``) count; 0 for bytes
    that are not a readable image header (decoding reports what is wrong with them).
    """
    if isinstance(data, np.ndarray):
        return int(data.shape[0] * data.shape[1]) if data.ndim == 3 and data.dtype == np.uint8 else 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            fmt = img.format
    except Exception:  # any unreadable header: the decode refuses it with a reason
        return 0
    if fmt == "JPEG":
        rw, rh = spec.resized_size(w, h)
        s = _draft_scale((w, h), (DRAFT_MARGIN * rw, DRAFT_MARGIN * rh))
        return -(-w // s) * -(-h // s)
    return w * h


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG whose header passed the checks, left encoded for a batched decoder on the inference device."""

    data: bytes
    width: int
    height: int
    orientation: int
    """EXIF orientation (1-8) to apply after decoding."""
    max_image_pixels: int
    """The pixel limit the header was checked against (and a CPU fallback decode checks again)."""


def inspect_jpeg(data: bytes, max_image_pixels: int) -> EncodedJpeg | None:
    """Run :func:`decode_image`'s header checks without decoding.

    Returns:
        An :class:`EncodedJpeg` for a plain RGB or greyscale JPEG whose data ends with the EOI marker;
        ``None`` for anything else (other formats, CMYK, odd orientation tags, data that does not end
        with EOI), which :func:`decode_image` must handle. The end-of-image check matters because a
        hardware decoder checks only the header before a batched decode and may return partial pixels
        of a truncated file without an error (NVIDIA/DALI#3113); the CPU path refuses such files.

    Raises:
        InvalidInput: the same refusals as :func:`decode_image` makes before decoding.
    """
    with _refusals(max_image_pixels):
        img = _open_checked(data, max_image_pixels)
        if img.format != "JPEG" or img.mode not in ("RGB", "L") or len(img.tile) != 1:
            return None
        if not ends_with_eoi(data):
            return None
        return EncodedJpeg(data, img.size[0], img.size[1], read_orientation(img), max_image_pixels)


def ends_with_eoi(data: bytes) -> bool:
    """Whether JPEG data ends with the end-of-image marker ``FF D9`` (trailing NUL padding allowed)."""
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _open_checked(data: bytes, max_image_pixels: int) -> Image.Image:
    """Open (header only) and check format and pixel count."""
    if not data:
        raise InvalidInput(f"image is empty: expected encoded {_ACCEPTED_TEXT} bytes")
    img = Image.open(io.BytesIO(data))
    if img.format not in ACCEPTED_FORMATS:
        raise InvalidInput(f"image format {img.format} is not accepted: send {_ACCEPTED_TEXT}")
    w, h = img.size
    if w * h > max_image_pixels:
        raise InvalidInput(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_image_pixels}")
    return img


@contextlib.contextmanager
def _refusals(max_image_pixels: int) -> Iterator[None]:
    """Turn PIL's and the decoders' errors into :class:`InvalidInput` with a message that says why."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInput(
            f"image declares more pixels than allowed (over the limit of {max_image_pixels}): refused before decoding"
        ) from None
    except UnidentifiedImageError:
        raise InvalidInput(f"bytes are not a decodable image: send {_ACCEPTED_TEXT}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InvalidInput(f"image data is corrupt or truncated ({e})") from None


def _draft_scale(size: tuple[int, int], requested: tuple[int, int]) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) PIL's ``JpegImageFile.draft`` picks for ``requested``."""
    scale = min(size[0] // requested[0], size[1] // requested[1])
    return next((s for s in (8, 4, 2) if scale >= s), 1)


def _decode_jpeg_turbo(data: bytes, img: Image.Image, draft_size: tuple[int, int]) -> np.ndarray | None:
    """Decode a JPEG (header already read by PIL as ``img``) with simplejpeg to ``uint8 [H, W, 3]`` RGB,
    DCT-scaled exactly as ``img.draft("RGB", draft_size)`` would, EXIF orientation applied.

    Returns ``None`` where the PIL path must decide instead: CMYK/YCCK (PIL's own conversion), or anything
    simplejpeg refuses (corrupt or truncated data, libjpeg
    warnings included: PIL decodes some of those and rejects others, and keeps doing so).
    """
    if img.mode not in ("RGB", "L") or len(img.tile) != 1:
        return None
    orientation = read_orientation(img)
    w, h = img.size
    s = _draft_scale((w, h), draft_size)
    ow, oh = -(-w // s), -(-h // s)  # libjpeg's scaled size: ceil(w / s), as PIL's draft
    try:
        # The smallest M/8 scale whose output is at least (ow, oh) is exactly 1/s (min_factor only switches
        # scaling off below a factor, it cannot force one). Accurate DCT and upsampling, as PIL.
        arr = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_width=ow if s > 1 else 0, min_height=oh if s > 1 else 0, strict=True
        )
    except (ValueError, RuntimeError):
        return None
    if arr.shape != (oh, ow, 3):  # header disagreement (e.g. a DNL height): let PIL decide
        return None
    return orientation_apply(arr, orientation, NUMPY_HWC)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation, take the first frame, flatten alpha onto white, convert to RGB."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if img.format == "JPEG":
        img = orientation_apply(img, read_orientation(img), pil_ops())
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    return img.convert("RGB") if img.mode != "RGB" else img


# PIL resample code -> torchvision's antialiased uint8 kernels (ported from Pillow: same filters,
# results within 1 grey level, much faster than Pillow's own resize: docs/performance.md).
TORCH_MODES = {0: "NEAREST_EXACT", 2: "BILINEAR", 3: "BICUBIC"}


def prepare_pil(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize (shortest edge or fixed) and centre-crop an RGB PIL image to ``uint8 [H, W, 3]``."""
    rw, rh = spec.resized_size(*img.size)
    if (rw, rh) != img.size and spec.resample not in TORCH_MODES:
        return _crop(np.asarray(img.resize((rw, rh), resample=spec.resample), dtype=np.uint8), spec)
    return resize_crop(np.asarray(img, dtype=np.uint8), spec)


def resize_crop(arr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """`prepare_pil` for an RGB ``uint8 [H, W, 3]`` array (any strides), without a PIL round trip
    for the torchvision-backed filters."""
    h, w = arr.shape[:2]
    rw, rh = spec.resized_size(w, h)
    if (rw, rh) != (w, h) and spec.resample in TORCH_MODES:
        arr = _torch_resize(arr, rh, rw, spec.resample)
    elif (rw, rh) != (w, h):
        img = Image.fromarray(np.ascontiguousarray(arr))
        arr = np.asarray(img.resize((rw, rh), resample=spec.resample), dtype=np.uint8)
    return _crop(arr, spec)


def crop_origin(spec: PreprocessSpec, width: int, height: int) -> tuple[int, int]:
    """(left, top) of the centre crop in an image of the resized ``width`` x ``height``."""
    ch, cw = spec.crop_hw
    return round((width - cw) / 2.0), round((height - ch) / 2.0)


def _crop(arr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Centre crop of an image already at its resized size."""
    ch, cw = spec.crop_hw
    left, top = crop_origin(spec, arr.shape[1], arr.shape[0])
    return np.ascontiguousarray(arr[top : top + ch, left : left + cw])


def torch_resize_nchw(x, height: int, width: int, resample: int):
    """torchvision's resize of an ``[N, C, H, W]`` tensor with the PIL filter ``resample`` (one of
    :data:`TORCH_MODES`), antialiased as Pillow is; uint8 on the CPU uses the exact uint8 kernels."""
    from torchvision.transforms.v2 import functional as F

    mode = getattr(F.InterpolationMode, TORCH_MODES[resample])
    return F.resize(x, [height, width], interpolation=mode, antialias=mode != F.InterpolationMode.NEAREST_EXACT)


def _torch_resize(arr: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    import torch

    _single_threaded_torch()
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # PIL's buffers are read-only; torch wants writable memory even to read it
        arr = arr.copy()
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
    return torch_resize_nchw(x, height, width, resample)[0].permute(1, 2, 0).numpy()


_local = threading.local()


def _single_threaded_torch() -> None:
    """One intra-op thread for torch calls from this (decode) thread.

    Decoding runs on several threads already; letting each spawn an OpenMP team would oversubscribe the
    cores the inference thread needs. OpenMP's thread count is per calling thread, so the inference
    thread keeps its own setting.
    """
    if not getattr(_local, "torch_threads_set", False):
        import torch

        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        _local.torch_threads_set = True


def prepare_array(arr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resize and crop an already-decoded ``uint8 [H, W, 3]`` RGB array to the model's input size."""
    if arr.shape[:2] == spec.crop_hw:
        return np.ascontiguousarray(arr)
    return resize_crop(arr, spec)
