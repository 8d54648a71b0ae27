"""KServe/Triton v2 inference protocol: one parser and one output builder for REST and gRPC.

A request, whatever its transport, becomes a v2 *header* (the JSON object: ``inputs`` with name,
datatype, shape, parameters, maybe ``data``; ``outputs``; ``parameters``; ``id``) plus the *binary
tail* its inputs' ``binary_data_size`` point into; :func:`parse_request` reads that pair.

* REST JSON: the body is the header (BYTES elements are base64 strings).
* REST binary extension: a JSON header of ``Inference-Header-Content-Length`` bytes, then each binary
  input's ``binary_data_size`` bytes in input order; a BYTES element is a 4-byte little-endian length
  followed by that many bytes. KServe 0.21's own decoder turns BYTES elements into UTF-8 strings and
  fails on raw JPEG bytes, so this is parsed here.
* gRPC: every input is put into the binary form (``raw_input_contents``, or its typed ``contents``
  packed the same way), so the same parser reads it.

Answers are built once (:func:`output_tensors`) and serialised per transport: REST as JSON ``data`` or
binary outputs as asked; gRPC always in ``raw_output_contents``, as Triton answers and as NVIDIA's
``tritonclient`` reads them (it ignores typed ``contents`` for numeric outputs).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from predictor.errors import InvalidInput
from predictor.postprocess import Prediction
from predictor.protocol.common import ParsedRequest, b64decode, loads, shown, top_k_param

INPUT_BYTES, INPUT_UINT8, INPUT_FP32 = "image", "image_uint8", "image_fp32"
OUTPUTS = ("label", "score", "class_id")
_NP_DTYPES = {"UINT8": np.uint8, "FP32": np.float32}
_INPUT_NAMES = {"BYTES": INPUT_BYTES, "UINT8": INPUT_UINT8, "FP32": INPUT_FP32}
_OUTPUT_DTYPES = {"label": "BYTES", "score": "FP32", "class_id": "INT64"}
MAX_DATA_DEPTH = 8
"""Deepest nesting of an input's JSON ``data``: a flat list, or lists nested one level per dimension of the
shape (4 for an image tensor), with room to spare. Deeper is refused with 400, never recursed into."""


# --- requests --------------------------------------------------------------------------------------


def parse_rest(body: bytes, header_length: str | None) -> ParsedRequest:
    """Parse a REST v2 infer body: JSON, or the binary extension when ``header_length`` is set."""
    if header_length is None:
        return parse_request(loads(body, "request body"), b"")
    try:
        n = int(header_length)
    except ValueError:
        raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
    if not 0 < n <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes")
    return parse_request(loads(body[:n], "inference header"), body[n:])


def declared_images(header: Any) -> int | None:
    """How many images a v2 request header says it carries (its one input's shape), or None when it does
    not say (no inputs, no usable shape); :func:`parse_request` checks the claim against the data."""
    inputs = header.get("inputs") if isinstance(header, dict) else None
    inp = inputs[0] if isinstance(inputs, list) and inputs else None
    shape = inp.get("shape") if isinstance(inp, dict) else None
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        return None
    dtype = inp.get("datatype")  # type: ignore[union-attr]
    if dtype == "BYTES":
        return math.prod(shape)
    if isinstance(dtype, str) and dtype in _NP_DTYPES and len(shape) == 4:
        return shape[0]
    return None


def parse_grpc(request: Any) -> ParsedRequest:
    """Parse a gRPC ModelInfer request as KServe hands it over (an ``InferRequest`` built from it)."""
    from predictor.kserve_compat import grpc_input_raw, http_parameters

    inputs, chunks = [], []
    for inp in request.inputs:
        raw = grpc_input_raw(inp)
        if raw is None:  # typed contents: pack them the way raw_input_contents carries them
            raw = _pack_contents(inp.datatype, inp.data or [], inp.name)
        chunks.append(raw)
        params = {**(http_parameters(inp.parameters) or {}), "binary_data_size": len(raw)}
        inputs.append({"name": inp.name, "datatype": inp.datatype, "shape": list(inp.shape), "parameters": params})
    outputs = [{"name": o.name, "parameters": {"binary_data": True}} for o in request.request_outputs or []]
    header: dict[str, Any] = {"inputs": inputs, "parameters": http_parameters(request.parameters) or {}}
    if outputs:
        header["outputs"] = outputs
    if request.id:
        header["id"] = request.id
    parsed = parse_request(header, b"".join(chunks))
    parsed.binary_outputs = dict.fromkeys(parsed.requested_outputs or OUTPUTS, True)
    return parsed


def _pack_contents(datatype: str, data: list, name: str) -> bytes:
    if datatype == "BYTES":
        return pack_bytes([x if isinstance(x, bytes) else str(x).encode() for x in data])
    if datatype not in _NP_DTYPES:
        raise InvalidInput(f"input {shown(name)} has datatype {shown(datatype)}; accepted: BYTES, UINT8, FP32")
    return np.asarray(data, dtype=np.dtype(_NP_DTYPES[datatype]).newbyteorder("<")).tobytes()


def parse_request(req: Any, binary: bytes) -> ParsedRequest:
    """Parse a v2 request header and the binary data its inputs point into."""
    if not isinstance(req, dict):
        raise InvalidInput("request must be a JSON object with 'inputs'")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("request needs 'inputs': a list with one image tensor")
    if len(inputs) != 1:
        raise InvalidInput(
            f"request has {len(inputs)} inputs; send exactly one of {INPUT_BYTES} (BYTES), "
            f"{INPUT_UINT8} (UINT8 [N,H,W,3]) or {INPUT_FP32} (FP32 [N,3,H,W])"
        )
    params = req.get("parameters") or {}
    parsed = ParsedRequest(images=_parse_input(inputs[0], binary), top_k=top_k_param(params))
    parsed.request_id = _request_id(req.get("id"))
    default_binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    outputs = req.get("outputs")
    if outputs is None:
        parsed.binary_outputs = dict.fromkeys(OUTPUTS, default_binary)
        return parsed
    if not isinstance(outputs, list):
        raise InvalidInput("'outputs' must be a list of {name, parameters}")
    for out in outputs:
        name = out.get("name") if isinstance(out, dict) else None
        if name not in OUTPUTS:
            raise InvalidInput(f"unknown output {shown(name)}: this model has outputs {', '.join(OUTPUTS)}")
        parsed.requested_outputs.append(name)
        p = out.get("parameters") or {}
        parsed.binary_outputs[name] = bool(p.get("binary_data", default_binary))
    return parsed


def _request_id(rid: Any) -> str | None:
    """The request's ``id`` (a string in the v2 protocol; a number is taken as its text), echoed in the answer."""
    if rid is None or isinstance(rid, str):
        return rid
    if isinstance(rid, int | float) and not isinstance(rid, bool):
        return str(rid)
    raise InvalidInput(f"'id' must be a string (the request's id, echoed in the answer), got {type(rid).__name__}")


def _parse_input(inp: Any, binary: bytes) -> list[bytes | np.ndarray]:
    if not isinstance(inp, dict):
        raise InvalidInput("each input must be an object with name, datatype, shape, data")
    name, dtype, shape = inp.get("name"), inp.get("datatype"), inp.get("shape")
    if not isinstance(dtype, str) or dtype not in _INPUT_NAMES:
        raise InvalidInput(f"input {shown(name)} has datatype {shown(dtype)}; accepted: BYTES, UINT8, FP32")
    if name not in (_INPUT_NAMES[dtype], INPUT_BYTES):
        raise InvalidInput(f"input {shown(name)} is unknown: a {dtype} image tensor is named {_INPUT_NAMES[dtype]!r}")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"input {shown(name)} needs 'shape', a list of non-negative integers")
    params = inp.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise InvalidInput(f"binary_data_size {shown(size)} of input {shown(name)} exceeds the binary data sent")
        raw = binary[:size]
        if dtype == "BYTES":
            return _check_count(split_bytes(raw), shape)
        return _tensor_images(np.frombuffer(raw, dtype=np.dtype(_NP_DTYPES[dtype]).newbyteorder("<")), dtype, shape)
    data = inp.get("data")
    if not isinstance(data, list):
        raise InvalidInput(f"input {shown(name)} needs 'data' (a list) or binary_data_size")
    flat = _flatten(data, name)
    if dtype == "BYTES":
        return _check_count([b64decode(s, f"input {shown(name)} element {i}") for i, s in enumerate(flat)], shape)
    try:
        arr = np.asarray(flat, dtype=_NP_DTYPES[dtype])
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {shown(name)}: data is not a list of {dtype} numbers") from None
    return _tensor_images(arr, dtype, shape)


