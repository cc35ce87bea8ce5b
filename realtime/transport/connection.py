"""One client socket: the one place that decides who writes to it and when.

A sender first tries a non-blocking write from its own thread (the common case: the socket's
buffer has room, no thread wakes up). Whatever would block goes to a bounded backlog that one
writer thread, started when it is needed and ended after ``WRITER_IDLE`` seconds without work,
drains in order. Nothing else writes to the socket: the reader's pongs and close replies go
through ``send_control`` like any frame, so no two writes ever interleave and no reader ever
waits on a slow client. A client whose backlog overflows is cut off and recovers by resuming.

The WebSocket protocol is wsproto's documented low-level ``Connection``, made here after
Flask-Sock's handshake (``adapter.py``); it is only used under ``_mutex``, by the reader
(``reader.py``) and the writers alike.
"""

import collections
import contextlib
import logging
import socket
import threading
from collections.abc import Callable

from wsproto.connection import Connection as Protocol
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event
from wsproto.utilities import LocalProtocolError

from realtime.protocol import CLOSE_TRY_AGAIN
from realtime.transport import frames
from realtime.transport.frames import STOP, CloseRequest, Kind, Outgoing, Stop
from realtime.transport.reader import CLOSE_TIMEOUT, FrameReader

log = logging.getLogger(__name__)

_OPEN = ConnectionState.OPEN
_MESSAGE = Kind.MESSAGE
_DONTWAIT = socket.MSG_DONTWAIT
# Seconds a writer thread waits for more work before it ends: a big hello outgrows the socket's
# buffer once, and its socket must not keep a thread for the rest of its life.
WRITER_IDLE = 5.0

Queued = Outgoing | CloseRequest | Stop


