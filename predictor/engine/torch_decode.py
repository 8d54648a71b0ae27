"""Batched JPEG decoding on the torch engine's device (``jpeg_decode=device``): nvJPEG on a GPU.

With the default ``jpeg_decode=cpu`` the decode thread pool turns every image into model-sized
``uint8`` pixels (libjpeg-turbo with DCT scaling, :mod:`predictor.preprocess`). With
``jpeg_decode=device`` the pool only checks each JPEG's header (:func:`~predictor.preprocess.inspect_jpeg`:
format, pixel limit, EXIF orientation, the same 4xx refusals) and the inference thread decodes the
whole batch in one ``torchvision.io.decode_jpeg(list, device=...)`` call, then orients, resizes
(antialiased, the model's filter) and crops on the device, so full-size pixels never cross the bus
and the CPU cores are left to HTTP. Formats other than plain RGB/greyscale JPEG keep the CPU path.

A JPEG whose header is fine but whose data the device decoder refuses is retried alone, then on the
CPU path, which decodes it or raises the usual :class:`~predictor.errors.InvalidInput` for that image
only: one bad image never fails its batch-mates. Every such fallback is reported to ``on_fallback``
(the pipeline counts it in ``classifier_jpeg_device_fallbacks_total`` and logs the first one), so a
device decoder that silently refuses everything cannot pass for a working one. JPEGs whose data does
not end with the EOI marker never reach the device (:func:`~predictor.preprocess.inspect_jpeg`).

Part of the torch backend (:meth:`TorchEngine.infer_items <predictor.engine.torch_engine.TorchEngine.infer_items>`
consumes the device tensors directly). On a CPU engine it runs torchvision's CPU decoder on the
inference thread: correct (the tests use it), but slower than the decode pool, so it is only worth it
on a GPU; ``bench/gpu_suite.sh`` measures it there (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from predictor.errors import InvalidInput
from predictor.orientation import TORCH_CHW
from predictor.orientation import apply as orientation_apply
from predictor.preprocess import (
    TORCH_MODES,
    EncodedJpeg,
    PreprocessSpec,
    crop_origin,
    decode_image,
    resize_crop,
    torch_resize_nchw,
)

if TYPE_CHECKING:
    import torch

FALLBACK_REASONS = ("device_error", "shape")
"""Why an image left the device path: the device decoder raised, or returned other dimensions."""


class DeviceJpegDecoder:
    """Decodes, orients, resizes and crops batches of JPEGs on one torch device.

    Args:
        spec: The model's preprocessing.
        device: Where to decode (``cuda`` for nvJPEG).
        on_fallback: Called with a :data:`FALLBACK_REASONS` entry for every image sent to the CPU path.
    """

    def __init__(
        self, spec: PreprocessSpec, device: torch.device, on_fallback: Callable[[str], None] | None = None
    ) -> None:
        self.spec = spec
        self.device = device
        self.on_fallback = on_fallback
        self._fallback_pool: ThreadPoolExecutor | None = None

    def decode(self, items: list[EncodedJpeg]) -> list[torch.Tensor | InvalidInput]:
        """Per item, in order: ``uint8 [H, W, 3]`` on the device at the model's input size, or the
        :class:`InvalidInput` that item failed with."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded = [torch.frombuffer(bytearray(it.data), dtype=torch.uint8) for it in items]
        try:
            decoded: list[torch.Tensor | None] = list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:  # one bad image fails the batched call: isolate it
            decoded = []
            for data in encoded:
                try:
                    decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    decoded.append(None)
        out: list[torch.Tensor | InvalidInput] = []
        for item, img in zip(items, decoded, strict=True):
            if img is None or tuple(img.shape[1:]) != (item.height, item.width):
                if self.on_fallback is not None:
                    self.on_fallback("device_error" if img is None else "shape")
                out.append(self._on_cpu(item))
            else:
                out.append(self._resize_crop_chw(orientation_apply(img, item.orientation, TORCH_CHW)))
        return out

    def _on_cpu(self, item: EncodedJpeg) -> torch.Tensor | InvalidInput:
        """The CPU path for an image the device decoder refused: its pixels, or why it cannot be decoded.

        Runs on a helper thread: the CPU path pins its calling thread's torch to one intra-op thread,
        which the inference thread must not inherit.
        """
        import torch

        if self._fallback_pool is None:
            self._fallback_pool = ThreadPoolExecutor(1, thread_name_prefix="decode-fallback")
        try:
            arr = self._fallback_pool.submit(decode_image, item.data, self.spec, item.max_image_pixels).result()
        except InvalidInput as e:
            return e
        return torch.from_numpy(arr).to(self.device)

    def _resize_crop_chw(self, img: torch.Tensor) -> torch.Tensor:
        """Resize (antialiased, the model's filter) and centre-crop a ``uint8 [3, H, W]`` image → ``[H, W, 3]``."""
        import torch

        spec = self.spec
        h, w = img.shape[1:]
        rw, rh = spec.resized_size(w, h)
        if spec.resample not in TORCH_MODES:  # box, lanczos, hamming: Pillow's filters on the CPU
            arr = resize_crop(np.ascontiguousarray(img.permute(1, 2, 0).cpu().numpy()), spec)
            return torch.from_numpy(arr).to(img.device)
        if (rw, rh) != (w, h):
            img = torch_resize_nchw(img[None], rh, rw, spec.resample)[0]
        ch, cw = spec.crop_hw
        left, top = crop_origin(spec, rw, rh)
        return img[:, top : top + ch, left : left + cw].permute(1, 2, 0)

    def close(self) -> None:
        """Stop the CPU-fallback thread."""
        if self._fallback_pool is not None:
            self._fallback_pool.shutdown(wait=True)
            self._fallback_pool = None
