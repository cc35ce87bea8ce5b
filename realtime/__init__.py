"""The socket stack: ``/ws``, the hub and its fan-out, presence, the committer, the backplane.

``transport/`` holds what reads and writes sockets; nothing here imports a view: the pages
announce what happened to an account with ``accounts.signals``, which ``Runtime`` listens to.
"""

from flask import Flask

from extensions import sock
from realtime import route
from realtime.runtime import RUNTIME_KEY, Runtime
from realtime.transport import adapter


def init_app(app: Flask) -> None:
    """Register ``/ws``, and give the app its runtime (nothing starts before the first socket)."""
    app.config["SOCK_SERVER_OPTIONS"] = adapter.server_options(app.config)
    app.extensions[RUNTIME_KEY] = runtime = Runtime(app)
    runtime.listen()
    app.register_blueprint(route.bp)
    sock.init_app(app)
