"""The KServe model: the handler contract (load, predict, metadata) as a thin adapter over the pipeline.

KServe's data plane calls :meth:`ImageClassifierModel.predict` for v1 (``dict`` payloads) and for v2
requests it decoded itself (gRPC, ``InferRequest``). The v2 REST route with binary BYTES is served by
:mod:`predictor.routes` instead, since KServe's binary decoder refuses raw image bytes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve import errors as kserve_errors

from predictor.config import Settings
from predictor.errors import InvalidInput, PredictorError
from predictor.pipeline import Pipeline
from predictor.protocol import INPUT_BYTES, ParsedRequest, parse_v1, predictions_json, v2_metadata

logger = logging.getLogger(__name__)


class ImageClassifierModel(Model):
    """KServe model serving one image classifier through a :class:`Pipeline`."""

    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        super().__init__(settings.model_name)
        self.settings = settings
        self.pipeline = pipeline

    def load(self) -> bool:
        """Load and warm up the model; sets ``ready``."""
        self.pipeline.load()
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Called by KServe on unload (after the HTTP server drained)."""
        self.ready = False
        self.pipeline.ready = False
        self.pipeline.stop_background_work()

    async def predict(
        self, payload: dict | InferRequest, headers: dict[str, str] | None = None, response_headers=None
    ) -> dict | InferResponse:
        """v1 ``dict`` → v1 ``dict``; v2 ``InferRequest`` → ``InferResponse``."""
        if isinstance(payload, InferRequest) and payload.from_grpc:
            return await self._counted_grpc(payload)
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload)
        parsed = parse_v1(payload)
        results = await self.pipeline.classify(parsed.images, parsed.top_k)
        return {
            "predictions": predictions_json(results),
            "model_name": self.name,
            "model_version": self.pipeline.model_version,
        }

    async def _counted_grpc(self, req: InferRequest) -> InferResponse:
        """gRPC requests bypass the HTTP middleware: count them here with protocol="grpc"."""
        m, started, code = self.pipeline.metrics, time.perf_counter(), 200
        try:
            return await self._predict_v2(req)
        except PredictorError as e:
            code = e.status_code
            m.rejections.labels(self.name, e.reason).inc()
            # KServe's gRPC interceptor maps its own error types onto status codes.
            if e.status_code >= 503:
                unavailable = kserve_errors.ServerNotReady(e.message)
                unavailable.reason = str(unavailable)  # the interceptor reads .reason
                raise unavailable from None
            if e.status_code < 500:
                raise kserve_errors.InvalidInput(e.message) from None
            raise
        except Exception:
            code = 500
            raise
        finally:
            m.observe_request(self.name, "grpc", code, time.perf_counter() - started)

    async def _predict_v2(self, req: InferRequest) -> InferResponse:
        if len(req.inputs) != 1:
            raise InvalidInput(f"request has {len(req.inputs)} inputs; send exactly one image tensor")
        inp = req.inputs[0]
        arr = inp.as_numpy()
        if inp.datatype == "BYTES":
            images: list[Any] = [x if isinstance(x, bytes) else str(x).encode() for x in arr.reshape(-1)]
        elif inp.datatype in ("UINT8", "FP32"):
            images = list(arr)
        else:
            raise InvalidInput(f"input datatype {inp.datatype} is not accepted: BYTES, UINT8 or FP32")
        params = req.parameters or {}
        top_k = params.get("top_k")
        if hasattr(top_k, "int64_param"):  # gRPC InferParameter
            top_k = int(top_k.int64_param)
        parsed = ParsedRequest(images=images, top_k=top_k)
        results = await self.pipeline.classify(parsed.images, parsed.top_k)
        n, k = len(results), len(results[0])
        outputs = [
            InferOutput("label", [n, k], "BYTES", data=[p.label for r in results for p in r]),
            InferOutput("score", [n, k], "FP32"),
            InferOutput("class_id", [n, k], "INT64"),
        ]
        outputs[1].set_data_from_numpy(
            np.array([[p.score for p in r] for r in results], dtype=np.float32), binary_data=False
        )
        outputs[2].set_data_from_numpy(
            np.array([[p.class_id for p in r] for r in results], dtype=np.int64), binary_data=False
        )
        return InferResponse(
            response_id=req.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            model_version=self.pipeline.model_version,
        )

    def get_input_types(self) -> list[dict]:
        """v2 metadata inputs."""
        return self._metadata()["inputs"]

    def get_output_types(self) -> list[dict]:
        """v2 metadata outputs."""
        return self._metadata()["outputs"]

    def _metadata(self) -> dict:
        spec = self.pipeline.spec
        hw = spec.crop_hw if spec is not None else (-1, -1)
        return v2_metadata(self.name, self.pipeline.model_version, hw)


__all__ = ["INPUT_BYTES", "ImageClassifierModel"]
