"""Running the server: roles, deactivation, moderation, the registration policy, invitations
and the audit log; the ``/admin`` page and the shell's commands."""

from flask import Flask

from admin import cli, views


def init_app(app: Flask) -> None:
    """Register the commands and the page."""
    views.init_app(app)
    for command in cli.COMMANDS:
        app.cli.add_command(command)
