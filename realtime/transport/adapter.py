"""The one module that leans on how simple-websocket, gunicorn and Werkzeug behave.

Flask-Sock does the handshake (``simple_websocket.Server``, built from the WSGI environ); from
then on the socket is ours, read and written through wsproto's documented low-level
``Connection`` (``connection.py``). Each behaviour relied on here has a contract test in
``tests/test_transport_contract.py``, so that an upgrade that changes one fails loudly:

- ``thread_class`` (a documented option of simple-websocket) is handed the reader thread's
  target and never runs it: simple-websocket never reads the socket.
- The handshake is made from the environ's ``HTTP_*`` headers: without
  ``Sec-WebSocket-Extensions`` it negotiates no extension (``decline_compression``).
- The request's socket is the environ's ``gunicorn.socket`` or ``werkzeug.socket``, and what the
  server does with it once the handler returns (Flask-Sock's close frame, gunicorn's graceful
  close, Werkzeug's response) lands on a stand-in, not on our connection (``take_over``).
"""

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


class NoReaderThread:
    """simple-websocket's ``thread_class``: its reader thread, which we never start."""

    def __init__(self, target: Callable[[], None] | None = None, **_kwargs: Any) -> None:
        self.name = "chat-no-reader"  # simple-websocket renames it; nothing else reads it.

    def start(self) -> None:
        """The socket is read by the poller (``reader.py``), not by a thread of its own."""

    def join(self, timeout: float | None = None) -> None:
        """Nothing to wait for."""

    def is_alive(self) -> bool:
        """Never started."""
        return False


def server_options(_config: Mapping[str, Any]) -> dict[str, Any]:
    """Flask-Sock's ``SOCK_SERVER_OPTIONS``: no reader thread (pings and the frame size limit
    are the reader's, ``reader.py``)."""
    return {"thread_class": NoReaderThread}


def decline_compression(environ: dict[str, Any]) -> None:
    """Make the handshake negotiate no extension, permessage-deflate included.

    A compressed frame of a few KB can inflate to gigabytes, in memory and on the thread that
    reads every socket; our frames are small and we never compress what we send, so we decline.
    """
    environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


def take_over(environ: Mapping[str, Any]) -> socket.socket:
    """The upgraded connection as a socket of our own, the request's descriptor left harmless.

    The connection moves to a new descriptor (``os.dup``); the request's descriptor is pointed
    at a stand-in whose peer is gone (``os.dup2``), so the server's own end of the request (a
    close frame from Flask-Sock, a graceful close, Werkzeug's response) fails on the stand-in
    with a broken pipe, and our connection lives on after the handler returns.
    """
    request_socket = next(environ[key] for key in _SOCKET_KEYS if key in environ)
    request_fd = request_socket.fileno()
    ours = socket.socket(fileno=os.dup(request_fd))
    stand_in, peer = socket.socketpair()
    with stand_in, peer:
        os.dup2(stand_in.fileno(), request_fd, inheritable=False)
    ours.setblocking(True)
    return ours
