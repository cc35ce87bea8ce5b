"""The JSON API: socket tokens (``/api/token``), search, and files (uploads and fetching them)."""

from flask import Flask

from api import files, views


def init_app(app: Flask) -> None:
    """Register the API's blueprints."""
    views.init_app(app)
    files.init_app(app)


__all__ = ["init_app"]
