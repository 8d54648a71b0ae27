"""The one mapping from our HTTP statuses to gRPC status codes.

Follows gRPC's own HTTP ↔ gRPC correspondence (``doc/http-grpc-status-mapping.md``, google.rpc.Code):
a refusal the client can retry (queue full, not ready) is UNAVAILABLE, a deadline is DEADLINE_EXCEEDED,
a body or image over a limit is RESOURCE_EXHAUSTED (as gRPC reports an over-size message).
"""

from __future__ import annotations

from grpc import StatusCode
from grpc_interceptor import exceptions as grpc_exceptions

from predictor.errors import PredictorError

GRPC_CODES: dict[int, StatusCode] = {
    400: StatusCode.INVALID_ARGUMENT,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.NOT_FOUND,
    413: StatusCode.RESOURCE_EXHAUSTED,
    415: StatusCode.INVALID_ARGUMENT,
    501: StatusCode.UNIMPLEMENTED,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.DEADLINE_EXCEEDED,
    507: StatusCode.RESOURCE_EXHAUSTED,
}
"""HTTP status → gRPC code; any other status is INTERNAL."""

_EXCEPTIONS = {
    StatusCode.INVALID_ARGUMENT: grpc_exceptions.InvalidArgument,
    StatusCode.NOT_FOUND: grpc_exceptions.NotFound,
    StatusCode.UNAUTHENTICATED: grpc_exceptions.Unauthenticated,
    StatusCode.PERMISSION_DENIED: grpc_exceptions.PermissionDenied,
    StatusCode.RESOURCE_EXHAUSTED: grpc_exceptions.ResourceExhausted,
    StatusCode.UNIMPLEMENTED: grpc_exceptions.Unimplemented,
    StatusCode.UNAVAILABLE: grpc_exceptions.Unavailable,
    StatusCode.DEADLINE_EXCEEDED: grpc_exceptions.DeadlineExceeded,
    StatusCode.INTERNAL: grpc_exceptions.Internal,
}


def grpc_code(http_status: int) -> StatusCode:
    """The gRPC code for one of our HTTP statuses."""
    return GRPC_CODES.get(http_status, StatusCode.INTERNAL)


def grpc_error(exc: PredictorError) -> grpc_exceptions.GrpcException:
    """The exception that makes the gRPC server abort the call with the right code and our message.

    KServe's gRPC interceptor passes ``grpc_interceptor`` exceptions through with their own code and
    details (see :mod:`predictor.kserve_compat`).
    """
    out = _EXCEPTIONS[grpc_code(exc.status_code)](exc.message)
    # Read by predictor.grpc_guard, which sends it as grpc-retry-pushback-ms trailing metadata.
    out.retry_after_seconds = exc.retry_after_seconds  # type: ignore[attr-defined]
    return out
