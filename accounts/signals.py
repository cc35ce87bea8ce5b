"""What happened to an account, announced to whoever listens (the socket stack does).

The pages never reach into the socket stack: they send one of these, with the app as sender,
and ``realtime`` closes or renames the user's sockets. Blinker ships with Flask.
"""

from typing import TypedDict, Unpack, cast

from blinker import NamedSignal, Namespace
from flask import Flask, current_app
from werkzeug.local import LocalProxy

_signals = Namespace()

#: ``user_id``, ``name``: a user's display name changed.
user_renamed = _signals.signal("user-renamed")
#: ``user_id``, ``everywhere``: a user signed out (here, or on every device); their socket
#: tokens are revoked and their open sockets must close.
user_signed_out = _signals.signal("user-signed-out")
#: ``user_id``: a user changed their password; every other session, token and socket ends.
password_changed = _signals.signal("password-changed")
#: ``user_id``: an administrator deactivated the account; every session, token and socket ends.
user_deactivated = _signals.signal("user-deactivated")
#: ``user_id``, ``avatar_url``: a user uploaded or removed their picture (None: the initials).
avatar_changed = _signals.signal("avatar-changed")


class Details(TypedDict, total=False):
    """What a signal tells besides ``user_id``."""

    name: str  # user_renamed
    everywhere: bool  # user_signed_out
    avatar_url: str | None  # avatar_changed


def announce(signal: NamedSignal, user_id: int, **details: Unpack[Details]) -> None:
    """Tell the listeners (the socket stack) what happened to ``user_id``'s account."""
    # The app itself, not the proxy (Flask types ``current_app`` as the app): the socket stack
    # subscribed with the app as sender.
    app = cast("LocalProxy[Flask]", current_app)._get_current_object()
    signal.send(app, user_id=user_id, **details)
