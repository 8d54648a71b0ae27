"""The HTTP routes (/classify, v2 REST JSON and binary) and KServe's health and metadata routes, against a
real server process over real HTTP, with the embedded default model."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from tests.support.servers import ServerProcess, jpeg_bytes
from tests.support.v2 import CAT_CLASSES, decode_v2_binary, v2_binary_request


def classify(server: ServerProcess, image: bytes, **params) -> dict:
    r = server.client.post("/classify", params=params, files={"image": ("cat.jpg", image, "image/jpeg")})
    assert r.status_code == 200, r.text
    return r.json()


def v2_json(server: ServerProcess, images: list[bytes], **params) -> dict:
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images)],
                "data": [base64.b64encode(i).decode() for i in images],
            }
        ]
    }
    if params:
        body["parameters"] = params
    r = server.client.post(f"/v2/models/{server.model_name}/infer", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def outputs(resp: dict) -> dict[str, list]:
    return {o["name"]: o["data"] for o in resp["outputs"]}


def test_classify_returns_top5_cat_with_model_name_and_version(default_server: ServerProcess, cat_jpeg: bytes):
    body = classify(default_server, cat_jpeg)
    assert body["model"] == "classifier" and len(body["model_version"]) == 12
    preds = body["predictions"][0]
    assert len(preds) == 5
    assert preds[0]["label"] in CAT_CLASSES, preds
    assert [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True)
    assert all(set(p) == {"label", "score", "class_id"} for p in preds)


def test_coffee_is_espresso(default_server: ServerProcess, photos):
    assert classify(default_server, jpeg_bytes(photos["coffee"]))["predictions"][0][0]["label"] == "espresso"


def test_top_k_query_changes_the_count(default_server: ServerProcess, cat_jpeg: bytes):
    assert len(classify(default_server, cat_jpeg, top_k=2)["predictions"][0]) == 2
    assert len(classify(default_server, cat_jpeg, top_k=10)["predictions"][0]) == 10


def test_classify_accepts_several_images_and_a_raw_body(default_server: ServerProcess, photos, cat_jpeg):
    coffee = jpeg_bytes(photos["coffee"])
    r = default_server.client.post("/classify", files=[("image", ("a.jpg", cat_jpeg)), ("image", ("b.jpg", coffee))])
    assert r.status_code == 200
    first, second = r.json()["predictions"]
    assert first[0]["label"] in CAT_CLASSES and second[0]["label"] == "espresso"
    raw = default_server.client.post("/classify", content=coffee, headers={"Content-Type": "image/jpeg"})
    assert raw.json()["predictions"][0][0]["label"] == "espresso"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "GIF"])
def test_other_formats_decode(default_server: ServerProcess, photos, fmt: str):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photos["chelsea"]).save(buf, format=fmt)
    assert classify(default_server, buf.getvalue())["predictions"][0][0]["label"] in CAT_CLASSES


def test_v2_json(default_server: ServerProcess, cat_jpeg: bytes, photos):
    resp = v2_json(default_server, [cat_jpeg, jpeg_bytes(photos["coffee"])], top_k=3)
    assert resp["model_name"] == "classifier"
    out = {o["name"]: o for o in resp["outputs"]}
    assert out["label"]["datatype"] == "BYTES" and out["label"]["shape"] == [2, 3]
    assert out["score"]["datatype"] == "FP32" and out["class_id"]["datatype"] == "INT64"
    assert out["label"]["data"][0] in CAT_CLASSES and out["label"]["data"][3] == "espresso"


def test_v2_binary_with_raw_jpeg_bytes(default_server: ServerProcess, cat_jpeg: bytes, photos):
    body, headers = v2_binary_request([cat_jpeg, jpeg_bytes(photos["coffee"])], binary_outputs=True, top_k=4)
    r = default_server.client.post("/v2/models/classifier/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    assert orjson.loads(r.content[:n])["id"] == "req-7"
    out = decode_v2_binary(r.content, n)
    assert out["label"][0] in CAT_CLASSES and out["label"][4] == "espresso"
    assert out["score"].shape == (8,) and out["class_id"].shape == (8,)


def test_v2_binary_input_json_output(default_server: ServerProcess, cat_jpeg: bytes):
    body, headers = v2_binary_request([cat_jpeg], binary_outputs=False)
    r = default_server.client.post("/v2/models/classifier/infer", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert outputs(r.json())["label"][0] in CAT_CLASSES


def test_v2_uint8_and_fp32_tensors(default_server: ServerProcess, photos):
    from predictor.preprocess import PreprocessSpec, prepare_array

    spec = PreprocessSpec.from_model_dir(default_server_model_dir())
    pixels = photos["chelsea"][::4, ::4]  # any size: resized and cropped by the server
    r = default_server.client.post(
        "/v2/models/classifier/infer",
        json={
            "inputs": [
                {
                    "name": "image_uint8",
                    "datatype": "UINT8",
                    "shape": [1, *pixels.shape],
                    "data": pixels.ravel().tolist(),
                }
            ]
        },
    )
    assert r.status_code == 200, r.text
    assert outputs(r.json())["label"][0] in CAT_CLASSES
    chw = spec.normalize(prepare_array(photos["chelsea"], spec)[None])
    r = default_server.client.post(
        "/v2/models/classifier/infer",
        json={
            "inputs": [
                {"name": "image_fp32", "datatype": "FP32", "shape": list(chw.shape), "data": chw.ravel().tolist()}
            ]
        },
    )
    assert r.status_code == 200, r.text
    assert outputs(r.json())["label"][0] in CAT_CLASSES


def default_server_model_dir():
    from tests.support.servers import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR


def test_same_image_same_answer_through_every_protocol(default_server: ServerProcess, cat_jpeg: bytes):
    ref = classify(default_server, cat_jpeg)["predictions"][0]
    labels = [p["label"] for p in ref]
    scores = np.array([p["score"] for p in ref])
    j = outputs(v2_json(default_server, [cat_jpeg]))
    body, headers = v2_binary_request([cat_jpeg], binary_outputs=True)
    r = default_server.client.post("/v2/models/classifier/infer", content=body, headers=headers)
    b = decode_v2_binary(r.content, int(r.headers["inference-header-content-length"]))
    v1 = default_server.client.post(
        "/v1/models/classifier:predict", json={"instances": [{"image": {"b64": base64.b64encode(cat_jpeg).decode()}}]}
    )
    v1p = v1.json()["predictions"][0]
    for got_labels, got_scores in [
        (j["label"], j["score"]),
        (b["label"], b["score"]),
        ([p["label"] for p in v1p], [p["score"] for p in v1p]),
    ]:
        assert list(got_labels) == labels
        np.testing.assert_allclose(np.asarray(got_scores, dtype=np.float64), scores, atol=1e-4)


def test_metadata_and_health(default_server: ServerProcess):
    c = default_server.client
    assert c.get("/v2/health/live").status_code == 200
    assert c.get("/v2/health/ready").status_code == 200
    assert c.get("/v2/models/classifier/ready").status_code == 200
    meta = c.get("/v2/models/classifier").json()
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        "image": "BYTES",
        "image_uint8": "UINT8",
        "image_fp32": "FP32",
    }
    assert [o["name"] for o in meta["outputs"]] == ["label", "score", "class_id"]


def test_request_id_is_echoed_or_generated(default_server: ServerProcess, cat_jpeg: bytes):
    r = default_server.client.post(
        "/classify", files={"image": ("c.jpg", cat_jpeg)}, headers={"X-Request-Id": "abc-123"}
    )
    assert r.headers["x-request-id"] == "abc-123"
    r = default_server.client.get("/v2/health/ready")
    assert len(r.headers["x-request-id"]) == 32


def test_startup_log_line_names_model_device_dtype_batching_and_load_time(default_server: ServerProcess):
    line = next(ln for ln in default_server.log().splitlines() if "loaded model classifier" in ln)
    for word in ("backend=", "device=", "dtype=", "max_batch_size=", "max_batch_delay_ms=", "load="):
        assert word in line, line
