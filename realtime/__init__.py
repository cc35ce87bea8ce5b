"""The socket stack: ``/ws``, the hub and its fan-out, presence, the committer, the backplane.

``transport/`` holds what reads and writes sockets; nothing here imports a view: the pages
announce what happened to an account with ``accounts.signals``, which ``Runtime`` listens to,
and what happened to a room with ``core.signals``, which ``room_events.Listener`` listens to.
"""

from flask import Flask

from extensions import sock
from realtime import room_events, route
from realtime.runtime import RUNTIME_KEY, Runtime
from realtime.transport import adapter


def init_app(app: Flask) -> None:
    """Register ``/ws``, and give the app its runtime (nothing starts before the first socket)."""
    app.config["SOCK_SERVER_OPTIONS"] = adapter.server_options(app.config)
    app.extensions[RUNTIME_KEY] = runtime = Runtime(app)
    runtime.listen()
    # Held by the app: blinker holds the listener's bound methods weakly.
    app.extensions[room_events.LISTENER_KEY] = room_events.Listener(app, runtime.hub)
    app.register_blueprint(route.bp)
    sock.init_app(app)
