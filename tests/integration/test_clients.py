"""The clients people actually use, against a real server process, on real photos.

NVIDIA's ``tritonclient`` (HTTP and gRPC: the most used KServe v2 client) and KServe's own REST and gRPC
clients, each reading the answers its own way; every one must give the same top-1 and scores (1e-4) as
``/classify`` for the same file. Also the request and response compression tritonclient offers, and the
limits on compressed bodies (a zip bomb is refused without being inflated).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.servers import REPO, ServerProcess, free_port, start_server
from tests.support.v2 import CAT_CLASSES

MODEL = "classifier"


def in_client_process(code: str, **values: object) -> dict:
    """Run client ``code`` in its own Python process and return the JSON it prints.

    tritonclient's gRPC stubs and KServe's both register the v2 protocol's messages (package ``inference``)
    in protobuf's default descriptor pool, so the two cannot be imported into one process: each gRPC
    client runs in a process of its own, as it would in a user's program. ``values`` are given to the code
    as JSON-decoded globals (bytes as base64 strings).
    """
    prelude = "import base64, json, sys\nV = json.loads(sys.stdin.read())\n"
    r = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        input=json.dumps(values),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def served(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The default model with gRPC on; a 1 MiB body limit for the compression limits."""
    grpc_port = free_port()
    server = start_server(
        default_model_dir,
        tmp_path_factory.mktemp("clients"),
        enable_grpc="true",
        grpc_port=grpc_port,
        max_request_bytes=1024 * 1024,
    )
    yield server, grpc_port
    server.stop()


@pytest.fixture(scope="module")
def reference(served, photos) -> dict[str, list[dict]]:
    """``/classify`` answers (top-5) for the cat and the coffee: what every client must reproduce."""
    server, _ = served
    out = {}
    for name in ("chelsea", "coffee"):
        r = server.client.post("/classify", files={"image": (f"{name}.jpg", _jpeg(photos[name]))})
        assert r.status_code == 200, r.text
        out[name] = r.json()["predictions"][0]
    assert out["chelsea"][0]["label"] in CAT_CLASSES and out["coffee"][0]["label"] == "espresso"
    return out


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _same(labels, scores, class_ids, ref: list[dict]) -> None:
    labels = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(labels).reshape(-1)]
    assert labels == [p["label"] for p in ref]
    np.testing.assert_allclose(np.asarray(scores, dtype=np.float64).reshape(-1), [p["score"] for p in ref], atol=1e-4)
    assert np.asarray(class_ids).reshape(-1).tolist() == [p["class_id"] for p in ref]


# --- tritonclient HTTP ---------------------------------------------------------------------------------


def _triton_http(served):
    import tritonclient.http as httpclient

    server, _ = served
    return httpclient, httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")


@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-outputs", "json-outputs"])
def test_tritonclient_http_bytes_input(served, photos, reference, binary_out: bool) -> None:
    httpclient, client = _triton_http(served)
    inp = httpclient.InferInput("image", [2], "BYTES")
    inp.set_data_from_numpy(np.array([_jpeg(photos["chelsea"]), _jpeg(photos["coffee"])], dtype=np.object_))
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in ("label", "score", "class_id")]
    res = client.infer(MODEL, [inp], outputs=outs, parameters={"top_k": 5}, request_id="t-1")
    assert res.get_response()["id"] == "t-1"
    labels, scores, ids = (res.as_numpy(n) for n in ("label", "score", "class_id"))
    assert labels.shape == scores.shape == ids.shape == (2, 5)
    _same(labels[0], scores[0], ids[0], reference["chelsea"])
    _same(labels[1], scores[1], ids[1], reference["coffee"])


def test_tritonclient_http_uint8_tensor_input(served, photos, reference) -> None:
    """Pixels already at the model's size, as a UINT8 [N,H,W,3] tensor (no JPEG on the wire)."""
    httpclient, client = _triton_http(served)
    meta = client.get_model_metadata(MODEL)
    (fp32,) = [i for i in meta["inputs"] if i["datatype"] == "FP32"]
    h, w = fp32["shape"][2:]
    pixels = np.asarray(Image.fromarray(photos["coffee"]).resize((w, h), Image.BICUBIC), dtype=np.uint8)[None]
    inp = httpclient.InferInput("image_uint8", list(pixels.shape), "UINT8")
    inp.set_data_from_numpy(pixels, binary_data=True)
    res = client.infer(MODEL, [inp], outputs=[httpclient.InferRequestedOutput("label", binary_data=False)])
    assert res.as_numpy("label")[0][0] in (b"espresso", "espresso")


