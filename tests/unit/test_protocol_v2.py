"""The one v2 codec (predictor/protocol/v2.py): REST and gRPC requests parse the same; answers per transport.

The expected bytes are built here by hand from the protocol's description (4-byte little-endian lengths,
little-endian tensors), not with the codec's own helpers.
"""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from kserve import InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from predictor.errors import InvalidInput
from predictor.postprocess import Prediction
from predictor.protocol import v2

JPEGS = [b"\xff\xd8first\xff\xd9", b"\xff\xd8second one\xff\xd9"]


def _lengths(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _grpc(inputs, raw=None, outputs=(), **params) -> InferRequest:
    msg = pb.ModelInferRequest(
        model_name="classifier",
        id="g-1",
        inputs=inputs,
        raw_input_contents=raw or [],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in outputs],
        parameters={k: pb.InferParameter(int64_param=v) for k, v in params.items()},
    )
    return InferRequest.from_grpc(msg)


def test_rest_json_binary_and_grpc_give_the_same_request() -> None:
    import base64

    json_body = orjson.dumps(
        {"id": "r", "parameters": {"top_k": 3}, "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                                              "data": [base64.b64encode(j).decode() for j in JPEGS]}]}
    )  # fmt: skip
    raw = _lengths(JPEGS)
    header = orjson.dumps(
        {"parameters": {"top_k": 3}, "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                                 "parameters": {"binary_data_size": len(raw)}}]}
    )  # fmt: skip
    tensor = pb.ModelInferRequest.InferInputTensor
    as_raw = _grpc([tensor(name="image", datatype="BYTES", shape=[2])], raw=[raw], top_k=3)
    as_contents = _grpc(
        [tensor(name="image", datatype="BYTES", shape=[2], contents=pb.InferTensorContents(bytes_contents=JPEGS))],
        top_k=3,
    )
    for parsed in (
        v2.parse_rest(json_body, None),
        v2.parse_rest(header + raw, str(len(header))),
        v2.parse_grpc(as_raw),
        v2.parse_grpc(as_contents),
    ):
        assert parsed.images == JPEGS and parsed.top_k == 3


def test_grpc_uint8_tensors_from_contents_and_raw_agree() -> None:
    pixels = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    tensor = pb.ModelInferRequest.InferInputTensor
    raw = _grpc([tensor(name="image_uint8", datatype="UINT8", shape=[2, 4, 5, 3])], raw=[pixels.tobytes()])
    contents = _grpc(
        [tensor(name="image_uint8", datatype="UINT8", shape=[2, 4, 5, 3],
                contents=pb.InferTensorContents(uint_contents=pixels.reshape(-1).tolist()))]
    )  # fmt: skip
    for req in (raw, contents):
        images = v2.parse_grpc(req).images
        assert len(images) == 2 and all(isinstance(i, np.ndarray) for i in images)
        np.testing.assert_array_equal(np.stack(images), pixels)


def test_grpc_requested_outputs_are_all_raw() -> None:
    tensor = pb.ModelInferRequest.InferInputTensor
    parsed = v2.parse_grpc(_grpc([tensor(name="image", datatype="BYTES", shape=[1])], raw=[_lengths(JPEGS[:1])],
                                 outputs=("class_id", "label")))  # fmt: skip
    assert parsed.requested_outputs == ["class_id", "label"] and parsed.binary_outputs == {
        "class_id": True,
        "label": True,
    }
    assert parsed.request_id == "g-1"


RESULTS = [
    [Prediction("tiger cat", 0.5, 282), Prediction("tabby, tabby cat", 0.25, 281)],
    [Prediction("espresso", 0.75, 967), Prediction("cup", 0.125, 968)],
]


def test_grpc_answers_carry_every_output_in_raw_contents_in_request_order() -> None:
    parsed = v2.ParsedRequest(images=[], requested_outputs=["score", "label"], request_id="g-2")
    resp = v2.encode_grpc(RESULTS, parsed, "classifier", "v7")
    assert (resp.model_name, resp.model_version, resp.id) == ("classifier", "v7", "g-2")
    assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [
        ("score", "FP32", [2, 2]),
        ("label", "BYTES", [2, 2]),
    ]
    assert not any(o.HasField("contents") for o in resp.outputs)
    assert resp.raw_output_contents[0] == struct.pack("<4f", 0.5, 0.25, 0.75, 0.125)
    assert resp.raw_output_contents[1] == _lengths([b"tiger cat", b"tabby, tabby cat", b"espresso", b"cup"])


def test_rest_answers_json_or_binary_per_output() -> None:
    parsed = v2.parse_request(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["AA=="]}],
         "outputs": [{"name": "class_id", "parameters": {"binary_data": True}}, {"name": "label"}]}, b""
    )  # fmt: skip
    body, headers = v2.encode_rest(RESULTS, parsed, "classifier", "v7")
    n = int(headers["inference-header-content-length"])
    header = orjson.loads(body[:n])
    assert [o["name"] for o in header["outputs"]] == ["class_id", "label"]
    assert header["outputs"][1]["data"] == ["tiger cat", "tabby, tabby cat", "espresso", "cup"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 32}
    assert body[n:] == struct.pack("<4q", 282, 281, 967, 968)
    body, headers = v2.encode_rest(RESULTS, v2.ParsedRequest(images=[]), "classifier", "v7")
    assert headers == {"content-type": "application/json"} and len(orjson.loads(body)["outputs"]) == 3


