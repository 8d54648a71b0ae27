"""OpenVINO engine (CPU): the model exported once to OpenVINO IR, cached by content, bf16 where native.

* Export: torch → ``ov.convert_model`` (float32 ``[N,3,H,W]`` input, dynamic batch) → IR saved with
  fp32 weights in the artefact cache; a restart reads the IR instead of exporting again. OpenVINO's own
  compiled-blob cache (``CACHE_DIR``) sits beside it, so compilation is not paid twice either.
* uint8 input: a ``PrePostProcessor`` prepends ``u8 NHWC → f32 NCHW → (x - mean) / std`` to the graph,
  so normalisation runs inside the compiled model. Float32 input compiles the plain graph on first use.
* Precision: ``INFERENCE_PRECISION_HINT`` is always set explicitly (``f32`` or ``bf16``), because on
  AMX CPUs OpenVINO would otherwise pick bf16 by itself.
* ``performance_hint``: ``LATENCY`` runs a batch as one synchronous request (all cores on one request);
  ``THROUGHPUT`` splits the batch over OpenVINO's parallel streams (one core each on a small machine)
  with an ``AsyncInferQueue``, so no core waits for another inside a layer: a decode or HTTP thread that
  takes a core delays one stream, not all of them. A batch smaller than the number of streams would
  leave cores idle, so it runs as one all-core request of a second, ``LATENCY``-compiled model.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from predictor.engine.base import Engine, EngineInfo
from predictor.engine.cache import get_or_build, model_content_hash
from predictor.preprocess import PreprocessSpec

logger = logging.getLogger(__name__)

_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}
_DTYPE_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
IR_FILE = "model.xml"


def openvino_supports(precision: str) -> bool:
    """Whether OpenVINO's CPU plugin runs ``precision`` natively on this CPU."""
    import openvino as ov

    if precision == "fp32":
        return True
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return _CAPABILITY.get(precision, "?") in caps


