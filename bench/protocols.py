"""Request bodies for each protocol the server speaks, built once before a load run.

* ``classify``: ``POST /classify``, multipart, one ``image`` field per image;
* ``v2-json``: ``POST /v2/models/{model}/infer``, a ``BYTES`` tensor of base64 strings;
* ``v2-binary``: the same with KServe's binary tensor extension (``Inference-Header-Content-Length``;
  each ``BYTES`` element is a 4-byte little-endian length followed by the bytes);
* ``v1``: ``POST /v1/models/{model}:predict`` with ``{"instances": [{"image": {"b64": ...}}]}``.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PROTOCOLS = ("classify", "v2-json", "v2-binary", "v1")
_BOUNDARY = "----benchloadgen7d1f0c2a9b"


@dataclass(frozen=True)
class PreparedRequest:
    """One ready-to-send request."""

    path: str
    body: bytes
    headers: Mapping[str, str]
    n_images: int
    protocol: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def build_request(
    protocol: str, images: Sequence[bytes], model: str = "classifier", binary_output: bool = False
) -> PreparedRequest:
    """Encode ``images`` (encoded image bytes) as one request of ``protocol``.

    Raises:
        ValueError: unknown protocol or no images.
    """
    if not images:
        raise ValueError("a request needs at least one image")
    n = len(images)
    if protocol == "classify":
        parts = []
        for i, img in enumerate(images):
            head = (
                f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="img{i}.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            )
            parts.append(head.encode() + img + b"\r\n")
        body = b"".join(parts) + f"--{_BOUNDARY}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"}
        return PreparedRequest("/classify", body, headers, n, protocol)
    if protocol == "v2-json":
        payload = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [n], "data": [_b64(i) for i in images]}]}
        body = json.dumps(payload).encode()
        return PreparedRequest(f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"}, n, protocol)
    if protocol == "v2-binary":
        raw = b"".join(struct.pack("<I", len(img)) + img for img in images)
        header = {
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [n], "parameters": {"binary_data_size": len(raw)}}
            ],
            "parameters": {"binary_data_output": binary_output},
        }
        head = json.dumps(header).encode()
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
        return PreparedRequest(f"/v2/models/{model}/infer", head + raw, headers, n, protocol)
    if protocol == "v1":
        body = json.dumps({"instances": [{"image": {"b64": _b64(i)}} for i in images]}).encode()
        return PreparedRequest(f"/v1/models/{model}:predict", body, {"Content-Type": "application/json"}, n, protocol)
    raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")


def check_response(req: PreparedRequest, headers: Mapping[str, str], body: bytes) -> str:
    """Return ``""`` when a 200 answer has the shape ``req`` asks for, else what is wrong."""
    try:
        if req.protocol == "v2-binary" and "Inference-Header-Content-Length" in headers:
            body = body[: int(headers["Inference-Header-Content-Length"])]
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        return f"answer is not JSON: {e}"
    if req.protocol in ("classify", "v1"):
        preds = doc.get("predictions") if isinstance(doc, dict) else None
        if not isinstance(preds, list) or len(preds) != req.n_images:
            return f"expected {req.n_images} predictions, got {str(doc)[:200]}"
        return ""
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list) or not outputs:
        return f"v2 answer has no outputs: {str(doc)[:200]}"
    shape = outputs[0].get("shape") or [None]
    if shape[0] != req.n_images:
        return f"v2 output shape {shape} does not start with {req.n_images}"
    return ""
