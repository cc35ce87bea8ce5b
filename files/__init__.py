"""Files people share: uploads, their store, the images made safe to show (the routes are in
``api/files.py``), and avatars (``avatars.py``, with their routes)."""

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from PIL import Image

from files import avatars, store
from files.uploads import purge_unposted


def init_app(app: Flask) -> None:
    """Choose the store, register the avatars' routes and ``flask purge-uploads``."""
    # Pillow refuses to open past twice its limit and warns past it; ours is checked first.
    Image.MAX_IMAGE_PIXELS = app.config["CHAT_MAX_IMAGE_PIXELS"]
    store.init_app(app)
    avatars.init_app(app)
    app.cli.add_command(purge_uploads_command)


@click.command("purge-uploads")
@with_appcontext
def purge_uploads_command() -> None:
    """Remove every upload never posted within CHAT_UPLOAD_TTL (uploads also do it as they go)."""
    removed = batch = purge_unposted(current_app.config["CHAT_UPLOAD_TTL"])
    while batch:
        batch = purge_unposted(current_app.config["CHAT_UPLOAD_TTL"])
        removed += batch
    click.echo(f"Removed {removed} unposted uploads.")
