"""KServe v2 over gRPC (KServe's own server and client) reaches the same pipeline: raw JPEG bytes in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from tests.conftest import free_port, start_server


def test_grpc_v2_with_raw_jpeg_bytes(default_model_dir: Path, tmp_path: Path, cat_jpeg: bytes) -> None:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    grpc_port = free_port()
    server = start_server(default_model_dir, tmp_path, enable_grpc="true", grpc_port=grpc_port)
    try:
        rest = server.client.post("/classify", files={"image": ("c.jpg", cat_jpeg)}).json()["predictions"][0]

        async def call() -> dict:
            client = InferenceGRPCClient(f"127.0.0.1:{grpc_port}")
            inp = InferInput("image", [1], "BYTES")
            inp.set_data_from_numpy(np.array([cat_jpeg], dtype=np.object_), binary_data=True)
            req = InferRequest(model_name="classifier", infer_inputs=[inp], parameters={"top_k": 5})
            resp = await client.infer(req)
            await client.close()
            return {o.name: o.as_numpy() for o in resp.outputs}

        out = asyncio.run(call())
        labels = [x.decode() if isinstance(x, bytes) else str(x) for x in out["label"].reshape(-1)]
        assert labels == [p["label"] for p in rest]
        np.testing.assert_allclose(out["score"].reshape(-1), [p["score"] for p in rest], atol=1e-4)
        assert out["class_id"].dtype == np.int64
    finally:
        server.stop()
