"""settings.enable_ui: off in every profile, rendered as a flag the predictor parses, only a boolean."""

from __future__ import annotations

from .chart_support import by_kind, one, render, render_error


def _predictor_args(isvc: dict) -> list[str]:
    return isvc["spec"]["predictor"]["containers"][0]["args"]


def test_the_page_is_off_in_every_profile(rendered):
    for profile, objects in rendered.items():
        for isvc in by_kind(objects, "InferenceService"):
            assert "--enable_ui=false" in _predictor_args(isvc), profile


def test_enable_ui_reaches_the_predictor():
    from predictor.__main__ import build_parser
    from predictor.config import settings_from_args

    args = _predictor_args(one(render(set_values=["settings.enable_ui=true"]), "InferenceService"))
    assert "--enable_ui=true" in args
    assert settings_from_args(build_parser().parse_args(["serve", *args])).enable_ui is True


def test_enable_ui_must_be_a_boolean():
    err = render_error(set_values=["settings.enable_ui=yes"])
    assert "enable_ui" in err and "boolean" in err
