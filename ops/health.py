"""Placeholder: being written (issue 17)."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Nothing yet."""
