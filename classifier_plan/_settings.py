"""The predictor's ``Settings`` validated from given values only (no environment of the planner's process)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from classifier_plan.errors import PlanInputError
from predictor.config import Settings


class _GivenOnly(Settings):
    """``Settings`` that reads nothing but its arguments: the rendered flags describe the pod, not this shell."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_sources):  # type: ignore[override]
        return (init_settings,)


def chart_settings(given: dict[str, Any]) -> Settings:
    """Validate the flags and env a rendered container passes to the predictor.

    Raises:
        PlanInputError: a value the server itself would refuse (names the flag).
    """
    try:
        return _GivenOnly(**given)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise PlanInputError("kserve-container args", f"--{key}", err["msg"]) from None
