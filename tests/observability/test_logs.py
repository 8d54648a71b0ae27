"""Request tracing in logs: ``--log_format json`` writes one JSON object per line, and the log line of an
error answer carries the request id the client sent in ``X-Request-Id`` (or the one the server made,
returned in the response header); a flood of rejections is a few lines that account for every one. Uses the
predictor of the observability stack (JSON logs, real load).
"""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from predictor import logs
from tests.observability.conftest import Stack


def log_lines(stack: Stack) -> list[str]:
    return [line for line in stack.server.log().splitlines() if line.strip()]


def records(stack: Stack) -> list[dict]:
    out = []
    for line in log_lines(stack):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def test_log_records_are_json_objects_with_the_fields(obs_stack: Stack):
    recs = records(obs_stack)
    assert len(recs) > 10  # start-up, and the load's rejections (a line per kind and interval)
    for rec in recs:
        assert set(rec) >= {"time", "level", "logger", "message", "request_id"}, rec
    assert {"INFO", "WARNING"} <= {r["level"] for r in recs}


def test_every_line_of_a_json_server_is_one_json_object(obs_stack: Stack):
    bad = []
    for line in log_lines(obs_stack):
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:
            ok = False
        if not ok:
            bad.append(line[:160])
    assert not bad, f"{len(bad)} lines are not JSON objects, e.g.:\n" + "\n".join(bad[:5])


def test_error_log_line_carries_the_client_request_id(obs_stack: Stack):
    rid = obs_stack.error_request_id  # sent as X-Request-Id with a 415 request, echoed in the response
    lines = [r for r in records(obs_stack) if r["request_id"] == rid]
    assert len(lines) == 1, lines
    (line,) = lines
    assert line["level"] == "WARNING"
    assert "415" in line["message"] and "/classify" in line["message"]


def test_generated_request_ids_reach_the_header_and_the_error_log(obs_stack: Stack):
    """Without X-Request-Id the server makes an id, returns it, and logs the error under it (a 404: the
    first rejection of its kind in its interval is always logged in full)."""
    r = obs_stack.server.client.post("/v2/models/no-such-model/infer", json={"inputs": []})
    assert r.status_code == 404
    rid = r.headers["x-request-id"]
    assert len(rid) >= 16
    from tests.observability.stack import wait_until

    found = wait_until(lambda: [x for x in records(obs_stack) if x["request_id"] == rid], 10, "the error's log line")
    assert found[0]["level"] == "WARNING" and "404" in found[0]["message"]


def _accounted_503s(recs: list[dict]) -> int:
    """503 rejections the log accounts for: lines in full plus the counts of the summary lines."""
    full = sum("-> 503:" in r["message"] for r in recs)
    return full + sum(int(n) for r in recs for n in re.findall(r"(\d+) x 503 queue_full", r["message"]))


def test_the_burst_of_503s_is_a_few_lines_that_account_for_every_one(obs_stack: Stack):
    """The burst's 503s are not a line each: per interval, the first in full under its own request id, the
    others counted in one summary line; together they account for every 503 the metrics count."""
    from tests.observability.stack import wait_until

    counted = obs_stack.server.metric("classifier_rejections_total", reason="queue_full")
    assert counted > 5, "the burst was meant to overflow the queue"
    wait_until(lambda: _accounted_503s(records(obs_stack)) >= counted, 20, "the intervals' summary lines")
    recs = records(obs_stack)
    assert _accounted_503s(recs) == counted
    full = [r for r in recs if "-> 503:" in r["message"]]
    summaries = [r for r in recs if "x 503 queue_full" in r["message"]]
    assert summaries and len(full) + len(summaries) < counted / 2, (len(full), len(summaries), counted)
    ids = [r["request_id"] for r in full]
    assert "-" not in ids and len(set(ids)) == len(ids)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_format_switch(fmt: str):
    """The same record in either format carries the request id of the request being served."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        logs.configure_logging(fmt, "INFO")
        root.handlers[0].setStream(stream)
        token = logs.request_id_var.set("rid-123")
        logging.getLogger("predictor.routes").warning("POST /classify -> %d: %s", 400, "bad image")
        logs.request_id_var.reset(token)
    finally:
        root.handlers, _ = saved
        root.setLevel(saved[1])
    line = stream.getvalue().strip()
    assert "\n" not in line
    if fmt == "json":
        doc = json.loads(line)
        assert doc["request_id"] == "rid-123" and doc["level"] == "WARNING"
        assert doc["message"] == "POST /classify -> 400: bad image"
    else:
        assert "WARNING predictor.routes [rid-123] POST /classify -> 400: bad image" in line
