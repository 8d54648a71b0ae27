"""ONNX Runtime engine: the model exported once to ONNX, cached by content.

* Export: torch → ONNX (TorchScript exporter, opset 17, dynamic batch) as ``model.onnx`` (float32
  ``[N,3,H,W]`` input), plus ``model_uint8.onnx``: the same graph with ``Cast → Transpose →
  Mul → Sub`` prepended, so uint8 NHWC pixels go in and normalisation runs inside the session.
* CPU: fp32 (ONNX Runtime has no fast bf16 kernels for CPU convolutions). CUDA (when
  ``onnxruntime-gpu`` is installed): ``CUDAExecutionProvider``, fp32 or fp16 (weights converted at
  load, inputs and outputs kept as they are).
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

OPSET = 17
FLOAT_FILE = "model.onnx"
UINT8_FILE = "model_uint8.onnx"


def add_uint8_input(model: Any, spec: PreprocessSpec, check: bool = True) -> Any:
    """Return a copy of an ONNX model whose input is uint8 ``[N,H,W,3]``, normalised inside the graph.

    Args:
        model: ONNX model with one float32 ``[N,3,H,W]`` input.
        spec: Preprocessing spec (normalisation constants, input size).
        check: Run the ONNX checker (off for fp16-converted graphs, which ORT runs but which are
            not topologically sorted).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    old_input = graph.input[0]
    name = old_input.name
    h, w = spec.crop_hw
    scale, shift = spec.scale_shift()
    new_input = helper.make_tensor_value_info("image_uint8", TensorProto.UINT8, ["batch", h, w, 3])
    nodes = [
        helper.make_node("Cast", ["image_uint8"], ["_pp_float"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["_pp_float"], ["_pp_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["_pp_nchw", "_pp_scale"], ["_pp_scaled"]),
        helper.make_node("Sub", ["_pp_scaled", "_pp_shift"], [name]),
    ]
    graph.initializer.extend(
        [
            numpy_helper.from_array(scale.reshape(1, 3, 1, 1), "_pp_scale"),
            numpy_helper.from_array(shift.reshape(1, 3, 1, 1), "_pp_shift"),
        ]
    )
    graph.input.remove(old_input)
    graph.input.insert(0, new_input)
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)
    if check:
        onnx.checker.check_model(model)
    return model


def check_session_providers(session: Any, device: str) -> None:
    """Fail unless ``session`` really runs on ``device``.

    ``get_available_providers()`` lists what was compiled in, not what loads: when the CUDA provider's
    libraries fail to load, onnxruntime warns and silently runs the session on the CPU. What the
    session actually uses is ``session.get_providers()``, best first.

    Raises:
        ValueError: a CUDA session whose first provider is not ``CUDAExecutionProvider``.
    """
    used = session.get_providers()
    if device == "cuda" and (not used or used[0] != "CUDAExecutionProvider"):
        raise ValueError(
            f"onnxruntime could not load its CUDA provider (the session runs on {used}): check that the CUDA "
            "and cuDNN libraries onnxruntime-gpu needs are installed, or use backend=torch"
        )


class OnnxRuntimeEngine(Engine):
    """Runs the model as ONNX in ONNX Runtime."""

    def __init__(
        self,
        spec: PreprocessSpec,
        model_dir: Path,
        cache_dir: Path,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int = 0,
        memory_fraction: float = 1.0,
    ) -> None:
        """Configure (nothing heavy happens before :meth:`load`).

        Args:
            spec: Preprocessing spec (input size, normalisation).
            model_dir: Hugging Face model directory.
            cache_dir: Artefact cache root.
            device: ``cpu`` or ``cuda``.
            precision: One the registry lists for the device (:mod:`predictor.engine.registry` checks).
            threads: Intra-op threads on CPU; 0 = ONNX Runtime's default (all cores).
            memory_fraction: CUDA: share of the device's memory the CUDA provider's arena may hold
                (``gpu_mem_limit``); 1 = no limit of our own.
        """
        super().__init__(spec)
        device = device.split(":")[0]
        self.model_dir = Path(model_dir)
        self.cache_dir = Path(cache_dir)
        self.device = device
        self.precision = precision
        self.threads = threads
        if not 0 < memory_fraction <= 1:
            raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
        self.memory_fraction = memory_fraction
        self._shrink_arena = False
        self.exported: bool | None = None
        """After :meth:`load`: True if this load exported the ONNX files, False if the cache was reused."""
        self.artifact_dir: Path | None = None
        self._sessions: dict[str, Any] = {}

    @property
    def info(self) -> EngineInfo:
        """Backend, device and dtype in use."""
        return EngineInfo(
            backend="onnxruntime", device=self.device, dtype="float16" if self.precision == "fp16" else "float32"
        )

    def cache_key(self, content_hash: str) -> str:
        """Artefact key: model content, input size, opset and the exporting torch's version."""
        import torch

        h, w = self.input_hw
        return f"onnx-{content_hash[:20]}-{h}x{w}-opset{OPSET}-torch{torch.__version__.split('+')[0]}"

    def _export(self, out_dir: Path) -> None:
        import onnx
        import torch

        from predictor.engine.hf_model import load_logits_module

        h, w = self.input_hw
        module = load_logits_module(self.model_dir)
        with torch.inference_mode(), warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning, UserWarning, torch.jit.TracerWarning):
                warnings.simplefilter("ignore", category)
            torch.onnx.export(
                module,
                (torch.zeros(1, 3, h, w),),
                str(out_dir / FLOAT_FILE),
                input_names=["pixel_values"],
                output_names=["logits"],
                dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,  # the dynamo exporter needs onnxscript; TorchScript export is enough here
            )
        onnx.save(add_uint8_input(onnx.load(str(out_dir / FLOAT_FILE)), self.spec), str(out_dir / UINT8_FILE))
        logger.info("exported %s to ONNX in %s", self.model_dir, out_dir)

    def _providers(self) -> list[Any]:
        """Execution providers to ask for, checked against what this onnxruntime build has compiled in."""
        import onnxruntime as ort

        if self.device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("onnxruntime has no CUDAExecutionProvider here: install onnxruntime-gpu")
            options: dict[str, Any] = {"cudnn_conv_algo_search": "EXHAUSTIVE"}
            if self.memory_fraction < 1:
                import torch

                total = torch.cuda.get_device_properties(0).total_memory
                options["gpu_mem_limit"] = str(int(total * self.memory_fraction))
                options["arena_extend_strategy"] = "kSameAsRequested"  # grow by what is needed, within the limit
            return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _session(self, kind: str) -> Any:
        import onnxruntime as ort

        if kind in self._sessions:
            return self._sessions[kind]
        source: Any
        if self.precision == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            # Convert the float graph (inputs/outputs stay float32), then put the uint8 front on it.
            model = convert_float_to_float16(onnx.load(str(self.artifact_dir / FLOAT_FILE)), keep_io_types=True)
            if kind == "uint8":
                model = add_uint8_input(model, self.spec, check=False)
            source = model.SerializeToString()
        else:
            source = str(self.artifact_dir / (UINT8_FILE if kind == "uint8" else FLOAT_FILE))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads > 0:
            options.intra_op_num_threads = self.threads
        session = ort.InferenceSession(source, sess_options=options, providers=self._providers())
        check_session_providers(session, self.device)
        self._sessions[kind] = session
        return session

    def load(self) -> None:
        """Export (or reuse) the ONNX files and open the uint8 session."""
        self._providers()  # before the (slow) export: a missing CUDA provider fails at once
        key = self.cache_key(model_content_hash(self.model_dir))
        self.artifact_dir, self.exported = get_or_build(self.cache_dir, key, self._export)
        self._session("uint8")
        logger.info(
            "onnxruntime engine: %s (%s ONNX), %s on %s, threads=%s",
            self.model_dir,
            "exported" if self.exported else "cached",
            self.precision,
            self.device,
            self.threads or "default",
        )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Forward pass; ``float32 [N, num_labels]`` logits in input order."""
        if self.artifact_dir is None:
            raise RuntimeError("OnnxRuntimeEngine.infer called before load()")
        session = self._session(self.check_batch(batch))
        run_options = None
        if self._shrink_arena:  # after an out-of-memory error: give the arena's free chunks back after this run
            import onnxruntime as ort

            run_options = ort.RunOptions()
            run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "gpu:0")
            self._shrink_arena = False
        (logits,) = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(batch)}, run_options)
        return np.asarray(logits, dtype=np.float32)

    def release_memory(self) -> None:
        """CUDA: shrink the provider's memory arena at the end of the next run (after out of memory)."""
        self._shrink_arena = self.device == "cuda"

    def close(self) -> None:
        """Drop the sessions."""
        self._sessions.clear()