@pytest.mark.parametrize(
    ("body", "header_len", "words"),
    [
        (b"{", None, "request body is not valid JSON"),
        (b'{"inputs": []}', None, "needs 'inputs'"),
        (b"xx", "abc", "must be an integer"),
        (b"xx", "10", "outside the body of 2 bytes"),
        (b'{"inputs": [{"name": "image", "datatype": "INT8", "shape": [1], "data": [1]}]}', None, "accepted: BYTES"),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["AA=="]}]}',
            None,
            "says 2 images",
        ),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["***"]}]}',
            None,
            "not valid base64",
        ),
    ],
)
def test_bad_requests_name_the_problem(body: bytes, header_len: str | None, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        v2.parse_rest(body, header_len)


def test_a_truncated_binary_bytes_tensor_is_refused() -> None:
    with pytest.raises(InvalidInput, match="declares 100 bytes but only 3 follow"):
        v2.split_bytes(struct.pack("<I", 100) + b"abc")
    with pytest.raises(InvalidInput, match="length prefix is cut off"):
        v2.split_bytes(b"\x01\x00")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3]}]}, 3),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2, 2]}]}, 4),
        ({"inputs": [{"name": "image_uint8", "datatype": "UINT8", "shape": [5, 224, 224, 3]}]}, 5),
        ({"inputs": [{"name": "image_fp32", "datatype": "FP32", "shape": [2, 3, 224, 224]}]}, 2),
        ({"inputs": [{"name": "image_uint8", "datatype": "UINT8", "shape": [224, 224, 3]}]}, None),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [True]}]}, None),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": "3"}]}, None),
        ({"inputs": [{"name": "image", "datatype": "INT8", "shape": [3]}]}, None),
        ({"inputs": []}, None),
        ([1, 2], None),
    ],
)
def test_declared_images_is_what_the_parser_will_count(header, expected) -> None:
    assert v2.declared_images(header) == expected
    if expected is not None:  # the parser, on data matching the claim, yields that many images
        inp = header["inputs"][0]
        if inp["datatype"] == "BYTES":
            raw = (struct.pack("<I", 1) + b"x") * expected
        else:
            raw = bytes(int(np.prod(inp["shape"])) * (1 if inp["datatype"] == "UINT8" else 4))
        inp = {**inp, "parameters": {"binary_data_size": len(raw)}}
        assert len(v2.parse_request({"inputs": [inp]}, raw).images) == expected


@pytest.mark.parametrize("depth", [9, 480, 1000, 1020])
def test_data_nested_past_the_limit_is_refused_without_recursion(depth: int) -> None:
    import sys

    body = '{"inputs":[{"name":"image_fp32","datatype":"FP32","shape":[1,3,2,2],"data":' + "[" * depth + "1"
    body += "]" * depth + "}]}"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # a recursive flattening would fail here at any depth over ~300
    try:
        with pytest.raises(InvalidInput, match=f"nested more than {v2.MAX_DATA_DEPTH} levels deep"):
            v2.parse_rest(body.encode(), None)
    finally:
        sys.setrecursionlimit(limit)


def test_data_nested_one_level_per_dimension_is_read_in_row_major_order() -> None:
    nested = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    body = orjson.dumps(
        {"inputs": [{"name": "image_fp32", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": nested.tolist()}]}
    )
    (image,) = v2.parse_rest(body, None).images
    np.testing.assert_array_equal(image, nested[0])


def test_ragged_data_and_json_past_the_parsers_depth_are_400s() -> None:
    ragged = {"inputs": [{"name": "image_fp32", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": [[1, 2], 3]}]}
    with pytest.raises(InvalidInput, match="mixes lists and values"):
        v2.parse_rest(orjson.dumps(ragged), None)
    deep = b'{"inputs": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    with pytest.raises(InvalidInput, match="more than 1024 levels deep"):
        v2.parse_rest(deep, None)


def _deep(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "build",
    [
        lambda deep: {"id": deep, "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}]},
        lambda deep: {"inputs": [{"name": deep, "datatype": "BYTES", "shape": [1], "data": ["eA=="]}]},
        lambda deep: {"inputs": [{"name": "image", "datatype": deep, "shape": [1], "data": ["eA=="]}]},
        lambda deep: {"inputs": [{"name": "image", "datatype": "BYTES", "shape": deep, "data": ["eA=="]}]},
        lambda deep: {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}],
            "parameters": {"top_k": deep},
        },
        lambda deep: {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}],
            "outputs": [{"name": deep}],
        },
        lambda deep: {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": deep}}]
        },
    ],
    ids=["id", "name", "datatype", "shape", "top_k", "outputs", "binary_data_size"],
)
def test_a_field_nested_under_the_parsers_limit_is_a_short_400_not_a_recursion(build) -> None:
    header = build(_deep(1000))
    with pytest.raises(InvalidInput) as e:
        v2.parse_request(header, b"")
    assert len(str(e.value)) < 400, "the client's value is quoted cut short"
    assert v2.declared_images(header) is None or isinstance(v2.declared_images(header), int)


def test_an_id_is_a_string_or_a_number() -> None:
    inputs = [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}]
    assert v2.parse_request({"id": "abc", "inputs": inputs}, b"").request_id == "abc"
    assert v2.parse_request({"id": 7, "inputs": inputs}, b"").request_id == "7"
    assert v2.parse_request({"inputs": inputs}, b"").request_id is None
    with pytest.raises(InvalidInput, match="'id' must be a string"):
        v2.parse_request({"id": {"a": 1}, "inputs": inputs}, b"")


def test_an_unhashable_datatype_declares_nothing() -> None:
    assert v2.declared_images({"inputs": [{"shape": [1, 3, 2, 2], "datatype": ["FP32"]}]}) is None
