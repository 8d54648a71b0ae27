"""Every bad input gets a clear 4xx with {"error": ...}, and the server keeps serving after each."""

from __future__ import annotations

import base64
import io
import struct

import orjson
import pytest
from PIL import Image

from tests.support.servers import ServerProcess


def _bomb_png() -> bytes:
    """A tiny PNG whose header declares 30000x30000 pixels (zlib-compressed zeros)."""
    img = Image.new("1", (30000, 30000))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _gif_text() -> bytes:
    return b"GIF89a this is not really a gif"


def _v2(images_b64: list, shape: list | None = None, **extra) -> dict:
    inp = {"name": "image", "datatype": "BYTES", "shape": shape or [len(images_b64)], "data": images_b64}
    inp.update(extra)
    return {"inputs": [inp]}


def _binary(header: dict, raw: bytes) -> tuple[bytes, dict[str, str]]:
    h = orjson.dumps(header)
    return h + raw, {"Inference-Header-Content-Length": str(len(h))}


CASES = {
    # name: (method, path, kwargs, status, words the message must contain)
    "classify: not an image": (
        "/classify",
        {"files": {"image": ("x.jpg", b"hello world, not a jpeg")}},
        400,
        "not a decodable image",
    ),
    "classify: truncated jpeg": (
        "/classify",
        {"files": {"image": ("x.jpg", "CAT[:2000]")}},
        400,
        "corrupt or truncated",
    ),
    "classify: empty file": ("/classify", {"files": {"image": ("x.jpg", b"")}}, 400, "empty"),
    "classify: decompression bomb": ("/classify", {"files": {"image": ("x.png", "BOMB")}}, 400, "over the limit"),
    "classify: fake gif": ("/classify", {"files": {"image": ("x.gif", _gif_text())}}, 400, "image"),
    "classify: missing field": ("/classify", {"files": {"picture": ("x.jpg", "CAT")}}, 400, "field 'image' is missing"),
    "classify: json body": ("/classify", {"json": {"image": "x"}}, 415, "multipart/form-data"),
    "classify: text body": (
        "/classify",
        {"content": b"hi", "headers": {"Content-Type": "text/plain"}},
        415,
        "not accepted",
    ),
    "classify: bad top_k": ("/classify?top_k=abc", {"files": {"image": ("x.jpg", "CAT")}}, 400, "top_k"),
    "classify: top_k zero": ("/classify?top_k=0", {"files": {"image": ("x.jpg", "CAT")}}, 400, "top_k"),
    "classify: too many images": ("/classify", {"files": "MANY"}, 400, "over the limit of"),
    "v2: bad base64": ("/v2/models/classifier/infer", {"json": _v2(["***not base64***"])}, 400, "not valid base64"),
    "v2: zero images": ("/v2/models/classifier/infer", {"json": _v2([], shape=[0])}, 400, "no images"),
    "v2: shape mismatch": ("/v2/models/classifier/infer", {"json": _v2(["CAT64"], shape=[3])}, 400, "says 3 images"),
    "v2: wrong datatype": (
        "/v2/models/classifier/infer",
        {"json": {"inputs": [{"name": "image", "datatype": "INT32", "shape": [1], "data": [1]}]}},
        400,
        "accepted: BYTES, UINT8, FP32",
    ),
    "v2: uint8 wrong rank": (
        "/v2/models/classifier/infer",
        {"json": {"inputs": [{"name": "image_uint8", "datatype": "UINT8", "shape": [1, 4, 4], "data": [0] * 16}]}},
        400,
        "[N,H,W,3]",
    ),
    "v2: fp32 wrong size": (
        "/v2/models/classifier/infer",
        {"json": {"inputs": [{"name": "image_fp32", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}]}},
        400,
        "FP32 [3,",
    ),
    "v2: uint8 data count": (
        "/v2/models/classifier/infer",
        {"json": {"inputs": [{"name": "image_uint8", "datatype": "UINT8", "shape": [1, 4, 4, 3], "data": [0] * 5}]}},
        400,
        "needs 48 values",
    ),
    "v2: not json": (
        "/v2/models/classifier/infer",
        {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
        400,
        "not valid JSON",
    ),
    "v2: no inputs": ("/v2/models/classifier/infer", {"json": {"outputs": []}}, 400, "inputs"),
    "v2: unknown output": (
        "/v2/models/classifier/infer",
        {"json": {**_v2(["CAT64"]), "outputs": [{"name": "logits"}]}},
        400,
        "unknown output",
    ),
    "v2: bad top_k": (
        "/v2/models/classifier/infer",
        {"json": {**_v2(["CAT64"]), "parameters": {"top_k": "five"}}},
        400,
        "top_k",
    ),
    "v2: unknown model": ("/v2/models/nope/infer", {"json": _v2(["CAT64"])}, 404, "not served here"),
    "v2 binary: bad header length": (
        "/v2/models/classifier/infer",
        {"content": b"{}", "headers": {"Inference-Header-Content-Length": "99"}},
        400,
        "outside the body",
    ),
    "v2 binary: truncated element": (
        "/v2/models/classifier/infer",
        {
            "binary": (
                {
                    "inputs": [
                        {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 8}}
                    ]
                },
                struct.pack("<I", 500) + b"abcd",
            )
        },
        400,
        "declares 500 bytes",
    ),
    "v2 binary: size past end": (
        "/v2/models/classifier/infer",
        {
            "binary": (
                {
                    "inputs": [
                        {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 999}}
                    ]
                },
                b"abc",
            )
        },
        400,
        "exceeds the binary data",
    ),
    "v1: no instances": ("/v1/models/classifier:predict", {"json": {"images": []}}, 400, "instances"),
    "v1: bad base64": (
        "/v1/models/classifier:predict",
        {"json": {"instances": [{"image": {"b64": "%%%"}}]}},
        400,
        "not valid base64",
    ),
    "v1: not an image": (
        "/v1/models/classifier:predict",
        {"json": {"instances": [{"image": {"b64": base64.b64encode(b"plain text").decode()}}]}},
        400,
        "not a decodable image",
    ),
}


