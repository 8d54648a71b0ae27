"""Refusing an inference request on its head alone while the pod is overloaded: no task, no app, no body.

Under a spike the pod refuses most requests (503 + ``Retry-After``). Refused in the ASGI middleware, each
refusal costs a task, the whole middleware stack (uvicorn's proxy headers, FastAPI's, Starlette's, ours)
and several turns of the event loop; with hundreds of clients that resend at once, those turns queue in
front of the few accepted requests' own and their CPU is taken from inference (measured in
``docs/performance.md``, "Front door under a spike"). So the HTTP server's protocol
(:mod:`predictor.http_guard`) asks :meth:`HeadRefusal.answer` as soon as a request's head has arrived: when
admission would refuse even a one-image request now, the whole answer is written from the protocol's own
callback and the connection half-closed; the body is never read.

It is a pre-check, not a second admission: the same :meth:`Admission.reserve
<predictor.admission.Admission.reserve>` call the middleware makes (which counts nothing when it refuses),
on the same event loop, moments earlier. A request it lets through is admitted (or refused) by the
middleware as before; the answer, the metrics (``classifier_requests_total`` with code 503,
``classifier_rejections_total``) and the rejection log are the ones the middleware gives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from predictor.admission import Admission
from predictor.config import Settings
from predictor.errors import Overloaded
from predictor.logs import RejectionLog, request_id_var
from predictor.metrics import PredictorMetrics
from predictor.middleware import (
    declared_on_head,
    early_refusal,
    protocol_of,
    record_rejection,
    request_id,
    server_timing,
)

Headers = list[tuple[bytes, bytes]]
PACE_TICK_S = 0.02
"""Held refusals are released together on ticks this far apart (see :class:`RefusalPacer`)."""


@dataclass(frozen=True)
class HeadAnswer:
    """An answer decided on a request's head: status, ``{"error": message}``, extra headers, and how long
    to hold it first (0: at once)."""

    status: int
    message: str
    headers: Headers
    delay_s: float = 0.0


class RefusalPacer:
    """Answers refusals at most ``rate_per_s`` a second (after a burst of as many), holding the rest in turn,
    so that clients resending at once cannot take the event loop from the requests it serves.

    A closed-loop client resends the moment its 503 comes: however cheap a refusal is, c such clients
    answered within W seconds send c / W requests a second (Little's law), and the event loop spends its
    time refusing them while every accepted request's turns wait behind theirs (measured in
    ``docs/performance.md``, "Front door under a spike"). A held refusal costs a timer: its client, waiting
    for the answer, sends nothing new until its turn (the body of a refusal that keeps its connection is read
    and dropped meanwhile; any other is left unread, see :mod:`predictor.http_guard`).

    Held refusals are released together on ticks of ``tick_s`` (each turn rounded up to the next tick): the
    event loop wakes once a tick, not once a refusal, and their clients' next requests come back together
    too. The wake-ups, not the refusals, were most of a paced refusal's cost: 0.21-0.23 ms of server CPU
    each released one at a time at 470 a second, 0.14-0.15 ms on 20-ms ticks, 0.064 ms each unpaced at
    9,600 a second (``docs/performance.md``, "Refusals released on ticks").

    Args:
        rate_per_s: Refusals answered per second in the long run; 0 = all at once (no pacing).
        tick_s: Held refusals are released on multiples of this (0: each at its own turn).
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self, rate_per_s: float, tick_s: float = PACE_TICK_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.tick_s = tick_s
        self._clock = clock
        self._next_s = -math.inf  # when the next refusal's turn comes, burst aside

    def delay_s(self) -> float:
        """How long to hold the refusal being made now (0: answer it at once)."""
        if self.rate_per_s <= 0:
            return 0.0
        now, interval = self._clock(), 1 / self.rate_per_s
        # A token bucket as a virtual schedule: turns are an interval apart, and up to a second's worth
        # of them (the burst) may lie in the past.
        turn = max(self._next_s, now - 1.0)
        self._next_s = turn + interval
        if turn <= now:
            return 0.0
        if self.tick_s > 0:
            turn = math.ceil(turn / self.tick_s - 1e-9) * self.tick_s
        return turn - now


class HeadRefusal:
    """Decides, from a request's method, path and headers, whether admission refuses it whatever its body."""

    def __init__(
        self, settings: Settings, metrics: PredictorMetrics, admission: Admission, rejections: RejectionLog
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.admission = admission
        self.rejections = rejections
        self.pacer = RefusalPacer(settings.paced_refusals_per_s)

    def answer(self, method: str, raw_path: bytes, headers: Headers) -> HeadAnswer | None:
        """The refusal of an overloaded inference request (counted and logged as the middleware would), or
        None: the request goes to the app as usual (not an inference route, a head the middleware answers
        otherwise, or admission has room)."""
        started = time.perf_counter()
        path = raw_path.decode("latin-1")
        protocol = protocol_of(path, method) if "%" not in path else None  # escaped paths: the app decides
        if protocol not in ("classify", "v2", "v1"):
            return None
        try:
            self.admission.reserve(1, on_arrival=True)  # counts nothing: only whether one image fits now
        except Overloaded as exc:
            refused = exc
        else:
            return None  # the common case: admitted by the middleware, which reads the headers itself
        by_name = dict(headers)
        if early_refusal(by_name, self.settings.max_request_bytes) is not None:
            return None  # 413/415: the middleware answers those
        if declared_on_head(protocol, by_name) is None:
            return None  # not an inference body: the route says what is wrong
        return self._refuse(refused, method, path, protocol, by_name, started)

    def _refuse(
        self, exc: Overloaded, method: str, path: str, protocol: str, headers: dict[bytes, bytes], started: float
    ) -> HeadAnswer:
        model = self.settings.model_name
        rid = request_id(headers)
        token = request_id_var.set(rid)  # its log line, if any, is under the id its answer carries
        try:
            record_rejection(self.metrics, self.rejections, model, exc, method, path)
        finally:
            request_id_var.reset(token)
        took = time.perf_counter() - started
        self.metrics.observe_request(model, protocol, exc.status_code, took)
        out: Headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers().items()]
        out += [(b"x-request-id", rid.encode("latin-1")), server_timing(took)]
        return HeadAnswer(exc.status_code, exc.message, out, self.pacer.delay_s())
