"""The KServe model adapter (predictor/model.py): v1 over REST and v2 over gRPC reach the same pipeline."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import pytest

from tests.support.servers import ServerProcess, free_port, start_server
from tests.support.v2 import CAT_CLASSES


@pytest.fixture(scope="module")
def grpc_server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    grpc_port = free_port()
    server = start_server(default_model_dir, tmp_path_factory.mktemp("grpc"), enable_grpc="true", grpc_port=grpc_port)
    yield server, grpc_port
    server.stop()


def test_grpc_v2_with_raw_jpeg_bytes(grpc_server: tuple[ServerProcess, int], cat_jpeg: bytes) -> None:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    server, grpc_port = grpc_server
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


def test_grpc_bad_image_is_invalid_argument_and_counted(grpc_server: tuple[ServerProcess, int]) -> None:
    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    server, grpc_port = grpc_server

    async def call() -> None:
        client = InferenceGRPCClient(f"127.0.0.1:{grpc_port}")
        inp = InferInput("image", [1], "BYTES")
        inp.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_), binary_data=True)
        try:
            await client.infer(InferRequest(model_name="classifier", infer_inputs=[inp]))
        finally:
            await client.close()

    try:
        asyncio.run(call())
    except grpc.aio.AioRpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a decodable image" in (e.details() or "")
    else:
        raise AssertionError("a bad image over gRPC must be refused")
    assert server.metric("classifier_requests_total", protocol="grpc", code="400") == 1
    assert server.client.get("/v2/health/ready").status_code == 200


def test_v1(default_server: ServerProcess, cat_jpeg: bytes):
    r = default_server.client.post(
        "/v1/models/classifier:predict", json={"instances": [{"image": {"b64": base64.b64encode(cat_jpeg).decode()}}]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0][0]["label"] in CAT_CLASSES