@pytest.fixture(scope="module")
def materials(cat_jpeg: bytes) -> dict[str, bytes]:
    return {"CAT": cat_jpeg, "BOMB": _bomb_png(), "CAT64": base64.b64encode(cat_jpeg).decode()}


def _materialize(value, m: dict):
    if isinstance(value, str) and value in m:
        return m[value]
    if isinstance(value, str) and value.startswith("CAT["):
        return m["CAT"][: int(value[5:-1])]
    if isinstance(value, dict):
        return {k: _materialize(v, m) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialize(v, m) for v in value]
    if isinstance(value, tuple):
        return tuple(_materialize(v, m) for v in value)
    return value


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(case: str, default_server: ServerProcess, materials):
    path, kwargs, status, words = CASES[case]
    kwargs = _materialize(kwargs, materials)
    if kwargs.get("files") == "MANY":
        kwargs["files"] = [("image", ("x.jpg", materials["CAT"])) for _ in range(65)]
    if "binary" in kwargs:
        body, headers = _binary(*kwargs.pop("binary"))
        kwargs.update(content=body, headers=headers)
    r = default_server.client.post(path, **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert words.lower() in err.lower(), err
    default_server.assert_healthy(materials["CAT"])


def test_body_over_max_request_bytes_is_413(default_server: ServerProcess, cat_jpeg: bytes):
    big = b"\xff" * (33 * 1024 * 1024)
    r = default_server.client.post("/classify", files={"image": ("big.jpg", big)})
    assert r.status_code == 413 and "max_request_bytes" in r.json()["error"]
    r = default_server.client.post(
        "/v1/models/classifier:predict", content=b"x" * (33 * 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    default_server.assert_healthy(cat_jpeg)


def test_client_errors_are_counted_by_reason_and_code(default_server: ServerProcess, cat_jpeg: bytes):
    before = default_server.metric("classifier_rejections_total", reason="invalid_input")
    timed_before = default_server.metric("classifier_request_duration_seconds_count", protocol="classify")
    r = default_server.client.post("/classify", files={"image": ("x.jpg", b"garbage")})
    assert r.status_code == 400
    assert default_server.metric("classifier_rejections_total", reason="invalid_input") == before + 1
    # Counted, not timed: the latency histogram describes answers, not rejections.
    assert default_server.metric("classifier_request_duration_seconds_count", protocol="classify") == timed_before
    assert default_server.metric("classifier_requests_total", protocol="classify", code="400") >= 1
    assert "Traceback" not in default_server.log(), "a client mistake must never produce a traceback"


def test_unknown_routes_and_methods_answer_json_saying_what_is_served(default_server: ServerProcess, cat_jpeg: bytes):
    r = default_server.client.post("/predict", content=b"x")
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert "no route POST /predict" in err and "POST /classify" in err and "/v2/models/classifier/infer" in err
    r = default_server.client.get("/classify")
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "POST"
    assert r.json()["error"] == "method GET /classify is not allowed: this path takes POST (Allow)"
    long = "/x" * 5000
    assert len(default_server.client.get(long).json()["error"]) < 600, "the path is quoted cut short"
    default_server.assert_healthy(cat_jpeg)


def test_x_gzip_is_gzip_and_other_codings_are_415_with_accept_encoding(default_server: ServerProcess, cat_jpeg: bytes):
    import gzip

    body = orjson.dumps(_v2([base64.b64encode(cat_jpeg).decode()]))
    url = "/v2/models/classifier/infer"
    r = default_server.client.post(url, content=gzip.compress(body), headers={"Content-Encoding": "x-gzip"})
    assert r.status_code == 200, r.text
    for coding in ("br", "gzip, gzip", "zstd"):
        r = default_server.client.post(url, content=body, headers={"Content-Encoding": coding})
        assert r.status_code == 415, r.text
        assert r.headers["accept-encoding"] == "gzip, deflate"
        assert "send gzip, deflate or an uncompressed body" in r.json()["error"]
    default_server.assert_healthy(cat_jpeg)
