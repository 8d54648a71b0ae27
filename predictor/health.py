"""Liveness and readiness as one rule, whichever protocol asks.

* Not live: the inference device is unusable (a broken CUDA context), or the model, having been ready, has
  not been for more than ``liveness_not_ready_grace_seconds`` (unloaded, stopped), so that Kubernetes
  replaces the pod. Before the first ready it is live, however long loading takes.
* Not ready: the device is unusable, or the model is not loaded (loading, unloaded, draining).

The gRPC servicer's ``ServerLive``, ``ServerReady`` and ``ModelReady`` answer by it
(:class:`predictor.grpc_guard.GrpcHealth`); KServe's own answers say live and ready whatever the model's state.
The REST routes (:mod:`predictor.routes`) decide by the same conditions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from predictor.config import Settings
from predictor.errors import ModelNotFound

if TYPE_CHECKING:
    from predictor.pipeline import Pipeline


class Health:
    """The model's liveness and readiness, from the pipeline's state.

    Args:
        settings: The server's settings (the model's name, the liveness grace).
        pipeline: What serves the model.
    """

    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        self.settings = settings
        self.pipeline = pipeline

    def not_live(self) -> str | None:
        """Why the server is not live (a restart would help), or None while it is."""
        if self.pipeline.broken is not None:
            return f"the inference device is unusable: {self.pipeline.broken}"
        grace_s = self.settings.liveness_not_ready_grace_seconds
        down_s = self.pipeline.not_ready_seconds()
        if down_s is not None and down_s > grace_s:
            return (
                f"model {self.settings.model_name} has not been ready for {down_s:.0f} s (unloaded or stopped; "
                f"liveness_not_ready_grace_seconds={grace_s:g}): restart the container"
            )
        return None

    def not_ready(self) -> str | None:
        """Why the server (its one model) is not ready to serve, or None while it is."""
        if self.pipeline.broken is not None:
            return f"the inference device is unusable: {self.pipeline.broken}"
        if not self.pipeline.ready:
            return f"model {self.settings.model_name} is not ready: loading, unloaded or shutting down"
        return None

    def check_model(self, name: str, version: str | None = None) -> None:
        """Raise :class:`~predictor.errors.ModelNotFound` unless ``name`` (and ``version``, when given) is the
        model served here."""
        if name != self.settings.model_name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {self.settings.model_name!r}")
        if version not in (None, "", self.pipeline.model_version):
            raise ModelNotFound(f"model {name!r} has version {self.pipeline.model_version!r}, not {version!r}")