def _flatten(data: list, name: Any) -> list:
    """Row-major nested lists as one flat list, a level at a time (no recursion), at most
    :data:`MAX_DATA_DEPTH` levels deep."""
    level, depth = data, 1
    while level and isinstance(level[0], list):
        depth += 1
        if depth > MAX_DATA_DEPTH:
            raise InvalidInput(
                f"input {shown(name)}: data is nested more than {MAX_DATA_DEPTH} levels deep (the limit); send a flat "
                "list, or lists nested one level per dimension of its shape"
            )
        if not all(isinstance(row, list) for row in level):
            raise InvalidInput(f"input {shown(name)}: data mixes lists and values on one level: nest it evenly")
        level = [x for row in level for x in row]
    return level


def split_bytes(raw: bytes) -> list[bytes]:
    """A binary BYTES tensor → its elements (each a 4-byte little-endian length, then the bytes)."""
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidInput("binary BYTES tensor is truncated: a 4-byte length prefix is cut off")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise InvalidInput(f"binary BYTES element declares {n} bytes but only {len(raw) - pos} follow")
        out.append(raw[pos : pos + n])
        pos += n
    return out


def pack_bytes(items: list[bytes]) -> bytes:
    """BYTES elements → a binary BYTES tensor (the inverse of :func:`split_bytes`)."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _check_count(images: list[bytes], shape: list[int]) -> list[bytes]:
    if math.prod(shape) != len(images):
        raise InvalidInput(f"shape {shape} says {math.prod(shape)} images but {len(images)} were sent")
    return images


def _tensor_images(arr: np.ndarray, dtype: str, shape: list[int]) -> list[np.ndarray]:
    want = "[N,H,W,3]" if dtype == "UINT8" else "[N,3,H,W]"
    if len(shape) != 4 or (dtype == "UINT8" and shape[3] != 3) or (dtype == "FP32" and shape[1] != 3):
        raise InvalidInput(f"{dtype} image tensor must have shape {want}, got {shape}")
    if arr.size != math.prod(shape):
        raise InvalidInput(f"shape {shape} needs {math.prod(shape)} values but {arr.size} were sent")
    return list(arr.astype(_NP_DTYPES[dtype], copy=False).reshape(shape))


# --- responses -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputTensor:
    """One answer tensor, ready for either transport."""

    name: str
    datatype: str
    shape: list[int]
    values: list
    """Flat, row-major: ``str`` labels, ``float`` scores or ``int`` class ids."""

    def raw(self) -> bytes:
        """The tensor as binary data (the REST extension's and gRPC's ``raw_output_contents`` layout)."""
        if self.datatype == "BYTES":
            return pack_bytes([v.encode() for v in self.values])
        return np.asarray(self.values, dtype=np.float32 if self.datatype == "FP32" else np.int64).tobytes()


def output_tensors(results: list[list[Prediction]], parsed: ParsedRequest) -> list[OutputTensor]:
    """The requested outputs (all, in the model's order, when none were named) of a classified request."""
    n = len(results)
    k = len(results[0]) if results else 0
    values = {
        "label": [p.label for row in results for p in row],
        "score": [p.score for row in results for p in row],
        "class_id": [p.class_id for row in results for p in row],
    }
    names = parsed.requested_outputs or list(OUTPUTS)
    return [OutputTensor(name, _OUTPUT_DTYPES[name], [n, k], values[name]) for name in names]


def encode_rest(
    results: list[list[Prediction]], parsed: ParsedRequest, model_name: str, model_version: str
) -> tuple[bytes, dict[str, str]]:
    """A REST v2 response body and its headers (the binary extension when any output is binary)."""
    outputs, chunks = [], []
    for t in output_tensors(results, parsed):
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if parsed.binary_outputs.get(t.name):
            raw = t.raw()
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            out["data"] = t.values
        outputs.append(out)
    resp: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if parsed.request_id is not None:
        resp["id"] = parsed.request_id
    header = orjson.dumps(resp)
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def encode_grpc(results: list[list[Prediction]], parsed: ParsedRequest, model_name: str, model_version: str) -> Any:
    """A gRPC ``ModelInferResponse`` with every output in ``raw_output_contents`` (as Triton answers)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    tensors = output_tensors(results, parsed)
    outputs = [
        pb.ModelInferResponse.InferOutputTensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in tensors
    ]
    return pb.ModelInferResponse(
        model_name=model_name,
        model_version=model_version,
        id=parsed.request_id or "",
        outputs=outputs,
        raw_output_contents=[t.raw() for t in tensors],
    )


def metadata(model_name: str, model_version: str, crop_hw: tuple[int, int]) -> dict[str, Any]:
    """``GET /v2/models/{name}`` body."""
    h, w = crop_hw
    return {
        "name": model_name,
        "versions": [model_version],
        "platform": "image-classifier",
        "inputs": [
            {"name": INPUT_BYTES, "datatype": "BYTES", "shape": [-1]},
            {"name": INPUT_UINT8, "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
            {"name": INPUT_FP32, "datatype": "FP32", "shape": [-1, 3, h, w]},
        ],
        "outputs": [{"name": name, "datatype": _OUTPUT_DTYPES[name], "shape": [-1, -1]} for name in OUTPUTS],
    }
