"""The KServe model: the handler contract (load, predict, metadata) as a thin adapter over the pipeline.

KServe's data plane calls :meth:`ImageClassifierModel.predict` for v1 (``dict`` payloads) and for v2
over gRPC (an ``InferRequest`` built from the ``ModelInferRequest``). REST v2 is served by
:mod:`predictor.routes` with the same codec (:mod:`predictor.protocol.v2`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from kserve import InferRequest, Model

from predictor.config import Settings
from predictor.errors import InvalidInput, PredictorError
from predictor.logs import RejectionLog, rejection_log, request_id_var
from predictor.middleware import record_rejection
from predictor.pipeline import Pipeline
from predictor.protocol import grpc_error, parse_v1, predictions_json, v2

logger = logging.getLogger(__name__)


class ImageClassifierModel(Model):
    """KServe model serving one image classifier through a :class:`Pipeline`.

    Args:
        settings: The server's settings.
        pipeline: What classifies.
        rejections: Where refused gRPC calls are logged (per interval, with the HTTP server's refusals);
            a log of its own when omitted.
    """

    def __init__(self, settings: Settings, pipeline: Pipeline, rejections: RejectionLog | None = None) -> None:
        super().__init__(settings.model_name)
        self.settings = settings
        self.pipeline = pipeline
        self.rejections = rejections or rejection_log(settings.rejection_log_interval_seconds)

    @property
    def ready(self) -> bool:
        """Loaded and not stopped, and the inference device still works (KServe's model-ready routes and
        the chart's readiness probe read this)."""
        pipeline = getattr(self, "pipeline", None)  # KServe's __init__ sets ready before ours runs
        return self._ready and (pipeline is None or pipeline.broken is None)

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value

    def load(self) -> bool:
        """Load and warm up the model; sets ``ready``."""
        self.pipeline.load()
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Called by KServe on unload (after the HTTP server drained)."""
        self.ready = False
        self.pipeline.ready = False

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None, response_headers=None):
        """v1 ``dict`` → v1 ``dict``; gRPC v2 ``InferRequest`` → ``ModelInferResponse``."""
        if isinstance(payload, InferRequest):
            if not payload.from_grpc:  # REST v2 has its own routes (predictor.routes); this is not reached
                raise InvalidInput(f"send v2 REST requests to /v2/models/{self.name}/infer")
            return await self._grpc(payload, headers or {})
        parsed = parse_v1(payload)
        results = await self.pipeline.classify(parsed.images, parsed.top_k)
        return {
            "predictions": predictions_json(results),
            "model_name": self.name,
            "model_version": self.pipeline.model_version,
        }

    async def _grpc(self, request: InferRequest, metadata: dict[str, str]) -> Any:
        """v2 over gRPC, counted with protocol="grpc" (gRPC calls bypass the HTTP middleware); a refused call
        is counted and logged as the middleware does, under the call's request id (:func:`grpc_request_id`)."""
        m, started, code = self.pipeline.metrics, time.perf_counter(), 200
        try:
            parsed = v2.parse_grpc(request)
            results = await self.pipeline.classify(parsed.images, parsed.top_k)
            return v2.encode_grpc(results, parsed, self.name, self.pipeline.model_version)
        except PredictorError as e:
            code = e.status_code
            token = request_id_var.set(grpc_request_id(metadata, request))
            try:
                record_rejection(m, self.rejections, self.name, e, "gRPC", "ModelInfer")
            finally:
                request_id_var.reset(token)
            raise grpc_error(e) from None
        except Exception:
            code = 500
            raise
        finally:
            m.observe_request(self.name, "grpc", code, time.perf_counter() - started)

    def get_input_types(self) -> list[dict]:
        """v2 metadata inputs."""
        return self._metadata()["inputs"]

    def get_output_types(self) -> list[dict]:
        """v2 metadata outputs."""
        return self._metadata()["outputs"]

    def _metadata(self) -> dict:
        spec = self.pipeline.spec
        hw = spec.crop_hw if spec is not None else (-1, -1)
        return v2.metadata(self.name, self.pipeline.model_version, hw)


def grpc_request_id(metadata: dict[str, str], request: InferRequest) -> str:
    """A gRPC call's request id: its ``x-request-id`` metadata (at most 128 characters), else the
    ``ModelInferRequest``'s ``id``, else a new random one."""
    sent = metadata.get("x-request-id") or request.id or ""
    return str(sent)[:128] or os.urandom(16).hex()
