"""Each KServe workaround of predictor/kserve_compat.py against the installed kserve, undone afterwards."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from predictor import kserve_compat
from tests.support.servers import REPO


def test_the_installed_kserve_is_the_one_the_workarounds_were_written_for(caplog) -> None:
    assert kserve_compat.kserve_version() == kserve_compat.WRITTEN_FOR
    assert kserve_compat.check_version() is True
    assert "was written for" not in caplog.text


def test_importing_the_model_server_leaves_argv_alone_and_ignores_our_flags() -> None:
    """In a fresh process with our flags on argv, as `python -m predictor serve` has them."""
    code = (
        "import sys; sys.argv = ['predictor', 'serve', '--max_batch_size', '8', '--http_port', '9999']; "
        "from predictor import kserve_compat; ms = kserve_compat.import_model_server(); "
        "assert sys.argv[2:] == ['--max_batch_size', '8', '--http_port', '9999'], sys.argv; "
        "print(ms.args.http_port)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "8080", "KServe must not read our argv (its default port stays)"


@pytest.fixture
def undo_after():
    undos = []
    yield undos.append
    for undo in reversed(undos):
        undo()


def test_the_timing_middleware_is_dropped_the_others_kept_and_it_can_be_undone(undo_after) -> None:
    from kserve.protocol.rest.server import RESTServer
    from starlette.middleware.gzip import GZipMiddleware
    from timing_asgi import TimingMiddleware

    def middlewares() -> list[type]:
        app = FastAPI()
        app.add_middleware(GZipMiddleware)  # one added before KServe's, as routes.install adds ours
        server = RESTServer.__new__(RESTServer)
        server.access_log_format = None
        RESTServer._add_middlewares(server, app)
        return [m.cls for m in app.user_middleware]

    original = RESTServer._add_middlewares
    assert middlewares() == [TimingMiddleware, GZipMiddleware]  # what KServe 0.21 does on its own
    undo = kserve_compat.drop_timing_middleware()
    undo_after(undo)
    assert kserve_compat.drop_timing_middleware()() is None  # idempotent: a second call changes nothing
    assert middlewares() == [GZipMiddleware]
    undo()
    assert RESTServer._add_middlewares is original and middlewares() == [TimingMiddleware, GZipMiddleware]


def kserve_rest_server():
    """KServe's REST server object, with the data plane and repository extension ModelServer gives it."""
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    registry = ModelRepository()
    server = RESTServer.__new__(RESTServer)
    server.dataplane = DataPlane(model_registry=registry)
    server.model_repository_extension = ModelRepositoryExtension(model_registry=registry)
    return server


def kserve_routes_added_to(app: FastAPI, undo_after) -> list:
    added = []
    undo_after(kserve_compat.after_kserve_routes(lambda app, routes: added.extend(routes)))
    kserve_rest_server()._register_endpoints(app)
    return added


def test_kserve_adds_exactly_the_routes_kserve_compat_knows(undo_after) -> None:
    """A kserve upgrade that adds, removes or changes a route fails here (and the new route is not served)."""
    app = FastAPI(openapi_url=None)
    added = kserve_routes_added_to(app, undo_after)
    assert added == app.router.routes, "every route is visible in app.router.routes, none lazily included"
    found = {(r.path, m) for r in added for m in r.methods}
    assert found == set(kserve_compat.KSERVE_ROUTES)
    assert all(len(r.methods) == 1 for r in added)


def test_after_kserve_routes_can_be_undone(undo_after) -> None:
    from kserve.protocol.rest.server import RESTServer

    original = RESTServer._register_endpoints
    undo = kserve_compat.after_kserve_routes(lambda app, routes: None)
    assert RESTServer._register_endpoints is not original
    undo()
    assert RESTServer._register_endpoints is original


