"""The JSON API: socket tokens (``/api/token``), search, files (uploads and fetching them), and
the REST API ``/api/v1/`` with personal API tokens (made on the profile page)."""

from flask import Flask

from accounts import api_tokens
from api import files, v1, views


def init_app(app: Flask) -> None:
    """Register the API's blueprints, and the profile's API token routes."""
    views.init_app(app)
    files.init_app(app)
    v1.init_app(app)
    api_tokens.init_app(app)


__all__ = ["init_app"]