def test_tritonclient_http_metadata_and_health(served) -> None:
    _, client = _triton_http(served)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and {o["name"] for o in meta["outputs"]} == {"label", "score", "class_id"}
    assert client.get_server_metadata()["name"]


@pytest.mark.parametrize(("request_alg", "response_alg"), [("gzip", "gzip"), ("deflate", "deflate"), ("gzip", None)])
def test_tritonclient_http_compression(served, photos, reference, request_alg, response_alg) -> None:
    httpclient, client = _triton_http(served)
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([_jpeg(photos["chelsea"])], dtype=np.object_), binary_data=True)
    res = client.infer(
        MODEL,
        [inp],
        outputs=[httpclient.InferRequestedOutput(n, binary_data=True) for n in ("label", "score", "class_id")],
        request_compression_algorithm=request_alg,
        response_compression_algorithm=response_alg,
    )
    _same(res.as_numpy("label"), res.as_numpy("score"), res.as_numpy("class_id"), reference["chelsea"])


def test_tritonclient_http_model_version_route(served, photos, reference) -> None:
    httpclient, client = _triton_http(served)
    version = client.get_model_metadata(MODEL)["versions"][0]
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([_jpeg(photos["chelsea"])], dtype=np.object_), binary_data=True)
    res = client.infer(MODEL, [inp], model_version=version)
    _same(res.as_numpy("label"), res.as_numpy("score"), res.as_numpy("class_id"), reference["chelsea"])
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="not 'v0'"):
        client.infer(MODEL, [inp], model_version="v0")


# --- compressed bodies: limits and refusals --------------------------------------------------------------


def _v2_header(n_bytes: int) -> bytes:
    import orjson

    return orjson.dumps(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": n_bytes}}]}
    )


