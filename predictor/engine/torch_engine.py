"""PyTorch eager (optionally compiled) engine: CPU fp32/bf16 and CUDA fp16/bf16/fp32.

* CPU: ``channels_last`` weights, ``torch.set_num_threads(threads)``, bf16 through ``torch.autocast``
  (pays off only where the CPU has native bf16: AMX or AVX-512 BF16).
* CUDA: weights cast to fp16 (or bf16), ``channels_last``, cuDNN autotuning; uint8 batches are copied
  through a pinned staging buffer (a quarter of float32's bytes) and normalised on the device. "fp32"
  on CUDA runs convolutions in TF32 (cuDNN's default, ``torch.backends.cudnn.allow_tf32``).
* Batches are padded to fixed buckets (powers of two up to ``max_batch_size``) on CUDA and when
  compiled: cuDNN autotunes (and ``torch.compile`` compiles) once per input shape, so an unpadded new
  batch size would stall the GPU the first time it is seen. :meth:`warmup_sizes` are exactly the buckets.
* ``compile=True``: ``torch.compile`` (mode ``reduce-overhead`` = CUDA graphs on a GPU).

Every forward pass runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from predictor.engine.base import Engine, EngineInfo, Item
from predictor.engine.hf_model import load_logits_module
from predictor.engine.torch_decode import DeviceJpegDecoder
from predictor.errors import InvalidInput
from predictor.preprocess import EncodedJpeg, PreprocessSpec

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def batch_buckets(max_batch_size: int) -> list[int]:
    """Fixed batch sizes a compiled model is specialised for: powers of two, then ``max_batch_size``."""
    buckets, n = [], 1
    while n < max_batch_size:
        buckets.append(n)
        n *= 2
    buckets.append(max_batch_size)
    return buckets


def _writable(batch: np.ndarray) -> np.ndarray:
    """Contiguous and writable (torch warns on read-only arrays, e.g. views of PIL-decoded images)."""
    batch = np.ascontiguousarray(batch)
    return batch if batch.flags.writeable else batch.copy()


class TorchEngine(Engine):
    """Runs the Hugging Face model in PyTorch on CPU or CUDA."""

    decodes_jpeg = True

    def __init__(
        self,
        spec: PreprocessSpec,
        model_dir: Path,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int = 0,
        compile: bool = False,
        max_batch_size: int = 32,
        pad_to_buckets: bool | None = None,
        memory_fraction: float = 1.0,
    ) -> None:
        """Configure (nothing heavy happens before :meth:`load`).

        Args:
            spec: Preprocessing spec (input size, normalisation).
            model_dir: Hugging Face model directory.
            device: ``cpu`` or ``cuda`` (``cuda:N`` accepted).
            precision: One the registry lists for the device (:mod:`predictor.engine.registry` checks).
            threads: CPU intra-op threads; 0 leaves torch's default.
            compile: Use ``torch.compile`` with fixed batch buckets.
            max_batch_size: Largest batch; sets the buckets.
            pad_to_buckets: Pad batches to the buckets; default: on CUDA or when compiled.
            memory_fraction: CUDA: share of the device's memory this process's allocator may use (below 1
                when pods share a GPU by time-slicing); an allocation past it raises ``OutOfMemoryError``.
        """
        super().__init__(spec)
        self.device = torch.device(device)
        if not 0 < memory_fraction <= 1:
            raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
        self.model_dir = Path(model_dir)
        self.precision = precision
        self.threads = threads
        self.compile = compile
        self.memory_fraction = memory_fraction
        if pad_to_buckets is None:
            pad_to_buckets = compile or self.device.type == "cuda"
        self.buckets = batch_buckets(max_batch_size) if pad_to_buckets else []
        self._module: torch.nn.Module | None = None
        self._forward = None
        self._scale: torch.Tensor | None = None
        self._shift: torch.Tensor | None = None
        self._staging: torch.Tensor | None = None
        self._decoder: DeviceJpegDecoder | None = None
        self.on_decode_fallback: Callable[[str], None] | None = None
        """Told of every JPEG that ``jpeg_decode=device`` sent to the CPU decoder (the reason)."""

    @property
    def info(self) -> EngineInfo:
        """Backend (``torch`` or ``torch-compile``), device and dtype in use."""
        backend = "torch-compile" if self.compile else "torch"
        return EngineInfo(backend=backend, device=str(self.device), dtype=str(_DTYPES[self.precision]).split(".")[1])

    @property
    def _cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def _weight_dtype(self) -> torch.dtype:
        # On CPU weights stay fp32 and autocast casts per op; on CUDA the whole model is cast.
        return _DTYPES[self.precision] if self._cuda else torch.float32

    def load(self) -> None:
        """Load the weights, move them to the device in ``channels_last``, and compile if asked."""
        if self.device.type == "cpu" and self.threads > 0:
            torch.set_num_threads(self.threads)
        if self._cuda:
            torch.backends.cudnn.benchmark = True
            if self.memory_fraction < 1:
                torch.cuda.set_per_process_memory_fraction(self.memory_fraction, self.device)
        module = load_logits_module(self.model_dir)
        module = module.to(device=self.device, dtype=self._weight_dtype, memory_format=torch.channels_last)
        self._module = module
        scale, shift = self.spec.scale_shift()
        self._scale = torch.from_numpy(scale).reshape(1, 3, 1, 1).to(self.device, self._weight_dtype)
        self._shift = torch.from_numpy(shift).reshape(1, 3, 1, 1).to(self.device, self._weight_dtype)
        if self.compile:
            mode = "reduce-overhead" if self._cuda else None
            self._forward = torch.compile(module, mode=mode, dynamic=False, fullgraph=False)
        else:
            self._forward = module
        logger.info(
            "torch engine: %s on %s, %s, threads=%d, compile=%s",
            self.model_dir,
            self.device,
            self.precision,
            torch.get_num_threads(),
            self.compile,
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self._cuda and self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_device_uint8(self, batch: np.ndarray, padded: int) -> torch.Tensor:
        """uint8 NHWC numpy → uint8 NHWC tensor of ``padded`` rows on the device (zero rows appended).

        On CUDA through a pinned staging buffer; the padding is written there, so the device never copies.
        """
        host = torch.from_numpy(_writable(batch))
        n = host.shape[0]
        if not self._cuda:
            if padded == n:
                return host
            out = torch.zeros((padded, *host.shape[1:]), dtype=torch.uint8)
            out[:n] = host
            return out
        if self._staging is None or self._staging.shape[0] < padded or self._staging.shape[1:] != host.shape[1:]:
            self._staging = torch.empty((padded, *host.shape[1:]), dtype=torch.uint8).pin_memory()
        staged = self._staging[:padded]
        staged[:n].copy_(host)
        staged[n:].zero_()
        return staged.to(self.device, non_blocking=True)

    def _normalise(self, x_nhwc: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC on the device → normalised NCHW in the weights' dtype, ``channels_last`` (no copy of
        the layout: NHWC memory is the channels_last NCHW view)."""
        x = x_nhwc.permute(0, 3, 1, 2).to(self._weight_dtype)
        return torch.addcmul(-self._shift, x, self._scale)  # x * scale - shift in one pass

    def _prepare(self, batch: np.ndarray | torch.Tensor, padded: int) -> torch.Tensor:
        """The model input of ``padded`` rows: normalised, in the weights' dtype, ``channels_last`` on the device."""
        n = batch.shape[0]
        if isinstance(batch, torch.Tensor):  # uint8 NHWC decoded on the device (jpeg_decode=device)
            if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
                raise ValueError(f"tensor batch must be uint8 [N,H,W,3], got {batch.dtype} {list(batch.shape)}")
            x = batch.to(self.device)
            if padded != n:
                x = torch.cat([x, x.new_zeros((padded - n, *x.shape[1:]))])
            return self._normalise(x).contiguous(memory_format=torch.channels_last)
        if self.check_batch(batch) == "uint8":
            return self._normalise(self._to_device_uint8(batch, padded))
        else:
            x = torch.from_numpy(_writable(batch)).to(self.device, non_blocking=False)
            out = torch.empty(
                (padded, *x.shape[1:]), dtype=self._weight_dtype, device=self.device, memory_format=torch.channels_last
            )
            out[:n].copy_(x)
            out[n:].zero_()
            return out

    def _bucket(self, n: int) -> int:
        return next((b for b in self.buckets if b >= n), n)

    def warmup_sizes(self, max_batch_size: int) -> list[int]:
        """Every bucket when padding (each is a shape cuDNN or the compiler sees), else the base choice."""
        return list(self.buckets) if self.buckets else super().warmup_sizes(max_batch_size)

    def infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Forward pass; ``float32 [N, num_labels]`` logits in input order.

        ``batch`` may also be a ``uint8 [N,H,W,3]`` torch tensor, already on the device.
        """
        if self._forward is None:
            raise RuntimeError("TorchEngine.infer called before load()")
        n = batch.shape[0]
        if self.buckets and n > self.buckets[-1]:
            step = self.buckets[-1]
            return np.concatenate([self.infer(batch[i : i + step]) for i in range(0, n, step)])
        with torch.inference_mode():
            x = self._prepare(batch, self._bucket(n))
            with self._autocast():
                logits = self._forward(x)
            # .cpu() synchronises; the copy also detaches from CUDA-graph output buffers.
            return logits[:n].float().cpu().numpy()

    def infer_items(self, items: Sequence[Item]) -> list[np.ndarray | InvalidInput]:
        """As :meth:`Engine.infer_items`, and JPEGs left encoded are decoded on the device in one batch.

        Decoded and uint8 pixels run as one forward pass; normalised float32 inputs, if any, as a
        second one (they are never re-quantised). A JPEG that cannot be decoded gets its error alone.
        """
        if not any(isinstance(a, EncodedJpeg) for a in items):
            return super().infer_items(items)
        if self._decoder is None:
            self._decoder = DeviceJpegDecoder(self.spec, self.device, self._fallback)
        jpegs = [i for i, a in enumerate(items) if isinstance(a, EncodedJpeg)]
        out: list = list(items)
        for i, d in zip(jpegs, self._decoder.decode([items[i] for i in jpegs]), strict=True):  # type: ignore[misc]
            out[i] = d
        for i, a in enumerate(items):
            if isinstance(a, np.ndarray) and a.dtype == np.uint8:
                out[i] = torch.from_numpy(_writable(a)).to(self.device)
        groups = (
            [i for i, o in enumerate(out) if isinstance(o, torch.Tensor)],
            [i for i, o in enumerate(out) if isinstance(o, np.ndarray)],  # float32 [3,H,W]
        )
        for group, stack in zip(groups, (torch.stack, np.stack), strict=True):
            if group:
                for i, row in zip(group, self.checked_infer(stack([out[i] for i in group])), strict=True):
                    out[i] = row
        return out

    def _fallback(self, reason: str) -> None:
        if self.on_decode_fallback is not None:
            self.on_decode_fallback(reason)

    def release_memory(self) -> None:
        """Return the caching allocator's unused blocks to CUDA (after an out-of-memory error)."""
        if self._cuda:
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the model and free cached device memory."""
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        self._module = self._forward = self._staging = None
        if self._cuda:
            torch.cuda.empty_cache()
