"""What happened to an account, announced to whoever listens (the socket stack does).

The pages never reach into the socket stack: they send one of these, with the app as sender,
and ``realtime`` closes or renames the user's sockets. Blinker ships with Flask.
"""

from blinker import Namespace

_signals = Namespace()

#: ``user_id``, ``name``: a user's display name changed.
user_renamed = _signals.signal("user-renamed")
#: ``user_id``, ``everywhere``: a user signed out (here, or on every device); their socket
#: tokens are revoked and their open sockets must close.
user_signed_out = _signals.signal("user-signed-out")
#: ``user_id``: a user changed their password; every other session, token and socket ends.
password_changed = _signals.signal("password-changed")
