"""KServe v2 request and response helpers of the tests, written independently of predictor.protocol."""

from __future__ import annotations

import struct

import numpy as np
import orjson

CAT_CLASSES = {
    "tabby, tabby cat",
    "tiger cat",
    "Egyptian cat",
    "Persian cat",
    "Siamese cat, Siamese",
    "lynx, catamount",
}


def v2_binary_request(images: list[bytes], binary_outputs: bool, **params) -> tuple[bytes, dict[str, str]]:
    raw = b"".join(struct.pack("<I", len(i)) + i for i in images)
    header = {
        "id": "req-7",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [len(images)], "parameters": {"binary_data_size": len(raw)}}
        ],
        "outputs": [{"name": n, "parameters": {"binary_data": binary_outputs}} for n in ("label", "score", "class_id")],
    }
    if params:
        header["parameters"] = params
    h = orjson.dumps(header)
    return h + raw, {"Inference-Header-Content-Length": str(len(h)), "Content-Type": "application/octet-stream"}


def decode_v2_binary(body: bytes, header_len: int) -> dict[str, np.ndarray | list[str]]:
    header = orjson.loads(body[:header_len])
    pos, out = header_len, {}
    for o in header["outputs"]:
        size = o["parameters"]["binary_data_size"]
        raw = body[pos : pos + size]
        pos += size
        if o["datatype"] == "BYTES":
            items, p = [], 0
            while p < len(raw):
                (n,) = struct.unpack_from("<I", raw, p)
                items.append(raw[p + 4 : p + 4 + n].decode())
                p += 4 + n
            out[o["name"]] = items
        else:
            out[o["name"]] = np.frombuffer(raw, dtype=np.float32 if o["datatype"] == "FP32" else np.int64)
    assert pos == len(body)
    return out
