"""The gRPC front door's parts (predictor.grpc_guard, predictor.health, predictor.open_files): the call limit
when a burst's interceptors all run before any handler, the options gRPC core gets, health answers equal to
REST's, the open-file limit. Through a real server: tests/integration/test_grpc_front_door.py."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from grpc_interceptor import exceptions as grpc_exceptions
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from prometheus_client import CollectorRegistry

from predictor import routes
from predictor.config import Settings
from predictor.grpc_guard import PUSHBACK_KEY, CallLimit, GrpcHealth, server_options
from predictor.health import Health
from predictor.metrics import PredictorMetrics
from predictor.open_files import OTHER_OPEN_FILES, needed_open_files
from predictor.pipeline import Pipeline
from tests.support.servers import REPO

METHOD = "/inference.GRPCInferenceService/ModelInfer"


class Context:
    """The part of ``grpc.aio.ServicerContext`` the interceptor uses."""

    def __init__(self) -> None:
        self.trailing: tuple[tuple[str, str], ...] = ()

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method, self.invocation_metadata = method, ()


class Servicer:
    """A ModelInfer that holds every call until released; records the requests it got (parsed)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered: list[pb.ModelInferRequest] = []

    async def infer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        self.entered.append(request)
        await self.release.wait()
        return pb.ModelInferResponse(model_name=request.model_name)

    async def continuation(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            self.infer,
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelInferResponse.SerializeToString,
        )


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Let the loop run until ``condition`` holds (a poll with a deadline)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition did not come true"
        await asyncio.sleep(0)


async def test_a_burst_whose_interceptors_all_run_first_is_held_to_the_limit() -> None:
    """gRPC's server runs a call's interceptors when its headers arrive and its handler once its message has:
    under a burst every interceptor runs before any handler, with nothing in progress yet."""
    refusals: list[None] = []
    limit = CallLimit(3, lambda: 2.5, on_refusal=lambda: refusals.append(None))
    servicer = Servicer()
    handlers = [await limit.intercept_service(servicer.continuation, Details(METHOD)) for _ in range(10)]
    assert limit.pending == 0
    raw = pb.ModelInferRequest(model_name="classifier").SerializeToString()
    contexts = [Context() for _ in handlers]
    calls = [asyncio.ensure_future(h.unary_unary(raw, c)) for h, c in zip(handlers, contexts, strict=True)]
    await until(lambda: sum(c.done() for c in calls) == 7)  # the seven past the limit are refused at once
    assert len(servicer.entered) == 3 and limit.pending == 3
    assert all(r.model_name == "classifier" for r in servicer.entered), "admitted calls get their parsed message"
    refused = [(c, ctx) for c, ctx in zip(calls, contexts, strict=True) if c.done()]
    assert len(refused) == 7 and len(refusals) == 7 and limit.refused == 7
    for call, ctx in refused:
        err = call.exception()
        assert isinstance(err, grpc_exceptions.ResourceExhausted), err
        assert "grpc_max_pending_rpcs=3" in err.details and "3 calls in progress" in err.details
        assert dict(ctx.trailing) == {PUSHBACK_KEY: "2500"}
    servicer.release.set()
    results = await asyncio.gather(*(c for c in calls if not c.done()))
    assert [r.model_name for r in results] == ["classifier"] * 3
    assert limit.pending == 0


async def test_a_call_never_handled_or_cancelled_leaves_no_count() -> None:
    limit = CallLimit(1, lambda: 1.0)
    servicer = Servicer()
    # Intercepted, then its client went away before the message came: the handler never runs.
    await limit.intercept_service(servicer.continuation, Details(METHOD))
    assert limit.pending == 0
    handler = await limit.intercept_service(servicer.continuation, Details(METHOD))
    call = asyncio.ensure_future(handler.unary_unary(b"", Context()))
    await until(lambda: bool(servicer.entered))
    assert limit.pending == 1
    call.cancel()  # cancelled while in progress
    with pytest.raises(asyncio.CancelledError):
        await call
    assert limit.pending == 0
    servicer.release.set()
    handler = await limit.intercept_service(servicer.continuation, Details(METHOD))
    assert await handler.unary_unary(b"", Context()) == pb.ModelInferResponse()


async def test_a_message_that_does_not_parse_is_invalid_argument_and_not_left_counted() -> None:
    limit = CallLimit(1, lambda: 1.0)
    servicer = Servicer()
    handler = await limit.intercept_service(servicer.continuation, Details(METHOD))
    assert handler.request_deserializer is None, "the interceptor parses the message once the call is counted"
    with pytest.raises(grpc_exceptions.InvalidArgument, match="does not parse"):
        await handler.unary_unary(b"\xff\xff\xff", Context())
    assert limit.pending == 0 and not servicer.entered


async def full_limit(retry_after_s: Callable[[], float]) -> tuple[CallLimit, Servicer, asyncio.Future[Any]]:
    """A limit of one call, held full by a call in progress (the future: its answer once released)."""
    limit = CallLimit(1, retry_after_s)
    servicer = Servicer()
    first = await limit.intercept_service(servicer.continuation, Details(METHOD))
    held = asyncio.ensure_future(first.unary_unary(b"", Context()))
    await until(lambda: bool(servicer.entered))
    return limit, servicer, held


async def test_a_full_server_refuses_in_the_interceptor_without_parsing() -> None:
    limit, servicer, held = await full_limit(lambda: 0.2)
    handler = await limit.intercept_service(servicer.continuation, Details(METHOD))
    context = Context()
    with pytest.raises(grpc_exceptions.ResourceExhausted):
        await handler.unary_unary(b"\xff not a message", context)  # not parsed: no InvalidArgument
    assert dict(context.trailing) == {PUSHBACK_KEY: "1000"}, "at least 1 s"
    servicer.release.set()
    await held


