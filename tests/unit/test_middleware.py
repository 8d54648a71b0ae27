"""The HTTP middleware's pure parts: inflating request bodies within the limit, choosing the answer's coding."""

from __future__ import annotations

import gzip
import zlib

import pytest

from predictor.errors import InvalidInput, PayloadTooLarge
from predictor.middleware import Inflater, compress, protocol_of, response_encoding

BODY = b"image bytes " * 5000


def _feed(inflater: Inflater, data: bytes, chunk: int = 1000) -> bytes:
    parts = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    return b"".join(inflater.feed(p, i == len(parts) - 1) for i, p in enumerate(parts))


def _raw_deflate(data: bytes) -> bytes:
    co = zlib.compressobj(wbits=-15)  # deflate without zlib's header, as some clients send it
    return co.compress(data) + co.flush()


@pytest.mark.parametrize(
    ("encoding", "data"),
    [("gzip", gzip.compress(BODY)), ("deflate", zlib.compress(BODY)), ("deflate", _raw_deflate(BODY))],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
def test_bodies_inflate_in_chunks(encoding: str, data: bytes) -> None:
    assert _feed(Inflater(encoding, len(BODY)), data) == BODY


def test_the_limit_applies_to_the_inflated_size_without_inflating_past_it() -> None:
    bomb = gzip.compress(bytes(50 << 20), compresslevel=9)
    inflater = Inflater("gzip", 1 << 20)
    with pytest.raises(PayloadTooLarge, match="decompressed request body of 1048577 bytes is over the limit"):
        _feed(inflater, bomb, chunk=1 << 16)
    assert inflater.size == (1 << 20) + 1, "it stopped one byte past the limit"


def test_corrupt_or_truncated_streams_are_the_clients_error() -> None:
    data = gzip.compress(BODY)
    with pytest.raises(InvalidInput, match=r"not valid gzip data \(Content-Encoding: gzip\).*end marker"):
        _feed(Inflater("gzip", len(BODY)), data[:-8])
    with pytest.raises(InvalidInput, match=r"not valid gzip data"):
        _feed(Inflater("gzip", len(BODY)), b"\x1f\x8bnot really gzip at all")


def test_answer_coding_follows_accept_encoding() -> None:
    assert response_encoding("gzip") == "gzip"
    assert response_encoding("br;q=1.0, deflate;q=0.5") == "deflate"
    assert response_encoding("gzip;q=0, identity") is None
    assert response_encoding("") is None
    assert gzip.decompress(compress(BODY, "gzip")) == BODY and zlib.decompress(compress(BODY, "deflate")) == BODY


def test_only_inference_paths_are_counted() -> None:
    assert protocol_of("/classify", "POST") == "classify"
    assert protocol_of("/v2/models/m/versions/3/infer", "POST") == "v2"
    assert protocol_of("/v1/models/m:predict", "POST") == "v1"
    assert protocol_of("/v2/health/ready", "GET") is None and protocol_of("/metrics", "GET") is None
