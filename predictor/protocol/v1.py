"""KServe v1: ``{"instances": [{"image": {"b64": "..."}}, ...], "parameters": {"top_k": N}}``."""

from __future__ import annotations

from typing import Any

from predictor.errors import InvalidInput
from predictor.protocol.common import ParsedRequest, b64decode, top_k_param


def parse_v1(payload: Any) -> ParsedRequest:
    """Parse a v1 predict payload (instances of base64 images, ``{"b64": ...}`` or plain strings)."""
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
    return ParsedRequest(images=images, top_k=top_k_param(payload.get("parameters") or payload))
