"""The baseline "as users build it today": one request = one forward pass, no batching across requests.

``AutoImageProcessor`` + ``AutoModelForImageClassification`` behind a synchronous FastAPI handler (a
plain ``def``, so FastAPI runs it on its thread pool and concurrent requests run concurrent forward
passes), served by uvicorn with its defaults. Same ``/classify`` contract and answer shape as ours,
so the load generator drives both alike. The model runs on the GPU when there is one (fp32, as the
tutorials do), so "ours vs naive" compares servers on the same device; ``GET /info`` says which.

Usage::

    python -m bench.naive_server --model_dir models/resnet-50 --port 8090
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Query, UploadFile
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)


def create_app(model_dir: Path, model_name: str = "classifier", device: str = "auto") -> FastAPI:
    """Load the model and processor (the slow part) and return the FastAPI app.

    ``device``: ``auto`` (cuda when available, else cpu), ``cpu`` or ``cuda``.
    """
    import torch
    from PIL import Image, UnidentifiedImageError
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval().to(device)
    id2label = model.config.id2label
    logger.info(
        "naive server: model %s on %s, processor %s, torch threads %d, loaded in %.2f s",
        model_dir,
        device,
        type(processor).__name__,
        torch.get_num_threads(),
        time.perf_counter() - t0,
    )
    app = FastAPI()

    @app.get("/info")
    def info() -> dict[str, str]:
        return {"backend": "naive-torch", "device": device, "dtype": "float32"}

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/classify", response_model=None)
    def classify(
        image: list[UploadFile] = File(...),  # noqa: B008 - FastAPI's declaration style
        top_k: int = Query(5, ge=1, le=100),
    ) -> dict[str, Any] | JSONResponse:
        try:
            images = [Image.open(io.BytesIO(f.file.read())).convert("RGB") for f in image]
        except (UnidentifiedImageError, OSError) as e:
            return JSONResponse({"error": f"not a decodable image: {e}"}, status_code=400)
        inputs = processor(images=images, return_tensors="pt").to(device)
        with torch.no_grad():
            probs = model(**inputs).logits.softmax(-1)
        scores, ids = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        predictions = [
            [
                {"label": id2label[int(c)], "score": float(s), "class_id": int(c)}
                for s, c in zip(row_s.tolist(), row_c.tolist(), strict=True)
            ]
            for row_s, row_c in zip(scores, ids, strict=True)
        ]
        return {"model": model_name, "model_version": "naive", "predictions": predictions}

    return app


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: load the model, then serve until interrupted."""
    import uvicorn

    p = argparse.ArgumentParser(prog="python -m bench.naive_server", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", type=Path, required=True, help="Hugging Face model directory")
    p.add_argument("--model_name", default="classifier", help="name reported in answers")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = create_app(args.model_dir, args.model_name, args.device)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
