"""Reading a client's socket in whichever thread serves it: no reader thread per socket.

``FrameReader`` reads the socket and feeds wsproto's low-level connection (``Connection.receive``),
answers pings, pings the peer every ``ping_interval`` and gives up on one that stops answering,
refuses messages over the size limit (1009), and finishes the closing handshake. It writes
nothing itself: every pong and close frame goes through the connection's one write path.

``receive()`` blocks, for the greeting (its resume frame); ``receive_nowait()`` never does, for
the poller (``poller.py``), which calls it when the socket is readable or something is due.
"""

import collections
import contextlib
import select
import socket
import time
from typing import TYPE_CHECKING

from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from realtime.transport.frames import if_open, if_state

if TYPE_CHECKING:
    from realtime.transport.connection import Connection

CLOSE_TIMEOUT = 2.0  # Seconds a peer has to answer our close frame.
RECEIVE_BYTES = 4096  # Bytes per read: the poller's budget of a socket's turn counts reads.
DISCARD_READS, DISCARD_BYTES = 16, 65536  # At most 1 MiB read and dropped after a bad frame.
_OPEN = ConnectionState.OPEN
_LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING


class ConnectionClosed(Exception):
    """The connection is over: closed by either side, broken, or given up on."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class FrameReader:
    """Reads one socket's frames for its ``Connection``, in the caller's thread."""

    def __init__(
        self,
        sock: socket.socket,
        conn: "Connection",
        max_message_bytes: int,
        ping_interval: float | None,
    ) -> None:
        self._sock = sock
        self._conn = conn
        self._max = max_message_bytes
        self._ping_interval = ping_interval
        self._poll = select.poll()  # No file descriptor of its own, unlike a selector.
        self._poll.register(sock.fileno(), select.POLLIN)
        self._next_ping = time.monotonic() + ping_interval if ping_interval else None
        self._pong_received = True
        self._close_deadline: float | None = None  # Set once we wait for our close's answer.
        self._messages: collections.deque[str | bytes] = collections.deque()
        self._parts: list[str | bytes] = []  # A fragmented message so far.
        self._size = 0  # Its length so far.
        self._refused = False  # We closed over a frame (too big, unparsable): drop the rest.
        self._unparsable = False  # The peer broke the framing: what follows is not read.
        self._broken = False  # The transport failed, or we gave up on the peer: do not wait.
        self._done = False  # Over: nothing more will be read.
        self.code: int | None = None  # Why it closed, once it did.
        self.reason: str | None = None
        self.reads = 0  # Reads that returned bytes: the poller's measure of a socket's turn.

    def next_due(self) -> float | None:
        """When ``receive_nowait`` should be called to ping, or to stop waiting for the answer
        to our close frame (``time.monotonic()``); None if it need not be."""
        return self._close_deadline or self._next_ping

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message, or None after ``timeout`` seconds without one.

        Raises ``ConnectionClosed`` once the connection is over.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._messages:
                return self._messages.popleft()
            if self._over():
                self.linger(CLOSE_TIMEOUT)  # If we sent a close frame: wait for the answer.
                raise ConnectionClosed(self.code, self.reason)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if self._next_ping is not None and now >= self._next_ping:
                self._ping(now)
                continue
            ends = [end for end in (deadline, self._next_ping) if end is not None]
            wait_ms = None if not ends else max(0, int((min(ends) - now) * 1000) + 1)
            if self._poll.poll(wait_ms):
                self._read(wait=True)

    def receive_nowait(self, read: bool = True) -> str | bytes | None:
        """The next message if one can be had without waiting, else None; pings when due.

        It reads the socket at most once (``reads`` counts them: a caller sharing its thread
        with other sockets budgets them, pings included), and not at all with ``read=False``.

        Raises ``ConnectionClosed`` once the connection is over. After our close frame it reads
        (and drops) what arrives until the peer's answer, for at most ``CLOSE_TIMEOUT``.
        """
        while True:
            if self._messages:
                return self._messages.popleft()
            now = time.monotonic()
            if self._over():
                if self._closing(now) and self._answer_pending():
                    return None
                self._finish()
                raise ConnectionClosed(self.code, self.reason)
            if self._next_ping is not None and now >= self._next_ping:
                self._ping(now)
                continue
            if not read or not self._read(wait=False):
                return None
            read = False  # Once: a read that brought no whole message ends the call.

    def linger(self, timeout: float) -> None:
        """After our close frame, read until the peer's answer or ``timeout``, then stop.

        Hanging up at once would reset a peer that is still sending, and a reset makes it drop
        our close frame unread.
        """
        deadline = time.monotonic() + timeout
        try:
            if self._unparsable:
                self._discard_unread()
                return
            while self._awaiting_answer():
                wait = deadline - time.monotonic()
                if wait <= 0 or not self._poll.poll(int(wait * 1000) + 1):
                    break
                if not self._answer_pending():
                    break
        finally:
            self._finish()

    def _discard_unread(self) -> None:
        """Read and drop what the peer already sent (a bounded amount): hanging up with unread
        bytes would reset the connection, and a reset makes the peer drop our close frame."""
        with contextlib.suppress(OSError):
            for _ in range(DISCARD_READS):
                if not self._sock.recv(DISCARD_BYTES, socket.MSG_DONTWAIT):
                    return

    def _over(self) -> bool:
        """True once no message will come: a close frame went either way, or the socket broke."""
        return self._done or self._broken or self._conn.state is not _OPEN or self._conn.aborted

    def _awaiting_answer(self) -> bool:
        """True while our close frame is unanswered and the socket still works."""
        conn = self._conn
        return not (self._done or self._broken or conn.aborted) and conn.state is _LOCAL_CLOSING

    def _closing(self, now: float) -> bool:
        """True while we wait for the answer to our close frame, at most ``CLOSE_TIMEOUT``."""
        if not self._awaiting_answer():
            return False
        if self._close_deadline is None:
            self._close_deadline = now + CLOSE_TIMEOUT
            self._next_ping = None  # Pings are over; the poller wakes us at the deadline.
        return now < self._close_deadline

    def _answer_pending(self) -> bool:
        """Read what arrived after our close frame; True while the peer's answer has not come."""
        try:
            data = self._sock.recv(RECEIVE_BYTES, socket.MSG_DONTWAIT)
            if not data:
                return False
            events = self._conn.receive(data)
        except BlockingIOError:
            return True
        except (OSError, LocalProtocolError):
            return False
        for event in events:
            if isinstance(event, CloseConnection):
                self.code, self.reason = event.code, event.reason
                return False
        return True

    def _finish(self) -> None:
        """Nothing more will be read: the connection may hang up."""
        self._done = True
        self._next_ping = self._close_deadline = None
        self._conn.ended.set()

    def _read(self, wait: bool) -> bool:
        """Read what arrived and handle its events; with ``wait=False`` nothing blocks, and
        False means nothing had arrived."""
        try:
            data = self._sock.recv(RECEIVE_BYTES, 0 if wait else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            self._break(CloseReason.ABNORMAL_CLOSURE)
            return True
        if not data:
            self._break(CloseReason.ABNORMAL_CLOSURE)  # The peer hung up without a close frame.
            return True
        self.reads += 1
        try:
            events = self._conn.receive(data)
        except LocalProtocolError:  # Data after the closing handshake.
            self._break(CloseReason.PROTOCOL_ERROR)
            return True
        for event in events:
            self._handle(event)
        return True

    def _handle(self, event: Event) -> None:
        """One protocol event: a piece of a message, a ping, a pong, or a close frame."""
        if isinstance(event, TextMessage | BytesMessage):
            self._take_piece(event)
        elif isinstance(event, Ping):
            self._conn.send_control(if_open(event.response()))
        elif isinstance(event, Pong):
            self._pong_received = True
        elif isinstance(event, CloseConnection):
            self._closed_by(event)

    def _take_piece(self, event: Message) -> None:
        """Add a piece of a message; a whole one is queued, one over the limit refused (1009)."""
        if self._refused:
            return  # We closed the connection over an earlier frame: the rest is dropped.
        self._size += len(event.data)
        if self._size > self._max:
            self._parts, self._size = [], 0
            self._refuse(CloseReason.MESSAGE_TOO_BIG, "Message is too big")
            return
        self._parts.append(event.data)
        if event.message_finished:
            parts, self._parts, self._size = self._parts, [], 0
            self._messages.append(_joined(parts))

    def _closed_by(self, event: CloseConnection) -> None:
        """A close frame arrived (answered here), or the peer broke the protocol (we close)."""
        state = self._conn.state
        if state is _OPEN:
            # wsproto reports a frame it cannot parse as a close event, without closing. What
            # follows cannot be parsed either, so no answer could be read: fail the connection
            # (RFC 6455 7.1.7), without waiting.
            self._refuse(event.code, event.reason)
            self._unparsable = True
            self._break(event.code)
            return
        self.code, self.reason = event.code, event.reason
        if state is _REMOTE_CLOSING:
            self._conn.send_control(if_state(_REMOTE_CLOSING, event.response()))

    def _refuse(self, code: int, reason: str | None) -> None:
        """Close the connection over a frame we will not take; what follows it is dropped."""
        self._refused = True
        self._conn.send_control(if_open(CloseConnection(code, reason)))

    def _break(self, code: int) -> None:
        """The socket failed or the peer hung up: over, with nothing to wait for."""
        self._broken = True
        if self.code is None:
            self.code = code

    def _ping(self, now: float) -> None:
        """Send a ping, or give up on a peer that did not answer the last one."""
        if self._next_ping is None or self._ping_interval is None:
            return  # No pings on this socket (or not any more: it is closing).
        if not self._pong_received and self._poll.poll(0):
            self._read(wait=False)  # The pong may be waiting unread: the thread was busy.
        if not self._pong_received:
            timeout = CloseConnection(CloseReason.POLICY_VIOLATION, "Ping/Pong timeout")
            self._conn.send_control(if_open(timeout))
            self._break(CloseReason.POLICY_VIOLATION)  # It answers nothing: do not wait for it.
            return
        self._pong_received = False
        self._conn.send_control(if_open(Ping()))
        self._next_ping = max(now, self._next_ping) + self._ping_interval


def _joined(parts: list[str | bytes]) -> str | bytes:
    """The pieces of a fragmented message as one (text stays text, binary binary)."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], str):
        return "".join(part for part in parts if isinstance(part, str))
    return b"".join(part for part in parts if isinstance(part, bytes))
