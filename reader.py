"""Reading a client's socket in its handler's own thread, instead of a reader thread per socket.

simple-websocket starts a thread per connection that reads frames, answers pings and hands each
message to ``receive()`` in the handler's thread. With thousands of idle sockets that second
thread (its stack, its selector) was a large part of the memory per connection, and every
message crossed from one thread to the other. ``InlineReader`` takes its place (Flask-Sock's
``thread_class`` option): ``start()`` starts nothing, and ``receive()`` reads, pings and answers
pings and closes in the caller's thread, with simple-websocket's own event handling.
"""

import select
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
        self.name = "inline-reader"
        self._done = threading.Event()  # The connection is over: nothing more will be read.
        self._poll = None
        self._next_ping = None

    def start(self):
        """Called once the handshake is done: nothing runs until ``receive()``."""
        self._poll = select.poll()  # No file descriptor of its own, unlike a selector.
        self._poll.register(self._ws.sock.fileno(), select.POLLIN)
        if self._ws.ping_interval:
            self._next_ping = time.monotonic() + self._ws.ping_interval

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

    def _read(self):
        """Read what arrived and let simple-websocket handle it (messages, pings, close)."""
        ws = self._ws
        try:
            data = ws.sock.recv(ws.receive_bytes)
            if not data:
                raise ConnectionResetError("the peer closed the connection")
            ws.ws.receive_data(data)
            ws.connected = ws._handle_events()  # simple-websocket's own frame handling
        except (OSError, LocalProtocolError):
            ws.connected = False

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
