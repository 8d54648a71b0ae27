"""Benchmark payloads: the scikit-image sample photos re-encoded as JPEGs at a chosen size.

Everything here runs before any clock starts; nothing is done at import time.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

SAMPLE_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "stereo_motorcycle")
"""Real photographs among scikit-image's samples (a cat, coffee, a rocket, an astronaut, a motorcycle)."""

BAD_IMAGE = b"this is not an image\x00\xff" * 8
"""Bytes no decoder accepts: what ``--bad-ratio`` sends."""


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` → ``(640, 480)`` (width, height).

    Raises:
        ValueError: not ``WIDTHxHEIGHT`` with positive integers.
    """
    try:
        w, h = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 640x480") from None
    if w < 1 or h < 1:
        raise ValueError(f"size {text!r} must be positive")
    return w, h


def sample_arrays() -> dict[str, np.ndarray]:
    """The sample photos as ``uint8 [H, W, 3]`` RGB arrays, by name."""
    import skimage.data  # heavy import, only when payloads are built

    out: dict[str, np.ndarray] = {}
    for name in SAMPLE_PHOTOS:
        arr = getattr(skimage.data, name)()
        if isinstance(arr, tuple):  # stereo_motorcycle: (left, right, disparity)
            arr = arr[0]
        out[name] = np.ascontiguousarray(arr[..., :3], dtype=np.uint8)
    return out


def as_rgb(arr: np.ndarray) -> np.ndarray:
    """Any scikit-image sample (bool, float, grey, RGBA) as ``uint8 [H, W, 3]`` RGB (alpha flattened onto white)."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip((arr - arr.min()) / max(float(np.ptp(arr)), 1e-12) * 255, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] == 4:
        img = Image.fromarray(arr, "RGBA")
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        arr = np.asarray(bg)
    return np.ascontiguousarray(arr[:, :, :3])


@lru_cache(maxsize=16)
def sample_jpegs(size: tuple[int, int], quality: int = 90) -> tuple[bytes, ...]:
    """Every sample photo resized to ``size`` (width, height) and JPEG-encoded, in a fixed order."""
    out = []
    for arr in sample_arrays().values():
        img = Image.fromarray(arr, mode="RGB").resize(size, resample=Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return tuple(out)