def test_include_flat_serves_each_route_visibly() -> None:
    from fastapi import APIRouter

    router = APIRouter(prefix="/v9", tags=["t"])
    router.add_api_route("/thing", lambda: "ok", methods=["GET"])
    app = FastAPI()
    kserve_compat.include_flat(app, router)
    assert [getattr(r, "path", None) for r in app.router.routes][-1] == "/v9/thing"
    with TestClient(app) as client:
        assert client.get("/v9/thing").json() == "ok"
    with pytest.raises(RuntimeError, match="prefix"):
        kserve_compat.include_flat(app, router, prefix="/x")


def test_replace_app_makes_kserve_serve_ours() -> None:
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from uvicorn.importer import import_from_string

    model_server = kserve_compat.import_model_server()
    theirs = model_server.app
    ours = FastAPI()
    try:
        assert kserve_compat.replace_app(model_server, ours) is ours
        assert import_from_string(FASTAPI_APP_IMPORT_STRING) is ours
    finally:
        model_server.app = theirs


async def test_grpc_repository_calls_run_the_check_first_and_can_be_undone() -> None:
    from kserve.protocol.grpc.servicer import InferenceServicer

    calls = []

    async def refuse(context) -> None:
        calls.append(context)
        raise PermissionError("refused")

    original = InferenceServicer.RepositoryModelUnload
    undo = kserve_compat.guard_grpc_repository(refuse)
    try:
        servicer = InferenceServicer.__new__(InferenceServicer)
        for name in ("RepositoryModelLoad", "RepositoryModelUnload"):
            with pytest.raises(PermissionError):
                await getattr(servicer, name)(object(), context=name)
        assert calls == ["RepositoryModelLoad", "RepositoryModelUnload"]
    finally:
        undo()
    assert InferenceServicer.RepositoryModelUnload is original


async def test_grpc_health_rpcs_answer_ours_and_can_be_undone() -> None:
    """KServe's own ServerLive/ServerReady say true whatever the model's state; ours replace them."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.servicer import InferenceServicer

    class Answers:
        def live(self) -> bool:
            return False

        def ready(self) -> bool:
            return False

        def model_ready(self, name: str, version: str) -> bool:
            return (name, version) == ("m", "v1")

    originals = {n: getattr(InferenceServicer, n) for n in ("ServerLive", "ServerReady", "ModelReady")}
    undo = kserve_compat.answer_grpc_health(Answers())
    try:
        servicer = InferenceServicer.__new__(InferenceServicer)
        assert await servicer.ServerLive(pb.ServerLiveRequest(), None) == pb.ServerLiveResponse(live=False)
        assert await servicer.ServerReady(pb.ServerReadyRequest(), None) == pb.ServerReadyResponse(ready=False)
        ready = await servicer.ModelReady(pb.ModelReadyRequest(name="m", version="v1"), None)
        assert ready == pb.ModelReadyResponse(ready=True)
        assert not (await servicer.ModelReady(pb.ModelReadyRequest(name="m"), None)).ready
    finally:
        undo()
    assert {n: getattr(InferenceServicer, n) for n in originals} == originals


def test_grpc_inputs_raw_bytes_and_parameters_as_kserve_builds_them() -> None:
    from kserve import InferRequest
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    msg = pb.ModelInferRequest(
        model_name="m",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])],
        raw_input_contents=[b"\x03\x00\x00\x00abc"],
        parameters={"top_k": pb.InferParameter(int64_param=3)},
    )
    req = InferRequest.from_grpc(msg)
    assert kserve_compat.grpc_input_raw(req.inputs[0]) == b"\x03\x00\x00\x00abc"
    assert kserve_compat.http_parameters(req.parameters) == {"top_k": 3}
    assert kserve_compat.http_parameters(None) is None and kserve_compat.http_parameters({"a": 1}) == {"a": 1}


def test_the_grpc_interceptor_passes_grpc_interceptor_exceptions_through() -> None:
    """predictor.protocol.status.grpc_error relies on this branch of KServe's interceptor."""
    import inspect

    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor

    source = inspect.getsource(ExceptionToStatusInterceptor.handle_exception)
    assert "isinstance(ex, GrpcException)" in source and "super().handle_exception" in source


