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


def test_preferred_routes_win_over_routes_added_later() -> None:
    app = FastAPI()

    @app.get("/thing")
    def ours() -> str:
        return "ours"

    kserve_compat.prefer_routes(app, [app.router.routes[-1]])

    @app.get("/thing")  # as KServe adds its own at start-up, after ours
    def theirs() -> str:
        return "theirs"

    with TestClient(app) as client:  # the start-up event runs here
        assert client.get("/thing").json() == "ours"


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


def test_grpc_server_options_and_interceptors_reach_kserves_grpc_server() -> None:
    """KServe's GRPCServer.start builds its server with the module's ``aio.server(...)``: the shim adds our
    options (ours win over KServe's message limits) and appends our interceptors after KServe's."""
    import inspect

    from kserve.protocol.grpc import server as grpc_server

    assert "aio.server(" in inspect.getsource(grpc_server.GRPCServer.start), "the hook point moved"
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
        built = grpc_server.aio.server(
            None, interceptors=("kserve's",), options=[("grpc.max_receive_message_length", 8), ("k", 2)]
        )
        assert built == "server" and grpc_server.aio.marker == "the rest of grpc.aio"
        assert calls[0]["interceptors"] == ["kserve's", "ours"]
        assert dict(calls[0]["options"]) == {"grpc.max_receive_message_length": 123, "k": 2, "x": 1}
        undo()
        assert grpc_server.aio is FakeAio
    finally:
        grpc_server.aio = real