def test_a_zip_bomb_is_refused_with_413_without_being_inflated(served) -> None:
    """64 MiB of zeros compress to ~64 KiB: under the 1 MiB body limit on the wire, far over it inflated."""
    server, _ = served
    body = _v2_header(64 << 20) + bytes(64 << 20)
    bomb = gzip.compress(body, compresslevel=9)
    assert len(bomb) < (1 << 20)
    headers = {"Content-Encoding": "gzip", "Inference-Header-Content-Length": str(len(_v2_header(64 << 20)))}
    r = server.client.post(f"/v2/models/{MODEL}/infer", content=bomb, headers=headers)
    assert r.status_code == 413, r.text
    assert "decompressed request body" in r.json()["error"] and "max_request_bytes" in r.json()["error"]
    assert server.metric("process_resident_memory_bytes") < 4 << 30  # nothing like 64 MiB per attempt kept
    server.assert_healthy(_jpeg(np.full((64, 64, 3), 128, np.uint8)))


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_corrupt_compressed_body_is_400_naming_the_encoding(served, encoding: str) -> None:
    server, _ = served
    good = gzip.compress(b'{"inputs": []}') if encoding == "gzip" else zlib.compress(b'{"inputs": []}')
    corrupt = good[:-6]  # cut off: the stream ends before its end marker
    r = server.client.post(
        f"/v2/models/{MODEL}/infer",
        content=corrupt,
        headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert f"not valid {encoding} data (Content-Encoding: {encoding})" in r.json()["error"]


def test_an_unknown_content_encoding_is_415(served) -> None:
    server, _ = served
    r = server.client.post(f"/v2/models/{MODEL}/infer", content=b"x", headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and "gzip, deflate" in r.json()["error"], r.text


def test_errors_name_what_was_wrong_without_python_internals(served) -> None:
    server, _ = served
    r = server.client.post("/classify", files={"image": ("x.jpg", b"this is not an image")})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]
    assert "not a decodable image" in msg and "JPEG" in msg
    assert "object at 0x" not in msg and "BytesIO" not in msg


# --- tritonclient gRPC ------------------------------------------------------------------------------------


def test_tritonclient_grpc_infer_reads_raw_outputs(served, photos, reference) -> None:
    _, grpc_port = served
    out = in_client_process(
        """
        import numpy as np
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient(url=V["url"])
        inp = grpcclient.InferInput("image", [2], "BYTES")
        inp.set_data_from_numpy(np.array([base64.b64decode(j) for j in V["jpegs"]], dtype=np.object_))
        res = client.infer("classifier", [inp], parameters={"top_k": 5})
        ids, scores, labels = res.as_numpy("class_id"), res.as_numpy("score"), res.as_numpy("label")
        names = [[x.decode() for x in row] for row in labels]
        print(json.dumps({"shape": list(ids.shape), "dtypes": [str(ids.dtype), str(scores.dtype)],
                          "ids": ids.tolist(), "scores": scores.tolist(), "labels": names}))
        """,
        url=f"127.0.0.1:{grpc_port}",
        jpegs=[_b64(_jpeg(photos["chelsea"])), _b64(_jpeg(photos["coffee"]))],
    )
    assert out["shape"] == [2, 5] and out["dtypes"] == ["int64", "float32"]
    for row, name in enumerate(("chelsea", "coffee")):
        _same(out["labels"][row], out["scores"][row], out["ids"][row], reference[name])


def test_tritonclient_grpc_metadata_health_and_errors(served) -> None:
    _, grpc_port = served
    out = in_client_process(
        """
        import numpy as np
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
        client = grpcclient.InferenceServerClient(url=V["url"])
        health = [client.is_server_live(), client.is_server_ready(), client.is_model_ready("classifier")]
        meta = client.get_model_metadata("classifier")
        inp = grpcclient.InferInput("image", [1], "BYTES")
        inp.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
        try:
            client.infer("classifier", [inp])
            error = None
        except InferenceServerException as e:
            error = [e.status(), e.message()]
        print(json.dumps({"health": health, "name": meta.name, "outputs": sorted(o.name for o in meta.outputs),
                          "error": error}))
        """,
        url=f"127.0.0.1:{grpc_port}",
    )
    assert out["health"] == [True, True, True]
    assert out["name"] == MODEL and out["outputs"] == ["class_id", "label", "score"]
    status, message = out["error"]
    assert status == "StatusCode.INVALID_ARGUMENT" and "not a decodable image" in message


# --- KServe's own clients (each in its own process: see in_client_process) -----------------------------

KSERVE_CALL = """
import asyncio
import numpy as np
from kserve import InferInput, InferRequest
inp = InferInput("image", [2], "BYTES")
inp.set_data_from_numpy(np.array([base64.b64decode(j) for j in V["jpegs"]], dtype=np.object_))
request = InferRequest(model_name="classifier", infer_inputs=[inp], parameters={"top_k": 5})

async def call():
    client = CLIENT
    try:
        return await INFER
    finally:
        await client.close()

res = asyncio.run(call())
out = {}
for o in res.outputs:
    a = o.as_numpy()
    text = [[x.decode() if isinstance(x, bytes) else str(x) for x in row] for row in a]
    out[o.name] = text if a.dtype == object else a.tolist()
print(json.dumps(out))
"""


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_kserve_clients(served, photos, reference, transport: str) -> None:
    server, grpc_port = served
    if transport == "rest":
        client = 'InferenceRESTClient(RESTConfig(protocol="v2"))'
        infer = 'client.infer(V["url"], request, model_name="classifier")'
        imports = "from kserve import InferenceRESTClient, RESTConfig\n"
        url = server.url
    else:
        client, infer = 'InferenceGRPCClient(V["url"])', "client.infer(request)"
        imports, url = "from kserve import InferenceGRPCClient\n", f"127.0.0.1:{grpc_port}"
    code = imports + KSERVE_CALL.replace("CLIENT", client).replace("INFER", infer)
    out = in_client_process(code, url=url, jpegs=[_b64(_jpeg(photos["chelsea"])), _b64(_jpeg(photos["coffee"]))])
    for row, name in enumerate(("chelsea", "coffee")):
        _same(out["label"][row], out["score"][row], out["class_id"][row], reference[name])


def test_every_client_call_left_the_server_serving(served, photos) -> None:
    server: ServerProcess = served[0]
    server.assert_healthy(_jpeg(photos["chelsea"]))
