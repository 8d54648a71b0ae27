"""What every wire format parses into, and the helpers they share."""

from __future__ import annotations

import base64
import binascii
import reprlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from predictor.errors import InvalidInput
from predictor.postprocess import Prediction


@dataclass
class ParsedRequest:
    """What the pipeline needs from one request, whatever the protocol, and how to answer it."""

    images: list[bytes | np.ndarray]
    top_k: int | None = None
    request_id: str | None = None
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    """v2: per output, whether it is sent as binary data (REST extension) rather than JSON."""
    requested_outputs: list[str] = field(default_factory=list)
    """v2: the outputs asked for, in order; empty = all."""


def _shown_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlong = 2, 60, 60, 40
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 4
    return r


_SHOWN = _shown_repr()


def shown(value: Any) -> str:
    """A client's value as an error message quotes it: its ``repr`` cut short (two levels of nesting, four
    items a level, 60 characters a string), so that no value a client sends, however deep or long, makes the
    message deep or long (``repr`` of a list nested 1,000 levels raises ``RecursionError``)."""
    return _SHOWN.repr(value)


def b64decode(text: Any, where: str) -> bytes:
    """Strict base64 (standard alphabet, padding optional) with an error that says where."""
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: expected a base64 string, got {type(text).__name__}")
    s = text.strip()
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: not valid base64") from None


JSON_MAX_DEPTH = 1024
"""Deepest nesting of arrays and objects the JSON parser (orjson) reads; a fixed limit of the parser."""


def loads(body: bytes, what: str) -> Any:
    """Parse JSON; malformed JSON is the client's :class:`InvalidInput`, naming where it broke."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if "depth limit exceeded" in str(e):
            raise InvalidInput(
                f"{what} nests JSON arrays and objects more than {JSON_MAX_DEPTH} levels deep (the parser's "
                "limit): send data flat, or nested one level per dimension of its shape"
            ) from None
        raise InvalidInput(f"{what} is not valid JSON: {e}") from None


def top_k_param(params: Any) -> int | None:
    """``top_k`` from a parameters object: None when absent; its type is checked here, its range by the pipeline."""
    if not isinstance(params, dict) or "top_k" not in params:
        return None
    k = params["top_k"]
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidInput(f"parameter top_k must be an integer, got {shown(k)}")
    return k


def predictions_json(results: list[list[Prediction]]) -> list[list[dict[str, object]]]:
    """Predictions as plain JSON lists (for /classify and v1)."""
    return [[p.as_dict() for p in row] for row in results]
