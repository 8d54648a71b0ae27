"""One image input, as a request hands it over (encoded bytes or a tensor), made into what the batcher takes.

Runs in the decode pool. Encoded images are decoded and resized (:func:`~predictor.preprocess.decode_image`);
with ``jpeg_decode=device`` a JPEG only has its header checked here and is decoded with its batch on the
inference thread, by the engine (:mod:`predictor.engine.torch_decode`). Tensors are checked: ``uint8
[H,W,3]`` RGB pixels are resized like a decoded image, normalised ``float32 [3,H,W]`` at the model's input
size pass as they are.
"""

from __future__ import annotations

import numpy as np

from predictor.engine.base import Item
from predictor.errors import InvalidInput
from predictor.preprocess import PreprocessSpec, decode_image, inspect_jpeg, prepare_array

ImageInput = bytes | np.ndarray


def prepare_input(img: ImageInput, spec: PreprocessSpec, max_image_pixels: int, decode_on_device: bool) -> Item:
    """``img`` as a batch item.

    Raises:
        InvalidInput: undecodable bytes, too many pixels, or a tensor of another dtype or shape (the
            message says what is accepted).
    """
    if isinstance(img, bytes | bytearray | memoryview):
        data = bytes(img)
        out = inspect_jpeg(data, max_image_pixels) if decode_on_device else None
        return out if out is not None else decode_image(data, spec, max_image_pixels)
    if isinstance(img, np.ndarray):
        return _prepare_array(img, spec, max_image_pixels)
    raise InvalidInput(f"unsupported image input of type {type(img).__name__}")


def _prepare_array(arr: np.ndarray, spec: PreprocessSpec, max_image_pixels: int) -> np.ndarray:
    h, w = spec.crop_hw
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        if arr.shape[0] * arr.shape[1] > max_image_pixels:
            raise InvalidInput(f"image of {arr.shape[0]}x{arr.shape[1]} pixels is over the limit")
        return prepare_array(arr, spec)
    if arr.dtype == np.float32 and arr.shape == (3, h, w):
        if not np.isfinite(arr).all():
            raise InvalidInput("FP32 input contains NaN or infinity")
        return np.ascontiguousarray(arr)
    raise InvalidInput(
        f"tensor image of dtype {arr.dtype} and shape {list(arr.shape)} is not accepted: send UINT8 "
        f"[H,W,3] RGB pixels or normalised FP32 [3,{h},{w}]"
    )