def test_server_options_set_each_connection_limit_from_its_setting() -> None:
    settings = Settings(
        grpc_max_connections=7,
        grpc_max_connection_idle_s=1.5,
        grpc_handshake_timeout_s=0.25,
        grpc_max_connection_age_s=120,
        request_timeout_ms=9000,
        max_request_bytes=5 << 20,
    )
    options = dict(server_options(settings))
    assert options["grpc.max_allowed_incoming_connections"] == 7
    assert options["grpc.max_connection_idle_ms"] == 1500
    assert options["grpc.server_handshake_timeout_ms"] == 250
    assert options["grpc.max_connection_age_ms"] == 120_000
    assert options["grpc.max_connection_age_grace_ms"] == 9000
    assert options["grpc.max_receive_message_length"] == options["grpc.max_send_message_length"] == 5 << 20
    assert all(isinstance(v, int) and 0 < v < 2**31 for v in options.values()), options
    huge = dict(server_options(Settings(grpc_max_connection_age_s=86_400, request_timeout_ms=10**10)))
    assert huge["grpc.max_connection_age_ms"] == 86_400_000 and huge["grpc.max_connection_age_grace_ms"] == 2**31 - 1


def _health(grace_s: float) -> tuple[TestClient, GrpcHealth, Pipeline]:
    """REST's health routes (predictor.routes) and gRPC's answers over one pipeline that has not loaded."""
    settings = Settings(liveness_not_ready_grace_seconds=grace_s)
    metrics = PredictorMetrics(CollectorRegistry())
    pipeline = Pipeline(settings, metrics)
    app = FastAPI()
    routes.install(app, settings, pipeline, metrics)
    return TestClient(app), GrpcHealth(Health(settings, pipeline)), pipeline


def test_grpc_health_answers_what_rest_answers_in_every_state() -> None:
    client, grpc_health, pipeline = _health(grace_s=0)

    def rest() -> tuple[bool, bool, bool]:
        return (
            client.get("/v2/health/live").status_code == 200,
            client.get("/v2/health/ready").status_code == 200,
            client.get("/v2/models/classifier/ready").status_code == 200,
        )

    def grpc_() -> tuple[bool, bool, bool]:
        return grpc_health.live(), grpc_health.ready(), grpc_health.model_ready("classifier", "")

    with client:
        assert rest() == grpc_() == (True, False, False)  # loading: live, not ready
        pipeline.ready = True
        assert rest() == grpc_() == (True, True, True)
        pipeline.ready = False  # unloaded; the grace (0 s) is over at once
        assert rest() == grpc_() == (False, False, False)
        pipeline.ready = True
        assert rest() == grpc_() == (True, True, True)
        assert client.get("/v2/models/other/ready").status_code == 404
        with pytest.raises(grpc_exceptions.NotFound, match="not served here"):
            grpc_health.model_ready("other", "")
        with pytest.raises(grpc_exceptions.NotFound, match="version"):
            grpc_health.model_ready("classifier", "not-this-version")


def test_grpc_liveness_holds_within_the_grace() -> None:
    _, grpc_health, pipeline = _health(grace_s=3600)
    pipeline.ready = True
    pipeline.ready = False
    assert grpc_health.live() and not grpc_health.ready()


def test_the_open_files_needed_count_every_connection_cap() -> None:
    assert needed_open_files(Settings(max_connections=100)) == 100 + OTHER_OPEN_FILES  # gRPC off: not counted
    on = Settings(max_connections=100, enable_grpc=True, grpc_max_connections=50)
    assert needed_open_files(on) == 150 + OTHER_OPEN_FILES


@pytest.mark.parametrize(
    ("soft", "hard", "expected_soft", "warns"),
    [(64, 4096, 1000 + 1000 + OTHER_OPEN_FILES, False), (64, 1024, 1024, True), (8192, 8192, 8192, False)],
)
def test_the_soft_open_file_limit_is_raised_to_what_the_caps_need(soft, hard, expected_soft, warns) -> None:
    """In a child process (limits are per process): the soft limit goes up to what the settings need, at most
    the hard limit, never down; below the need a warning names the settings."""
    code = f"""
import logging, resource
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
from predictor.config import Settings
from predictor.open_files import ensure_open_files
result = ensure_open_files(Settings(enable_grpc=True))
print("soft", resource.getrlimit(resource.RLIMIT_NOFILE)[0], result.enough)
"""
    hard_now = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard_now != resource.RLIM_INFINITY and hard_now < hard:
        pytest.fail(f"this test needs a hard open-file limit of at least {hard}, the machine's is {hard_now}")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"soft {expected_soft} {not warns}" in r.stdout, (r.stdout, r.stderr)
    assert ("WARNING open-file limit 1024 (hard) is below" in r.stderr) == warns, r.stderr
    assert ("grpc_max_connections=1000" in r.stderr) == warns


async def test_health_and_metadata_calls_are_never_counted_or_refused() -> None:
    """A full server still answers its health probes: only ModelInfer is limited."""
    limit, servicer, held = await full_limit(lambda: 1.0)
    assert limit.pending == 1
    for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata"):
        details = Details(f"/inference.GRPCInferenceService/{name}")
        handler = await limit.intercept_service(servicer.continuation, details)
        assert handler.request_deserializer == pb.ModelInferRequest.FromString, f"{name}: the handler as it was"
    assert limit.refused == 0
    servicer.release.set()
    await held
