"""Wire formats: KServe v2 (JSON and the binary tensor extension), v1, and our /classify JSON.

Parsing turns a body into a :class:`ParsedRequest` (images as bytes or arrays, top_k, output options);
encoding turns predictions into a body. Nothing here knows about batching or the engine.

KServe 0.21's own binary decoder turns BYTES elements into UTF-8 strings and fails on raw JPEG bytes,
so the binary extension is parsed here: a JSON header of ``Inference-Header-Content-Length`` bytes,
then each binary input's ``binary_data_size`` bytes in input order; a BYTES element is a 4-byte
little-endian length followed by that many bytes.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from predictor.errors import InvalidInput
from predictor.postprocess import Prediction

INPUT_BYTES, INPUT_UINT8, INPUT_FP32 = "image", "image_uint8", "image_fp32"
OUTPUTS = ("label", "score", "class_id")
_NP_DTYPES = {"UINT8": np.uint8, "FP32": np.float32}
_DTYPE_NAMES = {"BYTES": INPUT_BYTES, "UINT8": INPUT_UINT8, "FP32": INPUT_FP32}


@dataclass
class ParsedRequest:
    """What the pipeline needs from one request, whatever the protocol."""

    images: list[bytes | np.ndarray]
    top_k: int | None = None
    request_id: str | None = None
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    requested_outputs: list[str] = field(default_factory=list)


def b64decode(text: Any, where: str) -> bytes:
    """Strict base64 (standard alphabet, padding optional) with an error that says where."""
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: expected a base64 string, got {type(text).__name__}")
    s = text.strip()
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: not valid base64") from None


def _loads(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"{what} is not valid JSON: {e}") from None


def _top_k_param(params: Any) -> int | None:
    if not isinstance(params, dict) or "top_k" not in params:
        return None
    k = params["top_k"]
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidInput(f"parameter top_k must be an integer, got {k!r}")
    return k


# --- v2 --------------------------------------------------------------------------------------------


def parse_v2(body: bytes, header_length: str | None) -> ParsedRequest:
    """Parse a v2 infer request: JSON, or the binary extension when ``header_length`` is set."""
    if header_length is None:
        return _parse_v2_header(_loads(body, "request body"), b"")
    try:
        n = int(header_length)
    except ValueError:
        raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
    if not 0 < n <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes")
    return _parse_v2_header(_loads(body[:n], "inference header"), body[n:])


def _parse_v2_header(req: Any, binary: bytes) -> ParsedRequest:
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
    parsed = ParsedRequest(images=_parse_v2_input(inputs[0], binary), top_k=_top_k_param(params))
    rid = req.get("id")
    parsed.request_id = str(rid) if rid is not None else None
    default_binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    outputs = req.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InvalidInput("'outputs' must be a list of {name, parameters}")
        for out in outputs:
            name = out.get("name") if isinstance(out, dict) else None
            if name not in OUTPUTS:
                raise InvalidInput(f"unknown output {name!r}: this model has outputs {', '.join(OUTPUTS)}")
            parsed.requested_outputs.append(name)
            p = out.get("parameters") or {}
            parsed.binary_outputs[name] = bool(p.get("binary_data", default_binary))
    else:
        parsed.binary_outputs = {name: default_binary for name in OUTPUTS}
    return parsed


def _parse_v2_input(inp: Any, binary: bytes) -> list[bytes | np.ndarray]:
    if not isinstance(inp, dict):
        raise InvalidInput("each input must be an object with name, datatype, shape, data")
    name, dtype, shape = inp.get("name"), inp.get("datatype"), inp.get("shape")
    if dtype not in _DTYPE_NAMES:
        raise InvalidInput(f"input {name!r} has datatype {dtype!r}; accepted: BYTES, UINT8, FP32")
    if name not in (_DTYPE_NAMES[dtype], INPUT_BYTES):
        raise InvalidInput(f"input {name!r} is unknown: a {dtype} image tensor is named {_DTYPE_NAMES[dtype]!r}")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"input {name!r} needs 'shape', a list of non-negative integers")
    params = inp.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise InvalidInput(f"binary_data_size {size!r} of input {name!r} exceeds the binary data sent")
        raw = binary[:size]
        if dtype == "BYTES":
            return _check_count(_split_bytes(raw), shape)
        return _tensor_images(np.frombuffer(raw, dtype=np.dtype(_NP_DTYPES[dtype]).newbyteorder("<")), dtype, shape)
    data = inp.get("data")
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r} needs 'data' (a list) or binary_data_size")
    if dtype == "BYTES":
        flat = _flatten(data)
        return _check_count([b64decode(s, f"input {name!r} element {i}") for i, s in enumerate(flat)], shape)
    try:
        arr = np.asarray(_flatten(data), dtype=_NP_DTYPES[dtype])
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {name!r}: data is not a list of {dtype} numbers") from None
    return _tensor_images(arr, dtype, shape)


def _flatten(data: list) -> list:
    if data and isinstance(data[0], list):
        return [x for row in data for x in _flatten(row)]
    return data


def _split_bytes(raw: bytes) -> list[bytes]:
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


def _pack_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def encode_v2(
    results: list[list[Prediction]], parsed: ParsedRequest, model_name: str, model_version: str
) -> tuple[bytes, dict[str, str]]:
    """Encode a v2 response; returns body and extra headers (binary extension when asked)."""
    n = len(results)
    k = len(results[0]) if results else 0
    tensors = {
        "label": ("BYTES", [p.label for row in results for p in row]),
        "score": ("FP32", [p.score for row in results for p in row]),
        "class_id": ("INT64", [p.class_id for row in results for p in row]),
    }
    names = parsed.requested_outputs or list(OUTPUTS)
    outputs, chunks = [], []
    for name in names:
        dtype, values = tensors[name]
        out: dict[str, Any] = {"name": name, "datatype": dtype, "shape": [n, k]}
        if parsed.binary_outputs.get(name):
            if dtype == "BYTES":
                raw = _pack_bytes([v.encode() for v in values])
            else:
                raw = np.asarray(values, dtype=np.float32 if dtype == "FP32" else np.int64).tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            out["data"] = values
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


def v2_metadata(model_name: str, model_version: str, crop_hw: tuple[int, int]) -> dict[str, Any]:
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
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "score", "datatype": "FP32", "shape": [-1, -1]},
            {"name": "class_id", "datatype": "INT64", "shape": [-1, -1]},
        ],
    }


# --- v1 --------------------------------------------------------------------------------------------


def parse_v1(payload: Any) -> ParsedRequest:
    """Parse ``{"instances": [{"image": {"b64": "..."}}, ...], "parameters": {"top_k": N}}``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise InvalidInput('v1 request must be {"instances": [{"image": {"b64": "<base64>"}}, ...]}')
    images = []
    for i, inst in enumerate(payload["instances"]):
        where = f"instances[{i}]"
        if isinstance(inst, dict):
            inst = inst.get("image", inst.get("image_bytes", inst))
        if isinstance(inst, dict) and "b64" in inst:
            images.append(b64decode(inst["b64"], where))
        elif isinstance(inst, str):
            images.append(b64decode(inst, where))
        else:
            raise InvalidInput(f'{where} must be {{"image": {{"b64": "<base64>"}}}} or a base64 string')
    return ParsedRequest(images=images, top_k=_top_k_param(payload.get("parameters") or payload))


def predictions_json(results: list[list[Prediction]]) -> list[list[dict[str, object]]]:
    """Predictions as plain JSON lists (for /classify and v1)."""
    return [[p.as_dict() for p in row] for row in results]
