"""Reading a client's socket in whichever thread serves it, instead of a reader thread per socket.

simple-websocket starts a thread per connection that reads frames, answers pings and hands each
message to ``receive()`` in the handler's thread. With thousands of idle sockets that thread (its
stack, its selector) was a large part of the memory per connection, and every message crossed
from one thread to the other. ``InlineReader`` takes its place (Flask-Sock's ``thread_class``
option): ``start()`` starts nothing; ``receive()`` (blocking, for the greeting) and
``receive_nowait()`` (for the poller, ``poller.py``) read, ping, answer pings and close in the
caller's thread, with simple-websocket's own event handling.
"""

import os
import select
import socket
import threading
import time

from simple_websocket import ConnectionClosed
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Ping
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

CLOSE_TIMEOUT = 2.0  # Seconds a peer has to answer our close frame.


class InlineReader:
    """Stands in for simple-websocket's reader thread; the socket's ``receive()`` is ours."""

    def __init__(self, *, target, **_):
        self._ws = target.__self__  # The simple_websocket.Server being built.
        self._ws.receive = self.receive  # Flask-Sock's handler calls ws.receive(): it reads here.
        self._ws.close = self.close  # ... and ws.close() once it returns: see ``close``.
        self.name = "inline-reader"
        self._done = threading.Event()  # The connection is over: nothing more will be read.
        self._poll = None
        self._next_ping = None
        self._close_deadline = None  # Set once we wait for the answer to our close frame.
        self._handler = None  # The thread that handed the socket to the poller.
        self.owns_socket = False  # The server no longer closes the socket: we do.
        self.reads = 0  # Reads that returned bytes: the poller's measure of a socket's turn.

    def start(self):
        """Called once the handshake is done: nothing runs until ``receive()``."""
        self._poll = select.poll()  # No file descriptor of its own, unlike a selector.
        self._poll.register(self._ws.sock.fileno(), select.POLLIN)
        if self._ws.ping_interval:
            self._next_ping = time.monotonic() + self._ws.ping_interval

    def hand_off(self, detach):
        """The poller serves the socket from now on; returns its file descriptor, to watch.

        With ``detach`` (gunicorn, whose request ends when the handler returns) the connection
        moves to a file descriptor of our own (``owns_socket``), and the request's descriptor is
        pointed at an unconnected stand-in: gunicorn's graceful close (a half-close, then a
        close) and its connection count then go on as for any request, without touching the
        chat's connection. Werkzeug hangs up when the handler returns, so its handler waits for
        the end instead, and Werkzeug closes the socket.
        """
        ws = self._ws
        if detach:
            with ws.sock.lock:
                request_fd = ws.sock.raw.fileno()
                ours = socket.socket(fileno=os.dup(request_fd))
                with socket.socket() as stand_in:
                    os.dup2(stand_in.fileno(), request_fd, inheritable=False)
                ws.sock.replace(ours)
            self._poll = select.poll()
            self._poll.register(ours.fileno(), select.POLLIN)
            self.owns_socket = True
            ws.environ = None  # The request's objects are the server's to free now.
        ws.event = _NoEvent  # Only simple-websocket's reader thread waited on it: we have none.
        self._handler = threading.get_ident()
        return ws.sock.fileno()

    def close(self, reason=None, message=None):
        """Send a close frame (simple-websocket's ``close``), except at the handler's end.

        Flask-Sock closes the socket when the route returns; once the socket is handed to the
        poller, that return is not the end of the connection, and the call is ignored.
        """
        if self._handler == threading.get_ident():
            return
        type(self._ws).close(self._ws, reason, message)

    def next_due(self):
        """When ``receive_nowait`` should be called to ping, or to stop waiting for the answer
        to our close frame (``time.monotonic()``); None if it need not be."""
        return self._close_deadline or self._next_ping

    def join(self, timeout=None):
        """Wait until the connection is over (as joining the reader thread did)."""
        self._done.wait(timeout)

    def is_alive(self):
        """True until the connection is over."""
        return not self._done.is_set()

    def receive(self, timeout=None):
        """The next message (str or bytes), or None after ``timeout`` seconds without one.

        Raises ``ConnectionClosed`` once the connection is over (closed by either side, a
        protocol error, a frame over the size limit, or a peer that stopped answering pings).
        """
        ws = self._ws
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if ws.input_buffer:
                return ws.input_buffer.pop(0)
            if not ws.connected:
                if ws.ws.state is ConnectionState.LOCAL_CLOSING:
                    self.linger(CLOSE_TIMEOUT)  # We sent a close frame: wait for the answer.
                self._done.set()
                raise ConnectionClosed(ws.close_reason, ws.close_message)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if self._next_ping is not None and now >= self._next_ping:
                self._ping(now)
                continue
            ends = [end for end in (deadline, self._next_ping) if end is not None]
            wait_ms = None if not ends else max(0, int((min(ends) - now) * 1000) + 1)
            if self._poll.poll(wait_ms):
                self._read()

    def receive_nowait(self, read=True):
        """The next message if one can be had without waiting, else None; pings when due.

        It reads the socket at most once (``reads`` counts them: a caller sharing its thread with
        other sockets budgets them, pings included), and not at all with ``read=False``: only
        what is already read and parsed is returned then.

        Raises ``ConnectionClosed`` once the connection is over. After our close frame it reads
        (and drops) what arrives until the peer's answer: the writer that sent the frame hangs
        up if that answer takes longer than ``CLOSE_TIMEOUT``.
        """
        ws = self._ws
        while True:
            if ws.input_buffer:
                return ws.input_buffer.pop(0)
            now = time.monotonic()
            if not ws.connected:
                if self._closing(now) and self._answer_pending():
                    return None
                self._done.set()
                raise ConnectionClosed(ws.close_reason, ws.close_message)
            if self._next_ping is not None and now >= self._next_ping:
                self._ping(now)
                continue
            if not read or not self._read(wait=False):
                return None
            read = False  # Once: a read that brought no whole message ends the call.

    def _closing(self, now):
        """True while we wait for the answer to our close frame, at most ``CLOSE_TIMEOUT``."""
        if self._ws.ws.state is not ConnectionState.LOCAL_CLOSING or self._done.is_set():
            return False
        if self._close_deadline is None:
            self._close_deadline = now + CLOSE_TIMEOUT
            self._next_ping = None  # Pings are over; the poller wakes us at the deadline.
        return now < self._close_deadline

    def _answer_pending(self):
        """Read what arrived after our close frame; True while the peer's answer has not come."""
        try:
            data = self._ws.sock.recv(self._ws.receive_bytes, socket.MSG_DONTWAIT)
            if not data:
                return False
            self._ws.ws.receive_data(data)
            return not any(isinstance(event, CloseConnection) for event in self._ws.ws.events())
        except BlockingIOError:
            return True
        except (OSError, LocalProtocolError):
            return False

    def linger(self, timeout):
        """After our close frame, read until the peer's close frame or ``timeout``, then stop.

        Hanging up at once would reset a peer that is still sending, and a reset makes it drop
        our close frame unread.
        """
        deadline = time.monotonic() + timeout
        try:
            while not self._done.is_set():
                wait = deadline - time.monotonic()
                if wait <= 0 or not self._poll.poll(int(wait * 1000) + 1):
                    break
                data = self._ws.sock.recv(self._ws.receive_bytes)
                if not data:
                    break
                self._ws.ws.receive_data(data)
                if any(isinstance(event, CloseConnection) for event in self._ws.ws.events()):
                    break
        except (OSError, LocalProtocolError):
            pass  # The peer is gone or broke the protocol: nothing left to wait for.
        finally:
            self._ws.connected = False
            self._done.set()

    def _read(self, wait=True):
        """Read what arrived and let simple-websocket handle it (messages, pings, close).

        With ``wait=False`` nothing blocks: False means nothing had arrived.
        """
        ws = self._ws
        try:
            data = ws.sock.recv(ws.receive_bytes, 0 if wait else socket.MSG_DONTWAIT)
            if not data:
                raise ConnectionResetError("the peer closed the connection")
            self.reads += 1
            ws.ws.receive_data(data)
            ws.connected = ws._handle_events()  # simple-websocket's own frame handling
        except BlockingIOError:
            return False
        except (OSError, LocalProtocolError):
            ws.connected = False
        return True

    def _ping(self, now):
        """Send a ping, or give up on a peer that did not answer the last one."""
        ws = self._ws
        if not ws.pong_received and self._poll.poll(0):
            self._read()  # The pong may be waiting unread: the handler was busy.
        try:
            if not ws.pong_received:
                ws.close(reason=CloseReason.POLICY_VIOLATION, message="Ping/Pong timeout")
                self._done.set()  # It answers nothing: do not wait for its close frame either.
                return
            ws.pong_received = False
            ws.sock.send(ws.ws.send(Ping()))
        except (OSError, LocalProtocolError, ConnectionClosed):
            ws.connected = False
        self._next_ping = max(now, self._next_ping) + ws.ping_interval


class _NoEvent:
    """simple-websocket sets its event when a frame arrives, for a reader thread we do not have."""

    @staticmethod
    def set():
        """Nobody waits: nothing to wake."""
