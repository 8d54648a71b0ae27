"""gRPC under a burst, through a real server: every call is answered OK or refused with a status that says
why and when to come back (``grpc-retry-pushback-ms``), never a silent CANCELLED; message limits equal
REST's; a valid client is served while the burst runs."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.support.servers import ServerProcess, jpeg_bytes, start_grpc_server

MAX_PENDING = 8
BURST = 2000
BATCH_DELAY_MS = 1000
"""Calls admitted wait up to this for company: the calls in progress pile up to the pending limit."""
CHANNELS = 20
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # over gRPC's usual 4-8 MiB, so that the REST limit visibly applies


@pytest.fixture(scope="module")
def small_jpeg(photos) -> bytes:
    return jpeg_bytes(photos["chelsea"], size=(160, 120))


@pytest.fixture(scope="module")
def burst_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    server, grpc_port = start_grpc_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("grpc-burst"),
        grpc_max_pending_rpcs=MAX_PENDING,
        max_batch_delay_ms=BATCH_DELAY_MS,
        max_queue_wait_ms=60_000,  # the queue admits what waits for its batch: the pending limit is what binds
        max_request_bytes=MAX_REQUEST_BYTES,
        rejection_log_interval_seconds=60,
    )
    yield server, grpc_port
    server.stop()


def _request(image: bytes) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name="classifier",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])],
        raw_input_contents=[struct.pack("<I", len(image)) + image],  # BYTES: each element length-prefixed
    )


async def _call(stub: GRPCInferenceServiceStub, request: pb.ModelInferRequest) -> dict:
    call = stub.ModelInfer(request, timeout=120)
    try:
        await call
    except aio.AioRpcError:
        pass
    trailing = dict(await call.trailing_metadata() or ())
    return {"code": await call.code(), "details": await call.details(), "trailing": trailing}


async def _burst(port: int, image: bytes) -> list[dict]:
    channels = [aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
    try:
        stubs = [GRPCInferenceServiceStub(c) for c in channels]
        request = _request(image)
        return list(await asyncio.gather(*(_call(stubs[i % CHANNELS], request) for i in range(BURST))))
    finally:
        for c in channels:
            await c.close()


def test_a_burst_is_answered_with_statuses_that_say_why_and_when(burst_server, small_jpeg: bytes) -> None:
    server, port = burst_server
    too_many = server.metric("classifier_rejections_total", reason="too_many_calls")
    answered_503 = server.metric("classifier_requests_total", protocol="grpc", code="503")
    beside: list[tuple[int, float]] = []
    stop = threading.Event()

    def valid_client() -> None:  # REST, beside the burst
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                started = time.monotonic()
                r = c.post("/classify", files={"image": ("x.jpg", small_jpeg, "image/jpeg")})
                beside.append((r.status_code, time.monotonic() - started))
                if r.status_code == 503:
                    time.sleep(min(2.0, float(r.headers.get("retry-after", "1"))))

    thread = threading.Thread(target=valid_client)
    thread.start()
    try:
        results = asyncio.run(_burst(port, small_jpeg))
    finally:
        stop.set()
        thread.join(120)
    codes = Counter(r["code"] for r in results)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}, codes
    assert codes[grpc.StatusCode.OK] > 0, codes
    refused = [r for r in results if r["code"] != grpc.StatusCode.OK]
    assert refused, f"{BURST} calls against a limit of {MAX_PENDING}: some must be refused ({codes})"
    for r in refused:
        assert r["details"], r
        assert int(r["trailing"]["grpc-retry-pushback-ms"]) >= 1000, r
    busy = [r for r in refused if r["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert busy, f"the pending limit ({MAX_PENDING}) refuses some: {codes}"
    assert all(f"grpc_max_pending_rpcs={MAX_PENDING}" in r["details"] for r in busy), busy[:3]
    queue = [r for r in refused if r["code"] == grpc.StatusCode.UNAVAILABLE]
    assert all("inference queue" in r["details"] and "Retry-After" in r["details"] for r in queue), queue[:3]
    assert any(code == 200 for code, _ in beside), beside
    # Every refusal is in the metrics: those at the call limit under their own reason, all as gRPC 503s.
    assert server.metric("classifier_rejections_total", reason="too_many_calls") == too_many + len(busy)
    assert server.metric("classifier_requests_total", protocol="grpc", code="503") == answered_503 + len(refused)
    # A valid gRPC client after the burst is served.
    again = asyncio.run(_burst_one(port, small_jpeg))
    assert again["code"] == grpc.StatusCode.OK, again
    assert server.proc.poll() is None


async def _burst_one(port: int, image: bytes) -> dict:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return await _call(GRPCInferenceServiceStub(channel), _request(image))


def test_grpc_message_limits_equal_rests(burst_server, small_jpeg: bytes) -> None:
    _, port = burst_server
    within = asyncio.run(_burst_one(port, small_jpeg + b"\0" * (10 * 1024 * 1024)))  # 10 MiB: over gRPC's default
    assert within["code"] != grpc.StatusCode.RESOURCE_EXHAUSTED, within  # read and classified (or refused as an image)
    over = asyncio.run(_burst_one(port, b"\0" * (MAX_REQUEST_BYTES + 1024)))
    assert over["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED and str(MAX_REQUEST_BYTES) in over["details"], over


def test_a_refused_call_is_logged_under_its_request_id(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A gRPC call refused by the predictor (here: not an image) is counted and logged as an HTTP refusal is,
    under the call's ``x-request-id`` metadata, or else the ``ModelInferRequest`` id."""
    server, grpc_port = start_grpc_server(
        tiny_model_dir, tmp_path, log_format="json",
        rejection_log_interval_seconds=1,
    )  # fmt: skip
    try:
        before = server.metric("classifier_rejections_total", reason="invalid_input")

        async def refused(metadata: tuple[tuple[str, str], ...], request_id: str) -> grpc.StatusCode:
            request = _request(b"not an image")
            request.id = request_id
            async with aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                call = GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=30)
                try:
                    await call
                except aio.AioRpcError:
                    pass
                return await call.code()

        assert (
            asyncio.run(refused((("x-request-id", "grpc-meta-1"),), "infer-id-1")) == grpc.StatusCode.INVALID_ARGUMENT
        )
        time.sleep(1.2)  # a new interval: the next refusal is the first of its kind again
        assert asyncio.run(refused((), "infer-id-2")) == grpc.StatusCode.INVALID_ARGUMENT
        assert server.metric("classifier_rejections_total", reason="invalid_input") == before + 2

        def lines() -> list[dict]:
            return server.log_records("gRPC ModelInfer -> 400:")

        deadline = time.monotonic() + 10
        while len(lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [d["request_id"] for d in lines()] == ["grpc-meta-1", "infer-id-2"], lines()
        assert server.proc.poll() is None
    finally:
        server.stop()


PENDING_LIMIT = 8
WAVES = 3
WAVE_CALLS = 700
WAVE_CHANNELS = 100


def test_the_pending_limit_holds_the_calls_in_progress_under_a_burst(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
) -> None:
    """The queue holds exactly the calls the pending limit lets in (and one REST image beside them), so a call
    in progress past the limit would find it full (UNAVAILABLE): every refusal is the limit's own
    RESOURCE_EXHAUSTED, with a message and pushback, and none is a bare CANCELLED. Before the fix the limit
    was checked before any call of a burst was counted, and let most of a wave in."""
    server, grpc_port = start_grpc_server(
        tiny_model_dir,
        tmp_path,
        grpc_max_pending_rpcs=PENDING_LIMIT,
        max_queue_images=PENDING_LIMIT + 1,  # + the valid REST client's one image
        max_batch_delay_ms=BATCH_DELAY_MS,
        max_queue_wait_ms=60_000,
        rejection_log_interval_seconds=60,
    )
    try:
        beside: list[int] = []
        stop = threading.Event()

        def valid_client() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                while not stop.is_set():
                    r = c.post("/classify", files={"image": ("x.jpg", small_jpeg, "image/jpeg")})
                    beside.append(r.status_code)

        async def waves() -> list[dict]:
            channels = [aio.insecure_channel(f"127.0.0.1:{grpc_port}") for _ in range(WAVE_CHANNELS)]
            try:
                stubs = [GRPCInferenceServiceStub(c) for c in channels]
                request, out = _request(small_jpeg), []
                for _ in range(WAVES):  # each wave starts with nothing in progress
                    calls = (_call(stubs[i % WAVE_CHANNELS], request) for i in range(WAVE_CALLS))
                    out += await asyncio.gather(*calls)
                return out
            finally:
                for c in channels:
                    await c.close()

        thread = threading.Thread(target=valid_client)
        thread.start()
        try:
            results = asyncio.run(waves())
        finally:
            stop.set()
            thread.join(120)
        codes = Counter(r["code"] for r in results)
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        busy = [r for r in results if r["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED]
        for r in busy:
            assert f"grpc_max_pending_rpcs={PENDING_LIMIT}" in r["details"], r
            assert int(r["trailing"]["grpc-retry-pushback-ms"]) >= 1000, r
        assert beside and set(beside) == {200}, Counter(beside)
        assert server.metric("classifier_rejections_total", reason="too_many_calls") == len(busy)
        assert server.metric("classifier_rejections_total", reason="queue_full") == 0
        log = server.log()
        assert "grpc method:" not in log, "KServe's per-call INFO line is left out"
        assert "Starting gRPC server on" in log, "KServe's other log lines stay"
        assert server.proc.poll() is None
    finally:
        server.stop()
