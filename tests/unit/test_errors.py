"""The error hierarchy (predictor/errors.py): statuses, Retry-After defaults, and naming the failed image."""

from __future__ import annotations

import pytest

from predictor.errors import (
    EngineBroken,
    InsufficientMemory,
    InvalidInput,
    NotReady,
    Overloaded,
    PredictorError,
)


@pytest.mark.parametrize("cls", [Overloaded, NotReady, InsufficientMemory, EngineBroken])
def test_retryable_errors_say_retry_after_one_second_unless_told_otherwise(cls: type[PredictorError]) -> None:
    assert cls("busy").headers() == {"Retry-After": "1"}
    assert cls("busy", retry_after_seconds=7).headers() == {"Retry-After": "7"}


def test_a_client_mistake_has_no_retry_after() -> None:
    assert InvalidInput("bad").headers() == {} and InvalidInput("bad").retry_after_seconds is None


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (InvalidInput("not an image: send JPEG or PNG"), 400, None),
        (InsufficientMemory("does not fit the device alone"), 507, 2),
        (Overloaded("queue full", retry_after_seconds=3), 503, 3),
    ],
)
def test_for_image_names_the_image_and_keeps_status_and_retry_after(error, status, retry_after) -> None:
    if isinstance(error, InsufficientMemory):
        error = InsufficientMemory(error.message, retry_after_seconds=2)
    whole = error.for_image(2, 3)
    assert type(whole) is type(error) and whole.status_code == status
    assert whole.message == f"image 2: {error.message}"
    assert whole.retry_after_seconds == retry_after
    assert error.for_image(0, 1) is error, "a lone image is the request: no prefix"
