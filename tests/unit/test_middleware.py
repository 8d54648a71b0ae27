"""The HTTP middleware's pure parts: inflating request bodies within the limit, choosing the answer's coding,
what a request declares before its body is read."""

from __future__ import annotations

import asyncio
import gzip
import struct
import zlib

import orjson
import pytest

from predictor.errors import InvalidInput, PayloadTooLarge
from predictor.middleware import Inflater, compress, declared_images, protocol_of, response_encoding

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


# ---------------------------------------------------------------- what a request declares before its body


def _receiver(chunks: list[bytes]):
    """An ASGI receive over ``chunks``; records how many messages were taken."""
    taken: list[dict] = []

    async def receive() -> dict:
        i = len(taken)
        message = {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}
        taken.append(message)
        return message

    return receive, taken


def _declared(headers: dict[bytes, bytes], chunks: list[bytes], protocol: str = "v2"):
    receive, taken = _receiver(chunks)

    async def go():
        n, again = await declared_images({"type": "http"}, headers, receive, protocol)
        replayed = []
        while True:
            m = await again()
            replayed.append(m["body"])
            if not m["more_body"]:
                return n, len(taken), b"".join(replayed)

    return asyncio.run(go())


def _binary_request(n: int, image: bytes = b"\xff\xd8jpeg") -> tuple[bytes, bytes]:
    tail = b"".join(struct.pack("<I", len(image)) + image for _ in range(n))
    head = orjson.dumps(
        {
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [n], "parameters": {"binary_data_size": len(tail)}}
            ]
        }
    )
    return head, tail


def test_the_v2_binary_header_alone_is_read_and_handed_on_unchanged() -> None:
    head, tail = _binary_request(3)
    body = head + tail
    chunks = [body[:10], body[10 : len(head) + 5], body[len(head) + 5 :]]  # the header spans two chunks
    headers = {b"inference-header-content-length": str(len(head)).encode()}
    n, _, replayed = _declared(headers, chunks)
    assert n == 3
    assert replayed == body, "the app reads the whole body, the peeked part included, in order"
    # Only the chunks holding the header were taken before the app asked: the tail was not read for it.
    receive, taken = _receiver(chunks)
    asyncio.run(declared_images({"type": "http"}, headers, receive, "v2"))
    assert len(taken) == 2


@pytest.mark.parametrize(
    ("headers", "protocol", "expected"),
    [
        ({b"content-type": b"multipart/form-data; boundary=x"}, "classify", 1),
        ({b"content-type": b"image/jpeg"}, "classify", 1),
        ({b"content-type": b"text/plain"}, "classify", None),  # the route answers 415
        ({b"content-type": b"application/json"}, "v2", 1),  # v2 JSON: the count is in the body
        ({b"content-type": b"application/json"}, "v1", 1),
        ({b"inference-header-content-length": b"999999"}, "v2", 1),  # longer than PEEK_MAX_BYTES: not read
        ({b"inference-header-content-length": b"20", b"content-encoding": b"gzip"}, "v2", 1),
    ],
)
def test_requests_that_do_not_declare_a_count_reserve_one_without_reading(headers, protocol, expected) -> None:
    receive, taken = _receiver([b"body"])
    n, _ = asyncio.run(declared_images({"type": "http"}, headers, receive, protocol))
    assert n == expected and taken == [], "nothing of the body was read"


def test_a_malformed_v2_header_reserves_one_and_leaves_the_error_to_the_route() -> None:
    headers = {b"inference-header-content-length": b"12"}
    n, _, replayed = _declared(headers, [b"{not json at all", b" and more"])
    assert n == 1 and replayed == b"{not json at all and more"


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
def test_every_gzip_member_is_inflated(chunk: int) -> None:
    parts = [BODY[:10], BODY[10:20000], BODY[20000:]]
    multi = b"".join(gzip.compress(p) for p in parts)
    assert _feed(Inflater("gzip", len(BODY)), multi, chunk) == BODY
    assert gzip.decompress(multi) == BODY, "the reference: Python's gzip reads every member too"


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_zero_padding_after_a_gzip_member_is_read_as_gzip_reads_it(chunk: int) -> None:
    padded = gzip.compress(BODY[:100]) + bytes(13) + gzip.compress(BODY[100:]) + bytes(512)
    assert _feed(Inflater("gzip", len(BODY)), padded, chunk) == BODY
    assert gzip.decompress(padded) == BODY, "the reference: Python's gzip skips the padding too"


def test_concatenated_deflate_streams_are_inflated() -> None:
    assert _feed(Inflater("deflate", len(BODY)), zlib.compress(BODY[:100]) + zlib.compress(BODY[100:])) == BODY


def test_the_limit_applies_to_all_members_together() -> None:
    member = gzip.compress(bytes(1 << 20), compresslevel=9)  # 1 MiB each, about 1 KB compressed
    with pytest.raises(PayloadTooLarge, match="decompressed request body of 3145729 bytes"):
        _feed(Inflater("gzip", 3 << 20), member * 5)
    assert len(_feed(Inflater("gzip", 3 << 20), member * 3)) == 3 << 20


def test_too_many_members_and_garbage_after_a_member_are_the_clients_error() -> None:
    from predictor.middleware import MAX_MEMBERS

    with pytest.raises(InvalidInput, match=f"more than {MAX_MEMBERS} gzip members"):
        _feed(Inflater("gzip", len(BODY)), gzip.compress(b"") * (MAX_MEMBERS + 1), chunk=1 << 20)
    with pytest.raises(InvalidInput, match="not valid gzip data"):
        _feed(Inflater("gzip", len(BODY)), gzip.compress(BODY) + b"trailing garbage")
    with pytest.raises(InvalidInput, match="stream ends before its end marker"):
        _feed(Inflater("gzip", len(BODY)), gzip.compress(BODY) + gzip.compress(BODY)[:30])
