"""The gRPC front door: how many connections and calls the server takes, and how it says no.

* :func:`server_options`: gRPC core's limits, set from the settings. Connections: at most
  ``grpc_max_connections`` open (one beyond it is closed as soon as it is accepted), each closed when it has
  sent no HTTP/2 preface and SETTINGS within ``grpc_handshake_timeout_s`` or has had no call in progress for
  ``grpc_max_connection_idle_s``, and at the latest ``request_timeout_ms`` after ``grpc_max_connection_age_s``
  (a call whose message never comes included): idle or hostile connections hold a bounded number of the
  process's file descriptors for a bounded time (:mod:`predictor.open_files` sizes the process's limit to
  them and to HTTP's). Calls:
  ``grpc.max_concurrent_streams`` per connection and message sizes equal to REST's ``max_request_bytes``.
  :mod:`predictor.kserve_compat` hands them to KServe's gRPC server.
* :class:`CallLimit`, a server interceptor, counts the calls in progress (all connections) and refuses a
  call past ``grpc_max_pending_rpcs`` at once with RESOURCE_EXHAUSTED, a message that names the limit and
  ``grpc-retry-pushback-ms`` trailing metadata (gRPC's retry pushback: how long a client should wait).
  A refused call's message is never parsed; each refusal is counted
  (``classifier_rejections_total{reason="too_many_calls"}`` and a gRPC 503, see ``predictor.server``).
* :class:`GrpcHealth`: ``ServerLive``, ``ServerReady`` and ``ModelReady`` answered by the rule REST's health
  routes follow (:mod:`predictor.health`): KServe's own say live and ready after an unload too.
* Every refusal of ours that asks the client to come back (queue full or over the queue-wait budget:
  UNAVAILABLE; out of device memory: RESOURCE_EXHAUSTED) carries the same trailing metadata, from the
  error's ``Retry-After`` (:func:`predictor.protocol.status.grpc_error` attaches it).

KServe's ``ExceptionToStatusInterceptor`` turns the ``grpc_interceptor`` exceptions raised here into the
call's status and details; this interceptor runs inside it and sets the trailing metadata first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio
from grpc_interceptor import exceptions as grpc_exceptions

from predictor.config import Settings
from predictor.errors import PredictorError
from predictor.protocol.status import grpc_error

if TYPE_CHECKING:
    from predictor.health import Health

CORE_BACKLOG = 1 << 20
"""gRPC core's pending-call backlog limits (``grpc.server.max_pending_requests`` and its hard limit)."""
INT32_MAX = 2**31 - 1
"""The largest value of an integer channel option."""
LIMITED_METHOD = "/ModelInfer"
"""The one call :class:`CallLimit` counts and refuses (by the end of its method path): inference. Health and
metadata calls cost nothing to answer, and a health probe refused under load would read as a sick pod."""
PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""Trailing metadata key of gRPC's retry pushback (gRFC A6): milliseconds before a retry."""


