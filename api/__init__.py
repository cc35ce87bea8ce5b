"""The JSON API: socket tokens for scripts and for the page (``/api/token``)."""

from api.views import init_app

__all__ = ["init_app"]