def test_configure_http_server_hands_kserves_uvicorn_config_to_us_and_can_be_undone() -> None:
    import uvicorn
    from kserve.protocol.rest.server import RESTServer

    from predictor.http_guard import ConnectionLimits, GuardedHttpToolsProtocol, configure

    original = RESTServer.__init__
    seen: list[uvicorn.Config] = []
    undo = kserve_compat.configure_http_server(lambda c: (seen.append(c), configure(c, ConnectionLimits())))
    try:
        server = RESTServer("kserve.model_server:app", None, None, 0, timeout_keep_alive=7)  # type: ignore[arg-type]
    finally:
        undo()
    assert seen == [server.config] and not server.config.loaded, "handed over before uvicorn loads it"
    assert issubclass(server.config.http, GuardedHttpToolsProtocol)
    assert server.config.timeout_keep_alive == 7, "KServe's own keep-alive option reaches uvicorn"
    assert RESTServer.__init__ is original


def test_grpc_server_options_and_interceptors_reach_kserves_grpc_server() -> None:
    """KServe's GRPCServer.start builds its server with the module's ``aio.server(...)``: the shim adds our
    options (ours win over KServe's message limits) and appends our interceptors after KServe's."""
    import inspect

    from kserve.protocol.grpc import server as grpc_server
    from kserve.protocol.grpc.interceptors import LoggingInterceptor

    start = inspect.getsource(grpc_server.GRPCServer.start)
    assert "aio.server(" in start and "LoggingInterceptor()" in start, "the hook point moved"
    assert 'logger.info(f"grpc method:' in inspect.getsource(LoggingInterceptor), "what it logs per call"
    calls: list[dict] = []

    class FakeAio:
        marker = "the rest of grpc.aio"

        @staticmethod
        def server(*args, **kwargs):
            calls.append(kwargs)
            return "server"

    real = grpc_server.aio
    grpc_server.aio = FakeAio
    try:
        undo = kserve_compat.configure_grpc_server([("grpc.max_receive_message_length", 123), ("x", 1)], ["ours"])
        per_call_log = LoggingInterceptor()  # an INFO line per call: left out
        built = grpc_server.aio.server(
            None, interceptors=(per_call_log, "kserve's"), options=[("grpc.max_receive_message_length", 8), ("k", 2)]
        )
        assert built == "server" and grpc_server.aio.marker == "the rest of grpc.aio"
        assert calls[0]["interceptors"] == ["kserve's", "ours"]
        assert dict(calls[0]["options"]) == {"grpc.max_receive_message_length": 123, "k": 2, "x": 1}
        undo()
        assert grpc_server.aio is FakeAio
    finally:
        grpc_server.aio = real


def test_kserve_runs_on_asyncios_own_loop_unless_serve_on_uvloop_sets_uvloop() -> None:
    # In a fresh interpreter: the policy is process-wide. KServe's start runs asyncio.run itself and its
    # RESTServer never sets up uvicorn's loop (what makes the workaround needed); after it, asyncio.run
    # builds a uvloop loop.
    code = """
import asyncio, inspect
from predictor import kserve_compat
ms = kserve_compat.import_model_server()
from kserve.protocol.rest.server import RESTServer
assert "asyncio.run(" in inspect.getsource(ms.ModelServer.start)
assert "setup_event_loop" not in inspect.getsource(RESTServer)
async def which():
    return type(asyncio.get_running_loop()).__module__
print(asyncio.run(which()), kserve_compat.serve_on_uvloop(), asyncio.run(which()))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, chosen, after = out.stdout.split()
    assert before.startswith("asyncio"), before
    assert (chosen, after) == ("uvloop", "uvloop"), out.stdout
