"""The online client's logic with a mocked transport: retries honouring Retry-After, error rows,
folder walking and the output formats. (Against a live server: tests/queue/test_api_and_client.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import httpx

from predictor.client import Row, RowWriter, classify_paths, collect_paths, retry_after_seconds

PREDICTION = {"label": "tabby", "score": 0.9, "class_id": 281}


def run(files: list[Path], handler, **kwargs) -> list[Row]:
    rows: list[Row] = []
    asyncio.run(
        classify_paths(files, "http://predictor", rows.append, transport=httpx.MockTransport(handler), **kwargs)
    )
    return rows


def test_503_is_retried_after_retry_after(tmp_path: Path) -> None:
    img = tmp_path / "cat.png"
    img.write_bytes(b"png bytes")
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        assert request.url.path == "/classify" and request.url.params["top_k"] == "1"
        assert b"png bytes" in request.content and b'name="image"' in request.content
        if len(calls) < 3:
            return httpx.Response(503, headers={"Retry-After": "0.3"}, json={"error": "queue full"})
        return httpx.Response(200, json={"model": "m", "model_version": "v", "predictions": [[PREDICTION]]})

    (row,) = run([img], handler, top_k=1)
    assert row.status == "ok" and row.predictions == [PREDICTION]
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.28 and calls[2] - calls[1] >= 0.28


def test_errors_become_rows_and_retries_are_bounded(tmp_path: Path) -> None:
    files = [tmp_path / "busy.png", tmp_path / "bad.png", tmp_path / "missing.png"]
    files[0].write_bytes(b"busy")
    files[1].write_bytes(b"bad")
    attempts = {"busy": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if b"busy" in request.content:
            attempts["busy"] += 1
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "queue full"})
        return httpx.Response(400, json={"error": "bytes are not a decodable image"})

    rows = {Path(r.path).name: r for r in run(files, handler, retries=2, concurrency=2)}
    assert attempts["busy"] == 3
    assert rows["busy.png"].error == "HTTP 503: queue full"
    assert rows["bad.png"].error == "HTTP 400: bytes are not a decodable image"
    assert "cannot read file" in rows["missing.png"].error
    assert all(r.status == "error" for r in rows.values())


def test_connection_errors_are_retried(tmp_path: Path) -> None:
    img = tmp_path / "x.png"
    img.write_bytes(b"x")
    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, json={"predictions": [[PREDICTION]]})

    (row,) = run([img], handler)
    assert row.status == "ok" and len(attempts) == 2


def test_every_file_is_sent_once_under_concurrency(tmp_path: Path) -> None:
    files = []
    for i in range(25):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(f"image {i}".encode())
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, json={"predictions": [[PREDICTION]]})

    rows = run(files, handler, concurrency=4)
    assert sorted(r.path for r in rows) == sorted(map(str, files)) and len(seen) == 25


def test_collect_paths_walks_folders_for_images_and_keeps_explicit_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.JPG", "a/b/2.webp", "a/readme.txt", "a/b/3.png"):
        (tmp_path / name).write_bytes(b"x")
    explicit = tmp_path / "scan.tiff"
    got = collect_paths([str(tmp_path / "a"), str(explicit)])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a/1.JPG", "a/b/2.webp", "a/b/3.png", "scan.tiff"]


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("100000") == 60.0  # capped
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now


def test_writers_jsonl_and_csv() -> None:
    rows = [
        Row("a.png", "ok", [PREDICTION, {**PREDICTION, "label": "tiger", "class_id": 282}]),
        Row("b.png", "error", error="HTTP 400: bad"),
    ]
    out = io.StringIO()
    writer = RowWriter(out, "jsonl", 2, progress=False)
    for row in rows:
        writer.write(row)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {"path": "a.png", "status": "ok", "predictions": rows[0].predictions},
        {"path": "b.png", "status": "error", "error": "HTTP 400: bad"},
    ]
    assert writer.failed == 1
    out = io.StringIO()
    writer = RowWriter(out, "csv", 2, progress=False)
    for row in rows:
        writer.write(row)
    assert out.getvalue().splitlines() == [
        "path,status,rank,label,score,class_id,job_id,error",
        "a.png,ok,1,tabby,0.9,281,,",
        "a.png,ok,2,tiger,0.9,282,,",
        "b.png,error,,,,,,HTTP 400: bad",
    ]
