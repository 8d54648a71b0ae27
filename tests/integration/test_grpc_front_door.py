"""The gRPC port against hostile connections, through real server processes: connections past
``grpc_max_connections`` are closed at once and the process's open files stay bounded; silent, idle and
stalled-call connections are closed at their limits; REST and a valid gRPC client are served throughout.
gRPC's health tells what REST's does after an unload."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.support.rawgrpc import closed_by_server, connect, count_closed, open_fds, wait_for
from tests.support.servers import ServerProcess, jpeg_bytes, start_grpc_server

CAP = 16
ATTACKERS = 300
HANDSHAKE_S = 1.0
IDLE_S = 4.0
AGE_S = 6.0
REQUEST_TIMEOUT_MS = 2000  # the age limit's grace
TOKEN = "grpc-front-door-token"
GRACE_S = 3.0


@pytest.fixture(scope="module")
def small_jpeg(photos) -> bytes:
    return jpeg_bytes(photos["chelsea"], size=(160, 120))


def _infer_request(image: bytes) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name="classifier",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])],
        raw_input_contents=[len(image).to_bytes(4, "little") + image],
    )


class ValidClients:
    """A REST client and a gRPC client (one channel) classifying in turn, each on its own thread, until
    stopped; every answer's status is recorded."""

    def __init__(self, server: ServerProcess, grpc_port: int, image: bytes) -> None:
        self.server, self.image = server, image
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.stub = GRPCInferenceServiceStub(self.channel)
        self.rest: list[int] = []
        self.grpc: list[grpc.StatusCode] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run_rest), threading.Thread(target=self._run_grpc)]

    def grpc_call(self, stub: GRPCInferenceServiceStub | None = None, timeout_s: float = 30) -> grpc.StatusCode:
        try:
            (stub or self.stub).ModelInfer(_infer_request(self.image), timeout=timeout_s)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    def _run_rest(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            while not self._stop.is_set():
                r = client.post("/classify", files={"image": ("x.jpg", self.image, "image/jpeg")})
                self.rest.append(r.status_code)
                time.sleep(0.05)

    def _run_grpc(self) -> None:
        while not self._stop.is_set():
            self.grpc.append(self.grpc_call())
            time.sleep(0.05)

    def __enter__(self) -> ValidClients:
        assert self.grpc_call() == grpc.StatusCode.OK  # the channel's connection is up before the attack
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        self.channel.close()
        if exc[0] is None:
            assert self.rest and set(self.rest) == {200}, Counter(self.rest)
            assert self.grpc and set(self.grpc) == {grpc.StatusCode.OK}, Counter(self.grpc)


def new_channel(port: int) -> grpc.Channel:
    """A channel with a connection of its own (channels of one process otherwise share connections)."""
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


@contextmanager
def held(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def test_connections_past_the_cap_are_closed_at_once_while_rest_and_grpc_are_served(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
) -> None:
    server, grpc_port = start_grpc_server(tiny_model_dir, tmp_path, grpc_max_connections=CAP)
    try:
        pid = server.proc.pid
        with ValidClients(server, grpc_port, small_jpeg) as clients:
            before = open_fds(pid)
            with held([connect(grpc_port, "preface") for _ in range(ATTACKERS)]) as attackers:
                # The valid gRPC client holds one of the CAP connections; the attackers get the rest at most.
                wait_for(lambda: count_closed(attackers) >= ATTACKERS - CAP + 1, 30, "connections past the cap closed")
                assert ATTACKERS - count_closed(attackers) <= CAP - 1
                assert open_fds(pid) <= before + CAP + 8, (before, open_fds(pid))
                assert server.client.get("/v2/health/live").status_code == 200
                assert clients.grpc_call() == grpc.StatusCode.OK  # the valid channel keeps its connection
                with new_channel(grpc_port) as fresh:  # a new connection finds the cap full
                    refused = clients.grpc_call(GRPCInferenceServiceStub(fresh), timeout_s=5)
                    assert refused == grpc.StatusCode.UNAVAILABLE
                rest_during, grpc_during = len(clients.rest), len(clients.grpc)
                wait_for(lambda: len(clients.rest) > rest_during + 2, 30, "REST answers while the cap is full")
                wait_for(lambda: len(clients.grpc) > grpc_during + 2, 30, "gRPC answers while the cap is full")
            with new_channel(grpc_port) as fresh:  # the attackers gone, room again
                stub = GRPCInferenceServiceStub(fresh)
                wait_for(lambda: clients.grpc_call(stub, 5) == grpc.StatusCode.OK, 30, "a new channel served")
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_silent_idle_and_stalled_connections_are_closed_at_their_limits(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
) -> None:
    """Nothing sent: closed at the handshake deadline. The preface, then nothing: at the idle limit. A call's
    headers and never its message (the connection is not idle, and the call counts in no limit): at the age
    limit plus its grace. They close in that order; a valid client is served throughout."""
    server, grpc_port = start_grpc_server(
        tiny_model_dir,
        tmp_path,
        grpc_handshake_timeout_s=HANDSHAKE_S,
        grpc_max_connection_idle_s=IDLE_S,
        grpc_max_connection_age_s=AGE_S,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        grpc_max_pending_rpcs=2,  # fewer than the stalled calls: they must not hold the valid client's place
    )
    try:
        with ValidClients(server, grpc_port, small_jpeg):
            silent = [connect(grpc_port, "nothing") for _ in range(10)]
            idle = [connect(grpc_port, "preface") for _ in range(10)]
            stalled = [connect(grpc_port, "stalled_call") for _ in range(10)]
            with held(silent + idle + stalled):
                started = time.monotonic()
                wait_for(lambda: count_closed(silent) == 10, HANDSHAKE_S + 10, "silent connections closed")
                assert not any(closed_by_server(s) for s in idle + stalled), "a preface passes the handshake"
                wait_for(lambda: count_closed(idle) == 10, IDLE_S + 10, "idle connections closed")
                assert time.monotonic() - started >= IDLE_S * 0.9, "closed by the idle limit, not before"
                assert not any(closed_by_server(s) for s in stalled), "a call in progress keeps a connection busy"
                limit_s = AGE_S * 1.1 + REQUEST_TIMEOUT_MS / 1000
                wait_for(lambda: count_closed(stalled) == 10, limit_s + 10, "stalled-call connections closed")
                assert time.monotonic() - started >= AGE_S * 0.9
        assert server.proc.poll() is None
    finally:
        server.stop()


@pytest.fixture(scope="module")
def unloadable(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    """gRPC on, the repository routes on behind a token (an unload is how a model stops being ready), a short
    liveness grace."""
    tmp = tmp_path_factory.mktemp("grpc-health")
    token_file = tmp / "token"
    token_file.write_text(TOKEN)
    server, grpc_port = start_grpc_server(
        tiny_model_dir,
        tmp,
        enable_model_repository_routes="true",
        admin_token_file=token_file,
        liveness_not_ready_grace_seconds=GRACE_S,
    )
    yield server, grpc_port
    server.stop()


def test_grpc_health_says_what_rest_says_before_and_after_an_unload(unloadable) -> None:
    server, grpc_port = unloadable
    name = server.model_name
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)

        def grpc_health() -> tuple[bool, bool, bool]:
            return (
                stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live,
                stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready,
                stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10).ready,
            )

        def rest_health() -> tuple[bool, bool, bool]:
            paths = ("/v2/health/live", "/v2/health/ready", f"/v2/models/{name}/ready")
            return tuple(server.client.get(p).status_code == 200 for p in paths)  # type: ignore[return-value]

        assert grpc_health() == rest_health() == (True, True, True)
        with pytest.raises(grpc.RpcError) as other:
            stub.ModelReady(pb.ModelReadyRequest(name="other"), timeout=10)
        assert other.value.code() == grpc.StatusCode.NOT_FOUND and "not served here" in other.value.details()
        before = time.monotonic()
        r = server.client.post(f"/v2/repository/models/{name}/unload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        live, ready, model_ready = grpc_health()
        assert not ready and not model_ready
        assert (live, ready, model_ready) == rest_health() or time.monotonic() - before >= GRACE_S
        if time.monotonic() - before < GRACE_S:  # asked within the grace: still live, as REST says
            assert live
        wait_for(lambda: not grpc_health()[0], GRACE_S + 30, "gRPC ServerLive false after the grace")
        assert time.monotonic() - before >= GRACE_S
        assert grpc_health() == rest_health() == (False, False, False)
