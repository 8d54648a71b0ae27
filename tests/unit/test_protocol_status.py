"""The one HTTP status → gRPC code table (predictor/protocol/status.py), against gRPC's own mapping."""

from __future__ import annotations

import pytest
from grpc import StatusCode
from grpc_interceptor import exceptions as grpc_exceptions

from predictor import errors
from predictor.protocol.status import grpc_code, grpc_error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidInput("bad"), StatusCode.INVALID_ARGUMENT),
        (errors.ModelNotFound("no such model"), StatusCode.NOT_FOUND),
        (errors.PayloadTooLarge("too big"), StatusCode.RESOURCE_EXHAUSTED),
        (errors.UnsupportedMediaType("wrong type"), StatusCode.INVALID_ARGUMENT),
        (errors.Overloaded("queue full"), StatusCode.UNAVAILABLE),
        (errors.NotReady("loading"), StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded("too late"), StatusCode.DEADLINE_EXCEEDED),
        (errors.InferenceFailed("engine broke"), StatusCode.INTERNAL),
    ],
)
def test_each_error_gets_its_grpc_code_and_keeps_its_message(error: errors.PredictorError, code: StatusCode) -> None:
    assert grpc_code(error.status_code) is code
    exc = grpc_error(error)
    assert isinstance(exc, grpc_exceptions.GrpcException)
    assert exc.status_code is code and exc.details == error.message


def test_an_unknown_status_is_internal() -> None:
    assert grpc_code(418) is StatusCode.INTERNAL and grpc_code(507) is StatusCode.RESOURCE_EXHAUSTED
