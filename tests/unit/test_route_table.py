"""predictor.route_table: each route KServe adds is kept, guarded or dropped by rule, on a real FastAPI app with
the routes the installed kserve really adds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient

from predictor import kserve_compat
from predictor.admin import AdminToken
from predictor.config import Settings
from predictor.route_table import build_app, mounted_routes, settle_kserve_routes
from tests.unit.test_kserve_compat import kserve_rest_server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    return path


def app_with_kserve(settings: Settings, ours: list[tuple[str, str]] = (), extra_kserve_route: str | None = None):
    """Our app with ``ours`` (path, method) answering "ours", then KServe's routes, settled as the server does."""
    app = build_app(settings, "test")
    for path, method in ours:
        app.add_api_route(path, lambda: Response("ours"), methods=[method])
    admin = AdminToken(settings.admin_token_file).require if settings.admin_token_file else None

    def settle(app: FastAPI, added: list) -> None:
        if extra_kserve_route:  # as a newer kserve might add
            app.add_api_route(extra_kserve_route, lambda: "new", methods=["POST"])
            added = [*added, app.router.routes[-1]]
        settle_kserve_routes(app, added, settings, admin)

    undo = kserve_compat.after_kserve_routes(settle)
    try:
        kserve_rest_server()._register_endpoints(app)
    finally:
        undo()
    return app


def table(app: FastAPI) -> dict[str, tuple[tuple[str, ...], bool]]:
    return {r.path: (r.methods, r.public) for r in mounted_routes(app)}


def test_our_route_replaces_kserves_for_the_same_path_and_method_whatever_the_order() -> None:
    app = app_with_kserve(Settings(), ours=[("/v2/health/live", "GET"), ("/v2/models/{model_name}/infer", "POST")])
    paths = [r.path for r in mounted_routes(app)]
    assert paths.count("/v2/health/live") == 1 and paths.count("/v2/models/{model_name}/infer") == 1
    with TestClient(app) as client:
        assert client.get("/v2/health/live").text == "ours"
        assert client.get("/v2/models").status_code == 200  # KServe's own data-plane route stays


def test_a_route_of_ours_added_later_is_not_shadowed_either() -> None:
    """No list to keep in sync: any path and method we serve wins, e.g. a new one on KServe's /v2."""
    app = app_with_kserve(Settings(), ours=[("/v2", "GET")])
    with TestClient(app) as client:
        assert client.get("/v2").text == "ours"


def test_repository_routes_are_not_mounted_by_default() -> None:
    app = app_with_kserve(Settings())
    assert not [p for p in table(app) if "repository" in p]
    with TestClient(app) as client:
        assert client.post("/v2/repository/models/m/unload").status_code == 404
        assert client.post("/v2/repository/models/m/load").status_code == 404


def test_repository_routes_need_the_admin_token_when_enabled(token_file: Path) -> None:
    settings = Settings(enable_model_repository_routes=True, admin_token_file=token_file)
    app = app_with_kserve(settings)
    from kserve.errors import ModelNotFound, model_not_found_handler

    from predictor.errors import PredictorError
    from predictor.middleware import error_response

    app.add_exception_handler(PredictorError, lambda request, exc: error_response(exc))
    app.add_exception_handler(ModelNotFound, model_not_found_handler)  # KServe adds it when it starts
    rows = table(app)
    assert rows["/v2/repository/models/{model_name}/unload"] == (("POST",), False)
    assert all(public for path, (_, public) in rows.items() if "repository" not in path)
    with TestClient(app) as client:
        r = client.post("/v2/repository/models/m/unload")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in r.json()["error"]
        assert (
            client.post("/v2/repository/models/m/unload", headers={"Authorization": "Basic czNjcmV0"}).status_code
            == 401
        )
        r = client.post("/v2/repository/models/m/unload", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 403 and "not this server's admin token" in r.json()["error"]
        # Past the guard: KServe's own answer (no model "m" in this empty registry).
        r = client.post("/v2/repository/models/m/unload", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 404 and "m" in r.text


def test_an_unknown_kserve_route_is_dropped_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="predictor.route_table"):
        app = app_with_kserve(Settings(), extra_kserve_route="/v2/danger")
    assert "/v2/danger" not in table(app)
    assert "/v2/danger" in caplog.text and "not served" in caplog.text


def test_explain_is_not_served_and_metrics_leave_when_they_have_their_own_port() -> None:
    assert "/v1/models/{model_name}:explain" not in table(app_with_kserve(Settings()))
    assert "/metrics" in table(app_with_kserve(Settings()))
    assert "/metrics" not in table(app_with_kserve(Settings(http_metrics_port=9095)))


@pytest.mark.parametrize("docs", [False, True])
def test_openapi_and_its_pages_follow_enable_docs_url(docs: bool) -> None:
    app = app_with_kserve(Settings(enable_docs_url=docs))
    pages = ["/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"]
    assert all((p in table(app)) is docs for p in pages)
    with TestClient(app) as client:
        for page in pages:
            assert client.get(page).status_code == (200 if docs else 404), page
