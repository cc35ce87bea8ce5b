"""The whole chat in one file and back (``flask export`` / ``flask import``), and a consistent copy
of a live SQLite database and its uploads (``flask backup``): a team's data is its own, and moves
from the embedded default to PostgreSQL without losing a message."""

from flask import Flask

from archive import cli


def init_app(app: Flask) -> None:
    """Register the commands."""
    for command in (cli.export_command, cli.import_command, cli.backup_command):
        app.cli.add_command(command)
