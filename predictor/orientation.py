"""EXIF orientation: read in one place, applied from one table to numpy, torch and PIL images.

Orientation ``n`` (1-8, EXIF tag 0x0112) says how the stored pixels must be turned to be upright, exactly
as ``PIL.ImageOps.exif_transpose`` turns them. Each is a short sequence of three primitive steps on the
image plane: mirror left-right (``flip_w``), mirror top-bottom (``flip_h``), swap rows and columns
(``transpose``). :data:`STEPS` is the one table; each image kind supplies the three primitives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

ORIENTATION_TAG = 0x0112
EXIF_KEYS = ("exif", "xmp", "XML:com.adobe.xmp", "Raw profile type exif")
"""``img.info`` keys PIL reads the orientation from (``Image.getexif``): without them, no EXIF parsing."""

STEPS: dict[int, tuple[str, ...]] = {
    1: (),
    2: ("flip_w",),  # FLIP_LEFT_RIGHT
    3: ("flip_h", "flip_w"),  # ROTATE_180
    4: ("flip_h",),  # FLIP_TOP_BOTTOM
    5: ("transpose",),  # TRANSPOSE
    6: ("transpose", "flip_w"),  # ROTATE_270 (counter-clockwise: 90 clockwise)
    7: ("flip_h", "flip_w", "transpose"),  # TRANSVERSE
    8: ("transpose", "flip_h"),  # ROTATE_90
}

T = TypeVar("T")


def read_orientation(img: Any) -> int:
    """The EXIF orientation of a PIL image (1 when absent, unreadable or not 1-8)."""
    if not any(k in img.info for k in EXIF_KEYS):
        return 1
    value = img.getexif().get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and value in STEPS else 1


def apply(image: T, orientation: int, ops: dict[str, Callable[[T], T]]) -> T:
    """``image`` turned upright for ``orientation``, with the primitives ``ops`` (flip_w, flip_h, transpose)."""
    for step in STEPS[orientation]:
        image = ops[step](image)
    return image


NUMPY_HWC = {"flip_w": lambda a: a[:, ::-1], "flip_h": lambda a: a[::-1], "transpose": lambda a: a.transpose(1, 0, 2)}
"""The primitives for a numpy ``[H, W, C]`` array (views, no copy)."""
TORCH_CHW = {"flip_w": lambda t: t.flip(2), "flip_h": lambda t: t.flip(1), "transpose": lambda t: t.transpose(1, 2)}
"""The primitives for a torch ``[C, H, W]`` tensor."""


def pil_ops() -> dict[str, Callable[[Any], Any]]:
    """The primitives for a PIL image."""
    from PIL import Image

    t = Image.Transpose
    return {
        "flip_w": lambda im: im.transpose(t.FLIP_LEFT_RIGHT),
        "flip_h": lambda im: im.transpose(t.FLIP_TOP_BOTTOM),
        "transpose": lambda im: im.transpose(t.TRANSPOSE),
    }
