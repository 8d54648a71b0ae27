"""The try-it page: plain HTML, CSS and JavaScript served by the predictor itself (``enable_ui``)."""

from predictor.ui.site import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, install

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "install"]
