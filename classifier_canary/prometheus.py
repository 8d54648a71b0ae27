"""A small Prometheus HTTP API client and the measurement of one check window."""

from __future__ import annotations

import math
from typing import Any

import httpx

from classifier_canary.analysis import Measurement, RevisionStats
from classifier_canary.errors import CanaryInputError, PrometheusUnavailable, QueryFailed
from classifier_canary.quality import AnswerStats
from classifier_canary.queries import CheckQueries, check_queries


class PrometheusClient:
    """Instant queries against ``/api/v1/query`` of one Prometheus server."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def check(self) -> str:
        """Make sure ``url`` is a Prometheus server; returns its version.

        Raises:
            CanaryInputError: unreachable, or something other than Prometheus' HTTP API answered.
        """
        path = "/api/v1/status/buildinfo"
        try:
            r = self._http.get(path)
        except httpx.HTTPError as e:
            raise CanaryInputError(f"cannot reach Prometheus at {self.url}: {e}") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        version = body.get("data", {}).get("version") if isinstance(body, dict) else None
        if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success" or not version:
            raise CanaryInputError(
                f"{self.url} is not a Prometheus server: GET {path} answered {r.status_code} "
                f"{r.headers.get('content-type', '')!r} {r.text[:120]!r} (expected Prometheus' HTTP API, "
                "e.g. http://prometheus-operated.monitoring:9090)"
            )
        return str(version)

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """An instant vector query at ``at`` (Unix seconds).

        Raises:
            PrometheusUnavailable: the request failed.
            QueryFailed: Prometheus answered an error or a result that is not a vector.
        """
        try:
            r = self._http.get("/api/v1/query", params={"query": expr, "time": f"{at:.3f}"})
        except httpx.HTTPError as e:
            raise PrometheusUnavailable(f"Prometheus {self.url} unreachable: {type(e).__name__}: {e}") from None
        try:
            body = r.json()
        except ValueError:
            raise QueryFailed(f"Prometheus answered {r.status_code} with no JSON to {expr}") from None
        if body.get("status") != "success":
            raise QueryFailed(f"Prometheus refused {expr}: {body.get('errorType')}: {body.get('error')}")
        data = body.get("data", {})
        if data.get("resultType") != "vector":
            raise QueryFailed(f"Prometheus answered a {data.get('resultType')} to {expr}, expected a vector")
        return data.get("result", [])


def _by_revision(result: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for series in result:
        value = float(series["value"][1])
        out[series["metric"].get("revision", "")] = value if math.isfinite(value) else None
    return out


def _model_info(result: list[dict[str, Any]], revision: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    rows = [s["metric"] for s in result if s["metric"].get("revision") == revision]
    return tuple(sorted({r.get("version", "") for r in rows})), tuple(sorted({r.get("dtype", "") for r in rows}))


def _by_class(result: list[dict[str, Any]], window_s: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for series in result:
        value = float(series["value"][1])
        if math.isfinite(value):
            m = series["metric"]
            out.setdefault(m.get("revision", ""), {})[m.get("class", "")] = value * window_s
    return out


def _answers(prom: PrometheusClient, q: CheckQueries, at: float, window_s: float, revs: tuple[str, str]):
    """Canary's and stable's top-1 answers (:class:`AnswerStats`) over the window."""
    classes = _by_class(prom.query(q.predictions_rate, at), window_s)
    confidence = _by_revision(prom.query(q.confidence_mean, at))
    return tuple(
        AnswerStats(sum(classes[r].values()) if r in classes else None, classes.get(r, {}), confidence.get(r))
        for r in revs
    )


def measure(
    prom: PrometheusClient,
    namespace: str,
    isvc: str,
    canary: str,
    stable: str,
    window_s: float,
    at: float,
    *,
    answers: bool = False,
    knative: bool = False,
) -> Measurement:
    """Canary and stable revision over the ``window_s`` seconds before ``at``; with ``answers``, their top-1
    answers too, and with ``knative``, queue-proxy's view of them.

    Prometheus being unreachable or refusing a query gives a measurement with ``problem`` set; a revision
    with no request series at all is listed in ``missing``. Both are failed checks, never passes.
    """
    window_s = float(max(1, round(window_s)))  # PromQL ranges are whole seconds here
    q: CheckQueries = check_queries(namespace, isvc, window_s)
    try:
        rates = _by_revision(prom.query(q.requests_rate, at))
        errors = _by_revision(prom.query(q.error_ratio, at))
        shed = _by_revision(prom.query(q.shed_ratio, at))
        client = _by_revision(prom.query(q.client_error_ratio, at))
        p95 = _by_revision(prom.query(q.p95_seconds, at))
        info = prom.query(q.model_info, at)
        restarts = _by_revision(prom.query(q.restarts, at))
        proxy = [_by_revision(prom.query(e, at)) if knative else {} for e in
                 (q.proxy_requests_rate, q.proxy_error_ratio, q.proxy_p95_seconds)]  # fmt: skip
        seen = _answers(prom, q, at, window_s, (canary, stable)) if answers else None
    except PrometheusUnavailable as e:
        return Measurement(window_s, RevisionStats(canary), RevisionStats(stable), problem=str(e))
    missing = tuple(
        f"{role} revision {rev!r} in {q.names.requests}{{namespace={namespace!r}, isvc={isvc!r}}}"
        for role, rev in (("canary", canary), ("stable", stable))
        if rev not in rates
    )

    def stats(rev: str) -> RevisionStats:
        rate, proxy_rate = rates.get(rev), proxy[0].get(rev)
        versions, dtypes = _model_info(info, rev)
        return RevisionStats(
            rev,
            None if rate is None else rate * window_s,
            errors.get(rev),
            shed.get(rev),
            p95.get(rev),
            versions,
            dtypes,
            client.get(rev),
            None if proxy_rate is None else proxy_rate * window_s,
            proxy[1].get(rev),
            proxy[2].get(rev),
            restarts.get(rev),
        )

    return Measurement(window_s, stats(canary), stats(stable), missing=missing, answers=seen)  # type: ignore[arg-type]
