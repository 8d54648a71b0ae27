"""The jobs HTTP API and the client CLI against a live server, a live worker and a live Redis."""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServerProcess, start_server

from .conftest import REPO, RedisServer, kill_all, spawn_worker


@pytest.fixture(scope="module")
def live(
    module_redis: RedisServer, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server with /v1/jobs and a worker, on one Redis, shared by this module's tests."""
    log_dir = tmp_path_factory.mktemp("live")
    worker = spawn_worker(module_redis.url, "api-worker", tiny_model_dir, log_dir)
    server = start_server(tiny_model_dir, log_dir, redis_url=module_redis.url, max_request_bytes=200_000, cpu_threads=1)
    yield server
    server.stop()
    kill_all([worker])


def wait_done(client: httpx.Client, job_id: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        if r.json()["status"] != "pending":
            return r.json()
        time.sleep(0.05)
    pytest.fail(f"job {job_id} not finished in {timeout_s}s")


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "predictor.client", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_jobs_api_submits_and_answers_results_and_errors(live: ServerProcess, png_images: list[bytes]) -> None:
    server = live
    c = server.client
    r = c.post("/v1/jobs?top_k=2", files=[("image", ("a.png", png_images[0])), ("image", ("b.png", png_images[1]))])
    assert r.status_code == 202, r.text
    multipart_ids = r.json()["job_ids"]
    r = c.post("/v1/jobs", json={"images": [base64.b64encode(png_images[2]).decode()], "top_k": 1})
    assert r.status_code == 202, r.text
    (json_id,) = r.json()["job_ids"]
    r = c.post("/v1/jobs", json={"images": [base64.b64encode(b"not an image").decode()]})
    (bad_id,) = r.json()["job_ids"]
    for job_id in multipart_ids:
        state = wait_done(c, job_id)
        assert state["status"] == "done" and len(state["predictions"]) == 2 and state["id"] == job_id
    assert len(wait_done(c, json_id)["predictions"]) == 1
    bad = wait_done(c, bad_id)
    assert bad["status"] == "error" and "image" in bad["error"]

    cases = [
        (c.get("/v1/jobs/" + "0" * 32), 404),
        (c.post("/v1/jobs", json={"images": ["%%% not base64"]}), 400),
        (c.post("/v1/jobs", json={"images": []}), 400),
        (c.post("/v1/jobs", json={"images": [""]}), 400),
        (c.post("/v1/jobs", content=b"x", headers={"content-type": "text/plain"}), 415),
        (c.post("/v1/jobs", files={"image": ("big.bin", b"\0" * 300_000)}), 413),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert set(response.json()) == {"error"} and response.json()["error"]


def test_jobs_api_answers_503_while_redis_is_down(live: ServerProcess, module_redis: RedisServer) -> None:
    c = live.client
    module_redis.kill()
    try:
        started = time.monotonic()
        for response in (c.get("/v1/jobs/" + "0" * 32), c.post("/v1/jobs", files={"image": b"img"})):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] and "error" in response.json()
        assert time.monotonic() - started < 10  # fails fast instead of hanging on Redis
        assert c.get("/v2/health/live").status_code == 200
    finally:
        module_redis.start()
    r = c.post("/v1/jobs", files={"image": b"img"})  # and recovers once Redis is back
    assert r.status_code == 202, r.text


def test_client_cli_online_and_queued(
    live: ServerProcess, module_redis: RedisServer, png_images: list[bytes], tmp_path: Path
) -> None:
    server = live
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    for i in range(6):
        (photos / ("nested" if i % 2 else "") / f"img{i}.png").write_bytes(png_images[i])
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("not an image, not walked")
    missing = tmp_path / "missing.png"

    out_csv = tmp_path / "online.csv"
    result = run_client(
        "classify",
        str(photos),
        str(missing),
        "--url",
        server.url,
        "--concurrency",
        "3",
        "--top_k",
        "2",
        "--output",
        str(out_csv),
    )
    assert result.returncode == 1, result.stderr  # two failures: reported, not fatal
    rows = list(csv.DictReader(out_csv.open()))
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 6 * 2 and {r["rank"] for r in ok} == {"1", "2"}
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["status"] == "error"}
    assert set(errors) == {"broken.jpg", "missing.png"}
    assert "HTTP 400" in errors["broken.jpg"] and "cannot read" in errors["missing.png"]
    assert "missing.png" in result.stderr and "2 of 8 images failed" in result.stderr

    out_jsonl = tmp_path / "queued.jsonl"
    good = [str(p) for p in sorted(photos.rglob("*.png"))]
    result = run_client(
        "submit",
        *good,
        "--redis_url",
        module_redis.url,
        "--wait",
        "--top_k",
        "3",
        "--output",
        str(out_jsonl),
        "--timeout_s",
        "60",
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(good)
    assert all(r["status"] == "ok" and len(r["predictions"]) == 3 and r["job_id"] for r in rows)
    # The queue and the online path run the same model: the same top class for the same image.
    online_top = {r["path"]: r["label"] for r in csv.DictReader(out_csv.open()) if r["rank"] == "1"}
    assert all(online_top[r["path"]] == r["predictions"][0]["label"] for r in rows)

    result = run_client("submit", str(photos / "img0.png"), "--redis_url", module_redis.url, "--no_progress")
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["status"] == "submitted" and len(row["job_id"]) == 32