class OpenVinoEngine(Engine):
    """Runs the model as OpenVINO IR on the CPU."""

    def __init__(
        self,
        spec: PreprocessSpec,
        model_dir: Path,
        cache_dir: Path,
        precision: str = "fp32",
        threads: int = 0,
        performance_hint: str = "LATENCY",
    ) -> None:
        """Configure (nothing heavy happens before :meth:`load`).

        Args:
            spec: Preprocessing spec (input size, normalisation).
            model_dir: Hugging Face model directory.
            cache_dir: Artefact cache root (IR and compiled blobs).
            precision: One the registry lists (:mod:`predictor.engine.registry` checks); bf16 and fp16 only
                where the CPU has them (checked at load).
            threads: Inference threads; 0 = OpenVINO's default (all usable cores).
            performance_hint: ``LATENCY`` or ``THROUGHPUT``.
        """
        super().__init__(spec)
        if performance_hint not in ("LATENCY", "THROUGHPUT"):
            raise ValueError(f"performance_hint must be LATENCY or THROUGHPUT, not {performance_hint!r}")
        self.model_dir = Path(model_dir)
        self.cache_dir = Path(cache_dir)
        self.precision = precision
        self.threads = threads
        self.performance_hint = performance_hint
        self.exported: bool | None = None
        """After :meth:`load`: True if this load exported the IR, False if the cached IR was reused."""
        self.artifact_dir: Path | None = None
        self._core: Any = None
        self._ov_model: Any = None
        self._compiled: dict[str, Any] = {}
        self._runners: dict[str, Any] = {}
        self._single: dict[str, Any] = {}
        """THROUGHPUT only: a LATENCY-compiled request per kind, for batches smaller than the streams."""
        self._dtype = "float32"

    @property
    def info(self) -> EngineInfo:
        """Backend, device and the inference precision OpenVINO actually uses."""
        backend = "openvino" if self.performance_hint == "LATENCY" else "openvino-throughput"
        return EngineInfo(backend=backend, device="cpu", dtype=self._dtype)

    def cache_key(self, content_hash: str) -> str:
        """Artefact key: model content, input size and OpenVINO version (IR written by one may not load in another)."""
        import openvino as ov

        h, w = self.input_hw
        version = ov.get_version().split("-")[0]
        return f"openvino-{content_hash[:20]}-{h}x{w}-ov{version}"

    def _export(self, out_dir: Path) -> None:
        import openvino as ov
        import torch

        from predictor.engine.hf_model import load_logits_module

        h, w = self.input_hw
        module = load_logits_module(self.model_dir)
        with torch.inference_mode(), warnings.catch_warnings():
            # torch.jit.trace deprecation and shape-check tracer warnings (input size is fixed here)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            ov_model = ov.convert_model(module, example_input=torch.zeros(1, 3, h, w))
        ov_model.reshape({ov_model.input(0).get_any_name(): ov.PartialShape([-1, 3, h, w])})
        ov.save_model(ov_model, out_dir / IR_FILE, compress_to_fp16=False)
        logger.info("exported %s to OpenVINO IR in %s", self.model_dir, out_dir)

    def load(self) -> None:
        """Export (or reuse) the IR, add uint8 preprocessing, compile for the CPU."""
        import openvino as ov

        if self.precision != "fp32" and not openvino_supports(self.precision):
            raise ValueError(
                f"this CPU has no native {self.precision} for OpenVINO (capabilities: "
                f"{ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}); use precision fp32"
            )
        key = self.cache_key(model_content_hash(self.model_dir))
        self.artifact_dir, self.exported = get_or_build(self.cache_dir, key, self._export)
        self._core = ov.Core()
        self._core.set_property({"CACHE_DIR": str(self.cache_dir / "openvino-compiled")})
        self._ov_model = self._core.read_model(self.artifact_dir / IR_FILE)
        self._compile("uint8")
        logger.info(
            "openvino engine: %s (%s IR), %s, hint=%s, threads=%s",
            self.model_dir,
            "exported" if self.exported else "cached",
            self._dtype,
            self.performance_hint,
            self.threads or "default",
        )

    def _config(self, hint: str | None = None) -> dict[str, str]:
        config = {
            "PERFORMANCE_HINT": hint or self.performance_hint,
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[self.precision],
        }
        if self.threads > 0:
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        return config

    def _uint8_model(self) -> Any:
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        ppp = PrePostProcessor(self._ov_model.clone())
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        mean, std = self.spec.raw_mean_std()
        ppp.input().preprocess().convert_element_type(ov.Type.f32).mean(mean.tolist()).scale(std.tolist())
        return ppp.build()

    def _compile(self, kind: str) -> Any:
        """Compile the uint8 (with preprocessing) or float32 variant and make its request runner."""
        import openvino as ov

        model = self._uint8_model() if kind == "uint8" else self._ov_model
        compiled = self._core.compile_model(model, "CPU", self._config())
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self._dtype = _DTYPE_NAMES.get(precision, precision)
        self._compiled[kind] = compiled
        if self.performance_hint == "THROUGHPUT":
            n_requests = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
            self._runners[kind] = ov.AsyncInferQueue(compiled, int(n_requests))
            if int(n_requests) > 1:
                latency = self._core.compile_model(model, "CPU", self._config("LATENCY"))
                self._single[kind] = latency.create_infer_request()
        else:
            self._runners[kind] = compiled.create_infer_request()
        return compiled

    def _run(self, kind: str, batch: np.ndarray) -> np.ndarray:
        if kind not in self._runners:
            self._compile(kind)
        runner = self._runners[kind]
        if self.performance_hint == "THROUGHPUT" and batch.shape[0] < len(runner) and kind in self._single:
            runner = self._single[kind]  # too few images to fill the streams: one request on all cores
        elif self.performance_hint == "THROUGHPUT":
            return self._run_streams(runner, batch)
        result = runner.infer({0: batch}, share_inputs=True)
        return np.array(result[0], dtype=np.float32, copy=True)

    @staticmethod
    def _run_streams(queue: Any, batch: np.ndarray) -> np.ndarray:
        """One image per request of the async queue (one request per stream), gathered in order.

        A stream that is free takes the next image, so streams slowed by other threads on their core
        share the batch unevenly instead of waiting for each other at its end.

        No Python callback is set on the queue: OpenVINO runs a callback on its stream thread under the
        GIL, and a compiled model destroyed (under the GIL) while one was still pending joined that thread
        forever, hanging the process. The queue's own callbacks only mark requests idle; the next idle
        request's id says whose output to read before it takes the next image.
        """
        outputs: list[np.ndarray | None] = [None] * batch.shape[0]
        holding: dict[int, int] = {}  # request id -> index of the image it ran last

        def collect(request_id: int) -> None:
            index = holding.pop(request_id, None)
            if index is not None:
                data = queue[request_id].get_output_tensor(0).data
                outputs[index] = np.array(data, dtype=np.float32, copy=True)

        for i in range(batch.shape[0]):
            request_id = queue.get_idle_request_id()  # waits (GIL released) for a free stream
            collect(request_id)
            holding[request_id] = i
            queue.start_async({0: batch[i : i + 1]}, userdata=i)
        queue.wait_all()
        for request_id in list(holding):
            collect(request_id)
        return np.concatenate(outputs)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Forward pass; ``float32 [N, num_labels]`` logits in input order."""
        if self._core is None:
            raise RuntimeError("OpenVinoEngine.infer called before load()")
        return self._run(self.check_batch(batch), np.ascontiguousarray(batch))

    def close(self) -> None:
        """Release compiled models and requests."""
        self._runners.clear()
        self._single.clear()
        self._compiled.clear()
        self._ov_model = self._core = None
