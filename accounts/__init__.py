"""Accounts: the pages (register, log in, profile, password), their forms, socket tokens, the
``create-user`` command, and the signals that tell the socket stack what happened."""

from flask import Flask

from accounts import views
from accounts.cli import create_user_command


def init_app(app: Flask) -> None:
    """Register the pages, the session loader and the CLI command."""
    views.init_app(app)
    app.cli.add_command(create_user_command)
