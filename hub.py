"""The hub: who is connected, and fan-out of frames to them.

Each ``Connection`` has exactly one writer: a thread that drains its bounded outbound queue. The hub
only ever *queues* frames, never writes to a socket, so one slow or dead client cannot delay anyone
else; a client whose queue overflows is cut off and recovers by reconnecting.
"""

import contextlib
import logging
import queue
import socket
import threading

from simple_websocket import ConnectionClosed
from wsproto.utilities import LocalProtocolError

log = logging.getLogger(__name__)

_STOP = object()


class ReaderThread(threading.Thread):
    """simple-websocket's reader thread, made to always wake the handler when it ends.

    simple-websocket 1.1 can end its reader (after a frame over ``max_message_size``) while a
    ``receive()`` is about to wait again, leaving the handler asleep forever. Marking the socket
    closed and setting its event once the reader is done makes ``receive()`` raise instead.
    """

    def __init__(self, *args, target, **kwargs):
        super().__init__(*args, target=target, **kwargs)
        self._ws = target.__self__

    def run(self):
        """Run the reader, then wake whoever waits on the socket."""
        try:
            super().run()
        finally:
            self._ws.connected = False
            self._ws.event.set()


class SerializedSocket:
    """A socket whose writes take one lock, so that frames from two threads never interleave.

    Our writer thread sends every frame we produce, but simple-websocket's reader thread also writes
    (pings, pongs, close replies), and Linux may put one thread's bytes in the middle of another's
    partly sent frame. Every write goes through ``send`` here; everything else is the real socket.
    """

    def __init__(self, sock):
        self._sock = sock
        self.lock = threading.RLock()

    def send(self, data):
        """Send all of ``data`` before anyone else may write."""
        with self.lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class Connection:
    """One client socket, its bounded outbound queue, and the one thread that writes to it."""

    def __init__(self, ws, user_id, name, queue_size):
        self.user_id = user_id
        self.name = name
        ws.sock = SerializedSocket(ws.sock)
        self._ws = ws
        self._aborted = False
        self._queue = queue.Queue(maxsize=queue_size)
        self._writer = threading.Thread(
            target=self._write_loop, name=f"chat-writer-{user_id}", daemon=True
        )

    def start(self):
        """Start the writer thread."""
        self._writer.start()

    def send(self, payload):
        """Queue ``payload`` without blocking; a client too far behind is cut off."""
        if self._aborted:
            return False
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            log.warning("cutting off a slow client of user %s", self.user_id)
            self.abort()
            return False
        return True

    def abort(self):
        """Drop the connection now, without writing: wakes up its blocked reader and writer."""
        self._aborted = True
        with contextlib.suppress(OSError):  # Already closed: nothing left to wake.
            self._ws.sock.shutdown(socket.SHUT_RDWR)

    def close(self, timeout=5.0):
        """Let the writer flush what is queued, then stop it."""
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            self.abort()
        self._writer.join(timeout)
        if self._writer.is_alive():
            # The peer stopped reading while we flushed: stop waiting for it.
            self.abort()
            self._writer.join(timeout)
        if not self._ws.connected:
            # The closing handshake is over (or failed): the server closes TCP first (RFC 6455
            # 7.1.1), instead of leaving the client to wait for its close timeout.
            self.abort()

    def _write_loop(self):
        """Write queued frames in order until stopped or the socket fails."""
        while True:
            payload = self._queue.get()
            if payload is _STOP:
                return
            try:
                # Held across framing and sending: a close frame from the reader cannot come first.
                with self._ws.sock.lock:
                    self._ws.send(payload)
            except (ConnectionClosed, OSError, LocalProtocolError):
                # LocalProtocolError: the reader thread closed the socket while we framed.
                self.abort()
                return


class Hub:
    """A thread-safe registry of connections, with presence and fan-out."""

    def __init__(self):
        # Guards the registry only; nothing under it does I/O.
        self._lock = threading.Lock()
        # Makes "persist, then queue to everyone" one step, so every client receives messages in id
        # order and a joining client's history meets its live frames with no gap and no duplicate.
        self._order = threading.Lock()
        self._connections = set()
        self._snapshot = ()  # Rebuilt on change so that broadcasts read it without the lock.
        self._sockets = {}  # user id -> number of open sockets
        self._names = {}  # user id -> display name

    def ordered(self):
        """A context in which to persist and broadcast, or to read history and attach."""
        return self._order

    def attach(self, conn):
        """Register ``conn``; return True when it is its user's first socket."""
        with self._lock:
            self._connections.add(conn)
            self._snapshot = tuple(self._connections)
            count = self._sockets.get(conn.user_id, 0)
            self._sockets[conn.user_id] = count + 1
            self._names[conn.user_id] = conn.name
        return count == 0

    def detach(self, conn):
        """Unregister ``conn``; return True when it was its user's last socket."""
        with self._lock:
            if conn not in self._connections:
                return False
            self._connections.discard(conn)
            self._snapshot = tuple(self._connections)
            count = self._sockets.pop(conn.user_id) - 1
            if count:
                self._sockets[conn.user_id] = count
            else:
                del self._names[conn.user_id]
        return count == 0

    def online(self):
        """Display names of the users with at least one open socket, sorted."""
        with self._lock:
            return sorted(self._names.values(), key=str.casefold)

    def broadcast(self, payload, exclude=None):
        """Queue ``payload`` (already encoded) to every connection but ``exclude``."""
        for conn in self._snapshot:
            if conn is not exclude:
                conn.send(payload)
