"""The second yardstick: Flask-SocketIO doing what bench/reference_server.py does.

On connect it emits a ``hello`` event; each ``message`` event is emitted to everyone as a frame of
the chat's shape (``reference_server.message_fields``). No auth, no database. Two deployments, as
Flask-SocketIO's docs give them, chosen by ``BENCH_SOCKETIO_MODE``:

    BENCH_SOCKETIO_MODE=threading gunicorn -w 1 --threads N 'bench.socketio_server:create_app()'
    BENCH_SOCKETIO_MODE=gevent gunicorn -k gevent -w 1 'bench.socketio_server:create_app()'

Threading mode holds a thread per open socket (simple-websocket under gthread), so ``N`` must
exceed the clients; gevent mode holds a greenlet each. Started by ``python -m bench``.
"""

import os

from flask import Flask
from flask_socketio import SocketIO, emit

from bench.reference_server import message_fields


def create_app():
    """The app, its SocketIO bound in the mode the environment names."""
    app = Flask(__name__)
    # Nothing is signed; Flask wants a key all the same.
    app.config["SECRET_KEY"] = "bench-socketio"  # noqa: S105 - a throwaway server
    mode = os.environ.get("BENCH_SOCKETIO_MODE", "threading")
    socketio = SocketIO(app, async_mode=mode, logger=False, engineio_logger=False)
    _register(socketio)
    return app


def _register(socketio):
    """The two handlers: greet on connect, broadcast each message."""

    @socketio.on("connect")
    def greet():
        """Greet the socket, as the other servers do with their first frame."""
        emit("hello", {"type": "hello"})

    @socketio.on("message")
    def broadcast(frame):
        """Everyone gets the message, the sender too, encoded once by Socket.IO."""
        socketio.emit("message", message_fields(frame["text"], frame.get("client_id")))
