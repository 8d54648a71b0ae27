"""The front door against real server processes: what is mounted, who may change the server's state,
liveness after an unload, metrics on their own port; a valid client is served throughout each attack."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest

from tests.support.servers import ServerProcess, free_port, start_server

TOKEN = "front-door-test-token"
GRACE_S = 3.0


def settled(server: ServerProcess, timeout_s: float = 300) -> ServerProcess:
    """Wait until the server's background checks (precision, speed: they compile engines on the same
    cores) are done, so a latency measured next is the server's normal one."""
    deadline = time.monotonic() + timeout_s
    while "background checks done" not in server.log() and "background checks started" in server.log():
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.5)
    return server


def normal_seconds(server: ServerProcess, image: bytes) -> float:
    """The slowest of five sequential classifications with nothing else going on."""
    times = []
    for _ in range(5):
        started = time.monotonic()
        r = server.client.post("/classify", files={"image": ("cat.jpg", image, "image/jpeg")})
        assert r.status_code == 200, r.text
        times.append(time.monotonic() - started)
    return max(times)


class ValidClient:
    """Classifies one image in a loop on its own connection until stopped; records each answer's status
    and time, and requires each to be 200 within a generous multiple of the server's normal time (the
    machine's cores are shared)."""

    def __init__(self, server: ServerProcess, image: bytes) -> None:
        self.server, self.image = settled(server), image
        self.bound_s = 5 + 5 * normal_seconds(server, image)
        self.results: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=60) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                r = client.post("/classify", files={"image": ("cat.jpg", self.image, "image/jpeg")})
                self.results.append((r.status_code, time.monotonic() - started))

    def __enter__(self) -> ValidClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(90)
        assert self.results, "the valid client got no answer at all"
        assert {status for status, _ in self.results} == {200}, self.results
        assert max(seconds for _, seconds in self.results) < self.bound_s, (self.bound_s, self.results)


def attack(server: ServerProcess, requests: list[tuple[str, str, dict[str, str]]], workers: int = 8) -> list[int]:
    """Send (method, path, headers) requests from ``workers`` threads; their statuses."""

    def one(req: tuple[str, str, dict[str, str]]) -> int:
        method, path, headers = req
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return client.request(method, path, headers=headers).status_code

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, requests))


@pytest.fixture(scope="module")
def admin_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, int, int]]:
    """Repository routes on behind a token file, gRPC on, docs on, metrics on their own port, short grace."""
    tmp = tmp_path_factory.mktemp("admin-server")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    grpc_port, metrics_port = free_port(), free_port()
    server = start_server(
        tiny_model_dir,
        tmp,
        enable_model_repository_routes="true",
        admin_token_file=token_file,
        enable_grpc="true",
        grpc_port=grpc_port,
        enable_docs_url="true",
        http_metrics_port=metrics_port,
        liveness_not_ready_grace_seconds=GRACE_S,
    )
    yield server, grpc_port, metrics_port
    server.stop()


def test_with_the_setting_off_repository_routes_and_docs_are_not_mounted(
    default_server: ServerProcess, cat_jpeg: bytes
):
    name = default_server.model_name
    repository = [
        ("POST", f"/v2/repository/models/{name}/unload", {}),
        ("POST", f"/v2/repository/models/{name}/load", {}),
        ("POST", f"/v2/repository/models/{name}/unload", {"Authorization": "Bearer anything"}),
    ]
    with ValidClient(default_server, cat_jpeg):
        statuses = attack(default_server, repository * 40)
    assert set(statuses) <= {404, 405} and statuses, statuses
    for page in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
        assert default_server.client.get(page).status_code == 404, page
    assert default_server.client.post(f"/v1/models/{name}:explain", json={}).status_code in (404, 405)
    assert default_server.client.get(f"/v2/models/{name}/ready").status_code == 200
    assert default_server.client.get("/v2/health/live").status_code == 200


def test_repository_routes_refuse_callers_without_the_token_while_a_client_is_served(admin_server, cat_jpeg: bytes):
    server, _, _ = admin_server
    unload = f"/v2/repository/models/{server.model_name}/unload"
    load = f"/v2/repository/models/{server.model_name}/load"
    attempts = [
        ("POST", unload, {}),
        ("POST", load, {}),
        ("POST", unload, {"Authorization": f"Basic {TOKEN}"}),
        ("POST", unload, {"Authorization": "Bearer wrong-token"}),
        ("POST", unload, {"Authorization": f"Bearer {TOKEN}x"}),
    ]
    with ValidClient(server, cat_jpeg):
        statuses = attack(server, attempts * 30)
    assert statuses.count(401) == 90 and statuses.count(403) == 60, statuses
    r = server.client.post(unload)
    assert (
        r.status_code == 401 and "Bearer" in r.headers["www-authenticate"] and "admin_token_file" in r.json()["error"]
    )
    assert server.client.get(f"/v2/models/{server.model_name}/ready").status_code == 200
    r = server.client.post(load, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["load"] is True


def test_grpc_repository_calls_are_refused_even_with_the_token(admin_server):
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    server, grpc_port, _ = admin_server
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = (
            (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=server.model_name)),
            (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=server.model_name)),
        )
        for call, request in calls:
            for metadata in ((), (("authorization", f"Bearer {TOKEN}"),)):
                with pytest.raises(grpc.RpcError) as caught:
                    call(request, metadata=metadata, timeout=30)
                assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert "over HTTP with the admin token" in caught.value.details()
        ready = stub.ModelReady(pb.ModelReadyRequest(name=server.model_name), timeout=30)
        assert ready.ready


def test_docs_follow_the_setting_and_metrics_live_on_their_own_port(admin_server):
    server, _, metrics_port = admin_server
    schema = server.client.get("/openapi.json")
    assert schema.status_code == 200 and "/classify" in schema.json()["paths"]
    assert server.client.get("/docs").status_code == 200 and server.client.get("/redoc").status_code == 200
    scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30)
    assert scrape.status_code == 200 and "classifier_requests_total" in scrape.text
    assert server.client.get("/metrics").status_code == 404  # not on the inference port any more


def test_an_authorized_unload_makes_liveness_fail_after_the_grace(admin_server):
    """Last in this module: it takes the server out of service, as an unload does."""
    server, _, _ = admin_server
    assert server.client.get("/v2/health/live").status_code == 200
    before = time.monotonic()
    r = server.client.post(
        f"/v2/repository/models/{server.model_name}/unload", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 200, r.text
    assert server.client.get(f"/v2/models/{server.model_name}/ready").status_code == 503
    live = server.client.get("/v2/health/live")
    if time.monotonic() - before < GRACE_S:  # asked within the grace: still live
        assert live.status_code == 200, live.text
    deadline = time.monotonic() + GRACE_S + 60
    while time.monotonic() < deadline:
        live = server.client.get("/v2/health/live")
        if live.status_code != 200:
            break
        time.sleep(0.2)
    assert live.status_code == 503, live.text
    assert "not been ready" in live.json()["error"] and time.monotonic() - before >= GRACE_S
