"""Break this process's CUDA context for real, through the real pipeline, and report what it did (GPU tests).

``python -m tests.support.broken_context MODEL_DIR`` serves one image on CUDA, then makes a kernel fail a
device-side assert (an out-of-bounds index: CUDA's sticky error 710, after which every call in the
process fails), and prints one JSON line: the answers the pipeline gave, whether later requests reached
the engine, and what readiness says. It runs in a process of its own because the context stays broken
until the process exits; it exits without cleaning up for the same reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from predictor.config import Settings
from predictor.engine.torch_engine import TorchEngine
from predictor.errors import PredictorError
from predictor.pipeline import Pipeline
from predictor.preprocess import PreprocessSpec


class AssertingEngine(TorchEngine):
    """The real CUDA engine; with ``trigger`` set, a forward pass first runs a kernel that fails an assert."""

    trigger = False
    calls = 0

    def infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Forward pass (after the failing kernel when triggered)."""
        self.calls += 1
        if self.trigger:
            x = torch.zeros(4, device=self.device)
            x[torch.tensor([10], device=self.device)] += 1  # index 10 of 4: device-side assert
        return super().infer(batch)


async def _scenario(pipeline: Pipeline, engine: AssertingEngine) -> dict[str, Any]:
    image = np.full((256, 256, 3), 90, np.uint8)
    await pipeline.start()
    out: dict[str, Any] = {"first": len(await pipeline.classify([image]))}
    engine.trigger = True
    for name in ("broken", "after"):
        calls = engine.calls
        try:
            await pipeline.classify([image])
            out[name] = {"status": 200}
        except PredictorError as e:
            out[name] = {"status": e.status_code, "reason": e.reason, "message": e.message}
        out[name]["reached_engine"] = engine.calls > calls
    out["pipeline_broken"] = pipeline.broken
    from predictor.model import ImageClassifierModel

    model = ImageClassifierModel(pipeline.settings, pipeline)
    model.ready = True  # loaded: only the device can make it not ready
    out["model_ready"] = model.ready
    return out


def main(model_dir: Path) -> None:
    settings = Settings(model_dir=model_dir, device="cuda", backend="torch", precision="fp32", max_batch_size=4)
    engine = AssertingEngine(PreprocessSpec.from_model_dir(model_dir), model_dir, "cuda", "fp32", max_batch_size=4)
    pipeline = Pipeline(settings, engine=engine)
    pipeline.load()
    print(json.dumps(asyncio.run(_scenario(pipeline, engine))), flush=True)
    os._exit(0)  # the context is broken: no clean-up on the device


if __name__ == "__main__":
    main(Path(sys.argv[1]))
