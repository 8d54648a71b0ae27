"""The admin token (predictor.admin), the front-door settings, and liveness before and after ready."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from predictor import routes
from predictor.admin import AdminToken, AdminTokenUnavailable
from predictor.config import Settings
from predictor.errors import Forbidden, Unauthenticated
from predictor.metrics import PredictorMetrics
from predictor.pipeline import Pipeline


def test_a_bearer_token_equal_to_the_file_is_accepted_others_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  s3cret-token\n")  # a Secret's file may end with a newline
    token = AdminToken(path)
    token.check("Bearer s3cret-token")
    token.check("bearer s3cret-token")  # the scheme is case-insensitive (RFC 7235)
    for header in (None, "", "s3cret-token", "Basic czNjcmV0", "Bearer ", "Bearer"):
        with pytest.raises(Unauthenticated):
            token.check(header)
    for header in ("Bearer s3cret", "Bearer s3cret-token2", "Bearer S3CRET-TOKEN"):
        with pytest.raises(Forbidden):
            token.check(header)


def test_the_comparison_is_constant_time(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "token").write_text("abc")
    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    with pytest.raises(Forbidden):
        AdminToken(tmp_path / "token").check("Bearer abd")
    assert seen == [(b"abd", b"abc")]


def test_a_rotated_token_applies_at_once_and_a_missing_one_refuses_everyone(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old")
    token = AdminToken(path)
    token.check("Bearer old")
    path.write_text("new")
    token.check("Bearer new")
    with pytest.raises(Forbidden):
        token.check("Bearer old")
    path.write_text("\n")
    with pytest.raises(AdminTokenUnavailable):
        token.check("Bearer anything")
    path.unlink()
    with pytest.raises(AdminTokenUnavailable):
        token.check_startup()


def test_repository_routes_cannot_be_enabled_without_a_token_file() -> None:
    with pytest.raises(ValidationError, match="admin_token_file"):
        Settings(enable_model_repository_routes=True)
    with pytest.raises(ValidationError, match="http_metrics_port"):
        Settings(http_metrics_port=8080)
    assert Settings().liveness_not_ready_grace_seconds == 30


def health_app(grace_s: float) -> tuple[FastAPI, Pipeline]:
    """Our real routes on an app, over a pipeline that has not loaded (its ready flag is what liveness reads)."""
    settings = Settings(liveness_not_ready_grace_seconds=grace_s)
    metrics = PredictorMetrics(CollectorRegistry())
    pipeline = Pipeline(settings, metrics)
    app = FastAPI()
    routes.install(app, settings, pipeline, metrics)
    return app, pipeline


def test_liveness_stays_ok_before_the_first_ready_however_long_it_takes() -> None:
    app, pipeline = health_app(grace_s=0)
    with TestClient(app) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 503
        pipeline.ready = False  # still never ready
        assert client.get("/v2/health/live").status_code == 200


def test_liveness_fails_once_not_ready_longer_than_the_grace_after_having_been_ready() -> None:
    app, pipeline = health_app(grace_s=0)
    with TestClient(app) as client:
        pipeline.ready = True
        assert client.get("/v2/health/live").status_code == 200
        pipeline.ready = False  # unloaded
        r = client.get("/v2/health/live")
        assert r.status_code == 503 and "not been ready" in r.json()["error"]
        assert "liveness_not_ready_grace_seconds=0" in r.json()["error"]
        pipeline.ready = True  # ready again: live again
        assert client.get("/v2/health/live").status_code == 200


def test_liveness_holds_within_the_grace() -> None:
    app, pipeline = health_app(grace_s=3600)
    with TestClient(app) as client:
        pipeline.ready = True
        pipeline.ready = False
        assert client.get("/v2/health/live").status_code == 200
        assert 0 <= pipeline.not_ready_seconds() < 3600