def pushback_metadata(retry_after_s: float) -> tuple[tuple[str, str], ...]:
    """The trailing metadata that tells a gRPC client to retry after ``retry_after_s`` seconds."""
    return ((PUSHBACK_KEY, str(max(0, round(retry_after_s * 1000)))),)


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """gRPC server channel options: connection limits, the concurrent-stream cap, message limits equal to REST's."""
    return [
        # Connections. gRPC core has no cap or idle limit by default: 20,000 idle connections (preface sent, or
        # nothing at all) once took every file descriptor of the process, and the HTTP port with them. Checked on
        # grpcio 1.85 (tests/integration/test_grpc_front_door.py): a connection past the cap is accepted and closed
        # at once; one that sends nothing is closed at the handshake deadline; an idle one gets GOAWAY.
        ("grpc.max_allowed_incoming_connections", settings.grpc_max_connections),
        ("grpc.server_handshake_timeout_ms", _ms(settings.grpc_handshake_timeout_s)),
        ("grpc.max_connection_idle_ms", _ms(settings.grpc_max_connection_idle_s)),
        # A call whose message never comes keeps its connection from being idle; the age limit still closes it,
        # after a grace as long as the longest call served (later ones are answered 504 anyway).
        ("grpc.max_connection_age_ms", _ms(settings.grpc_max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", min(settings.request_timeout_ms, INT32_MAX)),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        # gRPC core's own backlog of calls not yet picked up by the server's loop: past 1000 it drops calls at
        # random, which the client sees as CANCELLED with no message. Raised out of reach, so that every
        # refusal is ours (a status with a message and pushback).
        ("grpc.server.max_pending_requests", CORE_BACKLOG),
        ("grpc.server.max_pending_requests_hard_limit", CORE_BACKLOG),
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", settings.max_request_bytes),
    ]


def _ms(seconds: float) -> int:
    """Seconds as the whole milliseconds gRPC core's options take (a 32-bit int, at least 1)."""
    return min(INT32_MAX, max(1, round(seconds * 1000)))


class CallLimit(aio.ServerInterceptor):
    """Caps the unary calls in progress and adds retry pushback to refusals.

    A call is counted from the moment its handler runs (its message has arrived) until it returns, and
    checked against the limit there, where the count is taken: gRPC's server runs the interceptors of a
    burst's calls before the handler of any (each waits for its message in between), so a check made only
    in :meth:`intercept_service` saw nothing in progress and let a whole burst in. That check stays, as a
    cheap early refusal while the server is already full. A call cancelled before its handler runs was
    never counted, so it leaves nothing behind. The message is parsed only once the call is counted: a
    refused call's never is.

    Args:
        max_pending: Most calls in progress at once (``grpc_max_pending_rpcs``).
        retry_after_s: Seconds a refused client should wait (the admission's ``Retry-After``).
        on_refusal: Called for each call refused at the limit (the rejection and request metrics).
    """

    def __init__(
        self, max_pending: int, retry_after_s: Callable[[], float], on_refusal: Callable[[], None] | None = None
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._retry_after_s = retry_after_s
        self._on_refusal = on_refusal
        self.pending = 0
        self.refused = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming methods: not served by this predictor's data plane
        if not handler_call_details.method.endswith(LIMITED_METHOD):
            return handler  # health and metadata: answered at once from memory, probes included, never refused
        if self.pending >= self.max_pending:
            return grpc.unary_unary_rpc_method_handler(self._refuse)  # raw bytes: the message is not parsed
        behavior, deserialize = handler.unary_unary, handler.request_deserializer

        async def counted(raw: bytes, context: aio.ServicerContext) -> Any:
            if self.pending >= self.max_pending:  # the authoritative check, where the count is taken
                return await self._refuse(raw, context)
            self.pending += 1
            try:
                return await behavior(_parse(deserialize, raw), context)
            except grpc_exceptions.GrpcException as e:
                pushback = getattr(e, "retry_after_seconds", None)
                if pushback is not None:
                    context.set_trailing_metadata(pushback_metadata(pushback))
                raise
            finally:
                self.pending -= 1

        # The handler gets the raw bytes; ``counted`` parses them once the call is admitted.
        return handler._replace(unary_unary=counted, request_deserializer=None)

    async def _refuse(self, request: bytes, context: aio.ServicerContext) -> None:
        self.refused += 1
        if self._on_refusal is not None:
            self._on_refusal()
        wait = max(1.0, float(self._retry_after_s()))
        context.set_trailing_metadata(pushback_metadata(wait))
        raise grpc_exceptions.ResourceExhausted(
            f"server busy: {self.pending} calls in progress, the most it takes at once (grpc_max_pending_rpcs="
            f"{self.max_pending}); retry in {wait:.0f} s ({PUSHBACK_KEY})"
        )


def _parse(deserialize: Callable[[bytes], Any] | None, raw: bytes) -> Any:
    """A call's message from its bytes; a message that does not parse is the client's mistake."""
    if deserialize is None:
        return raw
    try:
        return deserialize(raw)
    except Exception as e:  # protobuf's DecodeError, or whatever another deserializer raises
        raise grpc_exceptions.InvalidArgument(f"the request message does not parse: {e}") from None


class GrpcHealth:
    """What KServe's gRPC ``ServerLive``, ``ServerReady`` and ``ModelReady`` answer
    (:func:`predictor.kserve_compat.answer_grpc_health`): the same as REST's ``/v2/health/live``,
    ``/v2/health/ready`` and ``/v2/models/{name}/ready``, from one :class:`~predictor.health.Health`.

    gRPC's health responses carry only a boolean: not live or not ready is ``false`` (REST's 503); a model
    that is not served here is NOT_FOUND (REST's 404).
    """

    def __init__(self, health: Health) -> None:
        self.health = health

    def live(self) -> bool:
        """``ServerLive``: false once a restart is needed (a broken device, not ready past the grace)."""
        return self.health.not_live() is None

    def ready(self) -> bool:
        """``ServerReady``: the model is loaded and the device works."""
        return self.health.not_ready() is None

    def model_ready(self, name: str, version: str) -> bool:
        """``ModelReady``: as :meth:`ready`, for the model served here; NOT_FOUND for any other."""
        try:
            self.health.check_model(name, version or None)
        except PredictorError as e:
            raise grpc_error(e) from None
        return self.ready()
