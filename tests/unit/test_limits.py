"""The request rules every entry point shares (predictor/limits.py)."""

from __future__ import annotations

import pytest

from predictor.errors import InvalidInput
from predictor.limits import check_image_count, check_top_k


def test_top_k_defaults_caps_at_the_label_count_and_refuses_the_rest() -> None:
    assert check_top_k(None, 5, 100) == 5
    assert check_top_k(7, 5, 100) == 7
    assert check_top_k(50, 5, 100, num_labels=10) == 10
    for bad in (0, 101, -1, True, 2.5, "3"):
        with pytest.raises(InvalidInput, match=r"top_k must be an integer from 1 to 100, got"):
            check_top_k(bad, 5, 100)


def test_image_count_needs_one_and_at_most_the_limit() -> None:
    check_image_count(1, 4)
    check_image_count(4, 4)
    with pytest.raises(InvalidInput, match="no images in the request"):
        check_image_count(0, 4)
    with pytest.raises(InvalidInput, match=r"5 images in one request, over the limit of 4 \(max_images_per_request\)"):
        check_image_count(5, 4)