class Connection:
    """One client socket, its user, and its writes; ``reader`` reads it (``reader.py``)."""

    def __init__(
        self,
        sock: socket.socket,
        user_id: int,
        name: str,
        queue_size: int,
        locale: str | None = None,
        *,
        max_message_bytes: int = 65536,
        ping_interval: float | None = None,
        avatar_url: str | None = None,
    ) -> None:
        self.user_id = user_id
        self.name = name
        # The user's uploaded picture, carried by their messages (None: their initials); the
        # greeting reads it, ``Hub.set_avatar`` changes it.
        self.avatar_url = avatar_url
        # The user's language, for errors told outside the socket's request (poller, committer).
        self.locale = locale
        self.current: str | None = None  # Key of the room that plain-text frames go to.
        # Messages up to this id were in the database when the socket joined: it has them already.
        self.floor = 0
        # Likewise for changes to messages (edits, deletions, reactions): those up to this number
        # were in what it was sent when it joined.
        self.change_floor = 0
        self.last_post: object | None = None  # The newest message it queued for the committer.
        # The page said it is visible (a ``visibility`` frame); changed under the hub's lock.
        self.visible = False
        # Bytes written so far, and whether it was cut off for falling behind (for the metrics;
        # each write adds under the mutex, or in the one writer thread while it is writing).
        self.bytes_sent = 0
        self.cut_off = False
        self._sock = sock
        self._protocol = Protocol(ConnectionType.SERVER)
        self._limit = queue_size
        # Guards the protocol, the backlog and the flags below. Held during non-blocking writes
        # (they never wait, and the lock is this socket's alone), never during one that may block.
        self._mutex = threading.Lock()
        self._backlog: collections.deque[Queued] = collections.deque()
        self._writing = False  # The writer thread is writing outside the mutex right now.
        self._aborted = False
        self._closing = False  # A close was requested: no message is queued any more.
        self._closed = False  # close() ran: no writer may start any more.
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        # Frames sent while its greeting is read, kept to go after the hello (None: not held).
        self._held: list[Outgoing] | None = None
        self.ended = threading.Event()  # The reader is done: the closing handshake is over.
        self.reader = FrameReader(sock, self, max_message_bytes, ping_interval)

    def fileno(self) -> int:
        """The socket's file descriptor, for the poller to watch."""
        return self._sock.fileno()

    # ---- Protocol, for the reader ---------------------------------------------------------------

    def receive(self, data: bytes | None) -> list[Event]:
        """Feed what the socket read (None: the peer hung up); the events it completes."""
        with self._mutex:
            self._protocol.receive_data(data)
            return list(self._protocol.events())

    @property
    def state(self) -> ConnectionState:
        """The WebSocket state: OPEN until a close frame went either way."""
        return self._protocol.state

    def send_control(self, make: Callable[[ConnectionState], Event | None]) -> bool:
        """Frame and send a control event: ``make(state)`` chooses it, under the mutex, so that
        no message slips between a state change and the frame announcing it. Even while
        closing (a close reply must go); False if nothing went (None, or a refused event).

        A client that never reads and keeps sending pings fills its backlog with pongs and is
        cut off like any client too far behind.
        """
        with self._mutex:
            if self._aborted:
                return False
            event = make(self._protocol.state)
            if event is None:
                return False
            try:
                frame = frames.control(self._protocol.send(event))
            except LocalProtocolError:
                return False
            if self._writing or self._backlog:
                return self._enqueue(frame)
            self._write_locked([frame])
            return not self._aborted

    # ---- Writes -------------------------------------------------------------------------------

    def send(self, frame: Outgoing) -> bool:
        """Write ``frame`` now if the socket takes it, else queue it; never blocks.

        False if it was refused: the connection is closing, aborted, or too far behind.
        """
        with self._mutex:
            if self._aborted or self._closing:
                return False
            if self._held is not None:
                return self._hold_locked(frame)
            if self._writing or self._backlog:
                return self._enqueue(frame)
            self._write_locked([frame])
            return not self._aborted

    def hold(self) -> None:
        """Keep every frame sent from now on until ``release_held``.

        A greeting registers the socket first, then reads its hello outside the hub's lock:
        live frames that arrive meanwhile must wait behind it.
        """
        with self._mutex:
            self._held = []

    def release_held(self, first: list[Outgoing], keep: bool = True) -> bool:
        """Write ``first`` (the hello and its catch-up), then the frames held since ``hold``
        (dropped unless ``keep``), as ``send`` would; False if the connection refused them."""
        with self._mutex:
            held, self._held = self._held or [], None
            if self._aborted or self._closing:
                return False
            batch = first + held if keep else first
            if not batch:
                return True
            if self._writing or self._backlog:
                return all(self._enqueue(frame) for frame in batch)
            self._write_locked(batch)
            return not self._aborted

    def _hold_locked(self, frame: Outgoing) -> bool:
        """Keep ``frame`` for after the greeting, or cut the client off past the backlog's limit
        (we hold the mutex)."""
        assert self._held is not None
        if len(self._held) >= self._limit:
            log.warning(
                "cutting off a client of user %s while greeting it",
                self.user_id,
                extra={"user_id": self.user_id},
            )
            self.cut_off = True
            self._held = None
            self._abort_locked()
            return False
        self._held.append(frame)
        return True

    def queue(self, frame: Outgoing) -> bool:
        """Queue ``frame`` without writing (the caller holds a shared lock); True if the caller
        must ``flush`` this connection once it let go of the lock.

        An empty backlog is nobody's to write yet: the caller's. A full one already has a writer
        (another flush, or the writer thread) that takes this frame with the rest.
        """
        with self._mutex:
            if self._aborted or self._closing:
                return False
            if self._held is not None:
                self._hold_locked(frame)
                return False  # Its greeting writes it.
            mine = not self._backlog and not self._writing
            return self._enqueue(frame, wake=False) and mine

    def flush(self) -> None:
        """Write what is queued, as far as the socket takes it without waiting."""
        with self._mutex:
            if self._writing or not self._backlog:
                return  # The writer thread has it, or there is nothing to write.
            batch: list[Outgoing] = []
            while self._backlog and isinstance(head := self._backlog[0], Outgoing):
                batch.append(head)
                self._backlog.popleft()
            if batch:
                self._write_locked(batch)
            if self._backlog:
                self._kick()  # What the socket did not take, or a close request.

    def _write_locked(self, batch: list[Outgoing]) -> None:
        """Write ``batch`` as far as the socket takes it; the rest goes back to the backlog.

        We hold the mutex: it is this connection's alone, and a write that would block is not
        made (the writer thread finishes it), so holding it costs nobody else a wait. One lock
        and one system call per frame: this is the fan-out's inner loop.
        """
        if len(batch) > 1:
            batch = frames.coalesce(batch)
        for position, frame in enumerate(batch):
            sent = self._write_now(frame)
            if self._aborted:
                return
            if sent < len(frame.data):
                # A frame not begun stays what it was (a message is dropped if a close frame
                # goes first); one begun must be finished whatever happens.
                head = frame if sent == 0 else frames.rest(frame.data, sent)
                # Ahead of anything queued meanwhile: frames keep their order.
                self._backlog.extendleft(reversed([head, *batch[position + 1 :]]))
                self._kick()
                return

    def _write_now(self, frame: Outgoing) -> int:
        """Write what the socket takes without waiting; return how many bytes went."""
        if frame.kind is _MESSAGE and self._protocol.state is not _OPEN:
            return len(frame.data)  # After a close frame: dropped, as RFC 6455 5.5.1 asks.
        try:
            sent = self._sock.send(frame.data, _DONTWAIT)
        except BlockingIOError:
            return 0
        except (OSError, ValueError):  # ValueError: a TLS socket refuses flags.
            self._abort_locked()
            return len(frame.data)
        self.bytes_sent += sent
        return sent

    def _enqueue(self, item: Queued, wake: bool = True) -> bool:
        """Queue ``item``, or cut the client off if it is too far behind (we hold the mutex)."""
        if len(self._backlog) >= self._limit:
            log.warning(
                "cutting off a slow client of user %s",
                self.user_id,
                extra={"user_id": self.user_id},
            )
            self.cut_off = True
            self._abort_locked()
            return False
        self._backlog.append(item)
        if wake:
            self._kick()
        return True

    def _kick(self) -> None:
        """Wake the writer, starting one if there is none; the caller holds the mutex."""
        if self._writer is None:
            if self._closed:  # Nobody would ever stop it: drop what is left instead.
                self._abort_locked()
                return
            writer = threading.Thread(
                target=self._write_loop, name=f"chat-writer-{self.user_id}", daemon=True
            )
            try:
                writer.start()
            except RuntimeError:  # "can't start new thread": this client alone goes.
                log.error(
                    "no thread left to write to a client of user %s",
                    self.user_id,
                    extra={"user_id": self.user_id},
                )
                self._abort_locked()
                return
            self._writer = writer
        self._wake.set()

    # ---- The end --------------------------------------------------------------------------------

    def abort(self) -> None:
        """Drop the connection now, without writing: wakes up its blocked reader and writer."""
        with self._mutex:
            self._abort_locked()

    @property
    def backlog(self) -> int:
        """How many frames wait to be written (read without the mutex: a moment's count)."""
        return len(self._backlog)

    @property
    def aborted(self) -> bool:
        """True once the connection was dropped: nothing is read or written any more."""
        return self._aborted

    def _abort_locked(self) -> None:
        self._aborted = True
        self._backlog.clear()  # Release the memory at once: nobody will read it.
        self._wake.set()
        with contextlib.suppress(OSError):  # Already closed: nothing left to wake.
            self._sock.shutdown(socket.SHUT_RDWR)

    def close_with(self, code: int, reason: str) -> None:
        """Send what is queued, then a close frame with ``code``, then hang up."""
        with self._mutex:
            if self._aborted or self._closing:
                return
            self._closing = True
            self._backlog.append(CloseRequest(code, reason))  # Past the limit too: it must go.
            self._kick()

    def close(self, timeout: float = 5.0) -> None:
        """The session is over: flush what is queued, stop the writer, finish the closing
        handshake (the server closes TCP first, RFC 6455 7.1.1), and hang up."""
        # Frames queued under the order lock whose flush has not come yet go first: once
        # ``_closed`` is set, a backlog with no writer is dropped instead.
        self.flush()
        with self._mutex:
            self._closing = True  # A broadcast still holding this socket queues nothing more.
            self._closed = True
            if self._writer is not None and not self._aborted:
                self._backlog.append(STOP)
                self._wake.set()
            writer = self._writer
        if writer is not None:
            writer.join(timeout)
            if writer.is_alive():
                # The peer stopped reading while we flushed: stop waiting for it.
                self.abort()
                writer.join(timeout)
        # The handler is ending on its own (a greeting that failed): say so, then let the peer
        # answer; if our close frame is unanswered yet, the reader waits for the answer.
        self.send_control(frames.if_open(CloseConnection(CLOSE_TRY_AGAIN, "Try again later")))
        self.reader.linger(CLOSE_TIMEOUT)
        self.abort()

    def release(self) -> None:
        """Close the socket's file descriptor (after the poller forgot it)."""
        self._sock.close()

    def _write_loop(self) -> None:
        """Drain the backlog in order, blocking on the socket as long as it takes."""
        while True:
            woken = self._wake.wait(WRITER_IDLE)
            self._wake.clear()  # Before looking: a frame queued from now on sets it again.
            if not woken:
                with self._mutex:
                    if not self._backlog and not self._aborted:
                        self._writer = None  # The next backlog starts another (_kick).
                        return
            if not self._drain():
                return

    def _drain(self) -> bool:
        """Write the backlog until it is empty; False once the writer must end."""
        while True:
            closing = False
            with self._mutex:
                if self._aborted:
                    return False
                if not self._backlog:
                    return True  # Whoever queues more kicks us, or flushes it itself.
                item = self._backlog.popleft()
                if isinstance(item, Stop):
                    return False
                if isinstance(item, CloseRequest):
                    closing = True
                    frame = self._close_frame(item)
                    if frame is None:
                        return False  # The peer closed first, and was answered.
                elif not item.always_sent and self._protocol.state is not _OPEN:
                    continue  # A message after a close frame: dropped.
                else:
                    frame = item
                self._writing = True
            if not self._write_blocking(frame):
                return False
            if closing:
                self._hang_up_after_close()
                return False
            with self._mutex:
                self._writing = False

    def _close_frame(self, request: CloseRequest) -> Outgoing | None:
        """Our close frame for ``request`` (we hold the mutex); None if one went already."""
        try:
            return frames.control(
                self._protocol.send(CloseConnection(request.code, request.reason))
            )
        except LocalProtocolError:  # Not OPEN: a close frame already went one way or the other.
            return None

    def _write_blocking(self, frame: Outgoing) -> bool:
        """Write all of ``frame``; False if the socket failed (it is then aborted)."""
        try:
            self._sock.sendall(frame.data)
        except (OSError, ValueError):
            self.abort()
            return False
        self.bytes_sent += len(frame.data)
        return True

    def _hang_up_after_close(self) -> None:
        """Give the peer a moment to answer our close frame, then hang up.

        Hanging up at once would reset a peer that is still sending, and a reset makes it drop
        the close frame unread; the reader sets ``ended`` when the peer's close frame arrives.
        """
        self.ended.wait(CLOSE_TIMEOUT)
        self.abort()
