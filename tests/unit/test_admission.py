"""Admission: the one bounded count of images, and the 503 it answers past the bound."""

from __future__ import annotations

import pytest

from predictor.admission import Admission
from predictor.errors import Overloaded


def test_a_request_that_does_not_fit_is_refused_whole_and_admits_nothing() -> None:
    seen: list[int] = []
    a = Admission(4, seen.append)
    a.admit(3)
    with pytest.raises(Overloaded) as exc:
        a.admit(2)
    assert exc.value.status_code == 503 and exc.value.retry_after_seconds == 1
    assert "3 of 4 images waiting, 2 more asked for" in exc.value.message
    assert a.depth == 3, "a refused request admits none of its images"
    a.admit(1)
    assert a.depth == 4
    a.release(4)
    assert seen == [3, 4, 0], "the gauge follows every change"


def test_slots_are_given_back_when_the_block_fails() -> None:
    a = Admission(2)
    with pytest.raises(RuntimeError), a.slots(2):
        assert a.depth == 2
        raise RuntimeError("the request failed")
    assert a.depth == 0


def test_releasing_more_than_admitted_is_a_bug_not_a_negative_count() -> None:
    a = Admission(2)
    a.admit(1)
    with pytest.raises(ValueError, match="releasing 2 images but only 1"):
        a.release(2)
    with pytest.raises(ValueError, match="capacity"):
        Admission(0)
