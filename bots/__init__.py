"""Bots: accounts that post through an incoming webhook (``/hooks/<secret>``) and answer
mentions through an outgoing one; administrators manage them on the admin page."""

from flask import Flask

from admin import bots as admin_bots
from bots import incoming, outgoing


def init_app(app: Flask) -> None:
    """Register the webhook route, the admin forms, and the listener of new messages."""
    incoming.init_app(app)
    outgoing.init_app(app)
    admin_bots.init_app(app)
