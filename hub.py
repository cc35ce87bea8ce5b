"""The hub: who is connected, and fan-out of frames to them.

A broadcast is framed once (``encode_frame``) and handed to each ``Connection``, which writes it
without blocking when the socket has room and otherwise queues it for its own writer thread; no
sender ever waits on a slow or dead client, and a client whose backlog overflows is cut off and
recovers by reconnecting. Fan-out goes through a backplane (``backplane.py``): in memory for one
process, Redis pub/sub for several.
"""

import bisect
import collections
import contextlib
import logging
import socket
import threading
import time

from flask import current_app
from simple_websocket import ConnectionClosed
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import FrameProtocol
from wsproto.utilities import LocalProtocolError

from backplane import BackplaneError, MemoryBackplane
from presence import PresenceBatcher
from reader import CLOSE_TIMEOUT

log = logging.getLogger(__name__)

_STOP = object()
_OPEN = ConnectionState.OPEN
_DONTWAIT = socket.MSG_DONTWAIT
_FRAME_TYPES = (bytes, memoryview)  # What the backlog holds besides close and stop requests.


class _Deferred(threading.local):
    """Per thread, while it holds ``Hub.ordered()``: the connections it queued frames to."""

    connections = None


_deferred = _Deferred()
# Set in each connection's writer thread, the one reader-side writes may wait for.
_writer = threading.local()
HUB_KEY = "chat_hub"


def current_hub():
    """The hub of the current app (``chat.init_app`` creates it)."""
    return current_app.extensions[HUB_KEY]


# Application close codes (4000-4999 are ours to define, RFC 6455 7.4.2).
CLOSE_REVOKED = 4001  # Logged out or password changed: go to the login page, do not reconnect.
CLOSE_FLOOD = 4029  # Kept sending faster than the rate limit allows.
# Seconds the reader waits for our writer before it gives the client up (a shut receive window).
SEND_WAIT = 10.0
# Seconds a writer thread waits for more work before it ends: a big hello outgrows the socket's
# buffer once, and its socket must not keep a thread for the rest of its life.
WRITER_IDLE = 5.0
CLOSE_GOING_AWAY = 1001  # The server is shutting down: reconnect.
CLOSE_TRY_AGAIN = 1013  # The handler ended on its own (the greeting failed): reconnect later.


class _Close:
    """A queued request for the writer to send a close frame, then drop the connection."""

    def __init__(self, code, reason):
        self.code = code
        self.reason = reason


class _ControlBytes(bytes):
    """A frame of the reader's (a pong, a ping, a close reply): sent whatever the connection's
    state, unlike our messages, which are dropped once a close frame has gone."""


class SerializedSocket:
    """A socket whose writes take one lock, so that frames from two threads never interleave.

    Senders and our writer thread send every frame we produce, but the reader (the handler's
    thread, ``reader.py``) also writes: pings, pongs, close replies. Linux may put one thread's
    bytes in the middle of another's partly sent frame. Every write goes through ``send`` here, or
    holds ``lock``; everything else is the real socket.
    """

    def __init__(self, sock):
        self.raw = sock  # The real socket, for writers that already hold ``lock``.
        self.lock = threading.RLock()
        self._whole = threading.Condition(self.lock)
        # A frame of ours is half written (a non-blocking write took part of it): until the rest
        # goes, nobody else may write, or a pong would land inside it.
        self.partial = False
        self.broken = False  # Aborted: nothing will finish a half-written frame.
        # Set once the poller serves the socket (``Connection.serve_without_waiting``): the
        # reader's writes then go through the connection like ours, and never wait.
        self.defer = None

    def replace(self, sock):
        """Use ``sock`` (a duplicate of the socket) from now on; the caller holds ``lock``."""
        self.raw = sock
        if self.broken:  # Aborted while the old one was being replaced.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def set_partial(self, partial):
        """Record whether a frame is half written; the caller holds ``lock``."""
        was, self.partial = self.partial, partial
        if was and not partial:  # Only then can anyone be waiting (``send`` waits on it).
            self._whole.notify_all()

    def send(self, data):
        """Send all of ``data`` before anyone else may write (the reader's pings, pongs, closes).

        Once the poller serves the socket, this never waits (its threads serve every socket):
        the frame goes out like one of ours, now if the socket takes it, else through the
        connection's backlog and writer thread. Before that (the greeting), and in the writer
        thread itself, it waits at most ``SEND_WAIT`` seconds for our writer: a client whose
        window stays shut would otherwise hold the thread forever; it is then treated as gone.
        """
        if self.defer is not None and not getattr(_writer, "active", False):
            self.defer(data)
            return len(data)
        deadline = time.monotonic() + SEND_WAIT
        if not self.lock.acquire(timeout=SEND_WAIT):
            raise TimeoutError("the socket's writer has been stuck for too long")
        try:
            while self.partial and not self.broken:
                if time.monotonic() > deadline:
                    raise TimeoutError("a frame has been half written for too long")
                self._whole.wait(0.5)  # The timeout only re-checks ``broken`` and the deadline.
            self.raw.sendall(data)
        finally:
            self.lock.release()
        return len(data)

    def close(self):
        """Wake a writer blocked on the socket, then close it when nobody is writing."""
        with contextlib.suppress(OSError):
            self.raw.shutdown(socket.SHUT_RDWR)
        with self.lock:
            self.raw.close()

    def __getattr__(self, name):
        return getattr(self.raw, name)


def encode_frame(text):
    """A complete WebSocket text frame for ``text``: built once, written to every recipient.

    Unmasked (server to client) and uncompressed, which RFC 7692 allows even when permessage-
    deflate was negotiated: compressing once per recipient cost more than it saved on a LAN.
    """
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(text, fin=True))


def _always_sent(frame):
    """The rest of a half-written frame (or the stream would be corrupt), or a reader's frame."""
    return isinstance(frame, memoryview | _ControlBytes)


def _coalesce(frames):
    """Whole frames joined into one buffer: one write (one system call) for all of them.

    A group commit queues several messages to each socket at once. The rest of a half-written
    frame (a memoryview) stays first and alone: it must go out whatever the connection's state;
    so must a reader's frame, and a batch holding one is left as it is (pongs are rare).
    """
    head = 1 if frames and isinstance(frames[0], memoryview) else 0
    if len(frames) - head < 2 or any(isinstance(frame, _ControlBytes) for frame in frames):
        return frames
    return [*frames[:head], b"".join(frames[head:])]


class Connection:
    """One client socket: frames are written at once when the socket takes them, else queued.

    A sender first tries a non-blocking write from its own thread (the common case: the socket's
    buffer has room, no thread wakes up). Whatever would block goes to a bounded backlog that one
    writer thread, started when it is needed and ended after ``WRITER_IDLE`` seconds without
    work, drains in order. A client whose backlog overflows is cut off and recovers by reconnecting.
    """

    def __init__(self, ws, user_id, name, queue_size, locale=None):
        self.user_id = user_id
        self.name = name
        # The user's language, for errors told outside the socket's request (poller, committer).
        self.locale = locale
        ws.sock = self._sock = SerializedSocket(ws.sock)
        self._ws = ws
        # wsproto's connection, which the handshake created: its state says whether a close
        # frame went (read once per frame, so not through ``ws.ws.state``'s extra property).
        self._protocol = ws.ws.connection
        self.current = None  # Key of the room that plain-text frames go to.
        # Messages up to this id were in the database when the socket joined: it has them already.
        self.floor = 0
        self.last_post = None  # The newest message it queued for the committer (handlers.py).
        self._limit = queue_size
        # Guards the backlog and the flags below. Held during non-blocking writes (they never
        # wait, and the lock is this socket's alone), never during one that may block.
        self._mutex = threading.Lock()
        self._backlog = collections.deque()  # frames (and _Close/_STOP) waiting for the writer
        self._writing = False  # the writer thread is writing to the socket right now
        self._aborted = False
        self._closing = False  # a close was requested: nothing more is sent
        self._closed = False  # close() ran: no writer may start any more
        self._wake = threading.Event()
        self._writer = None

    def send(self, payload):
        """Send ``payload`` (str, or bytes from ``encode_frame``) without ever blocking.

        Under ``Hub.ordered()`` the frame is only queued: the lock's holder writes it once it has
        let go of the lock (no socket I/O under a shared lock, not even a non-blocking one).
        """
        frame = payload if isinstance(payload, bytes) else encode_frame(payload)
        later = _deferred.connections
        with self._mutex:
            if self._aborted or self._closing:
                return False
            if later is not None:
                # An empty backlog is nobody's to write yet: ours, once the lock is free. A full
                # one already has a writer (a section's flush, or the writer thread) that will
                # take this frame with the rest.
                if not self._backlog and not self._writing:
                    later.append(self)
                return self._enqueue(frame, wake=False)
            if self._writing or self._backlog:
                return self._enqueue(frame)
            self._write_locked([frame])
            return not self._aborted

    def serve_without_waiting(self):
        """From now on the reader (a poller thread) never waits to write: see ``_send_control``."""
        self._sock.defer = self._send_control

    def _send_control(self, data):
        """Send a frame of the reader's like one of ours: now, or through the backlog.

        Even while closing (a close reply must go). A client that never reads and keeps sending
        pings fills its backlog with pongs and is cut off like any client too far behind.
        """
        frame = _ControlBytes(data)
        with self._mutex:
            if self._aborted:
                return
            if self._writing or self._backlog:
                self._enqueue(frame)
                return
            self._write_locked([frame])

    def flush(self):
        """Write what is queued, as far as the socket takes it without waiting."""
        with self._mutex:
            if self._writing or not self._backlog:
                return  # The writer thread has it, or there is nothing to write.
            frames = []
            while self._backlog and isinstance(self._backlog[0], _FRAME_TYPES):
                frames.append(self._backlog.popleft())
            if frames:
                self._write_locked(frames)
            if self._backlog:
                self._kick()  # What the socket did not take, or a close request.

    def _write_locked(self, frames):
        """Write ``frames`` as far as the socket takes them; the rest goes back to the backlog.

        We hold the mutex: it is this connection's alone, and a write that would block is not
        made (the writer thread finishes it), so holding it costs nobody else a wait. One lock
        and one system call per frame: this is the fan-out's inner loop.
        """
        if len(frames) > 1:
            frames = _coalesce(frames)
        for position, frame in enumerate(frames):
            sent = self._write_now(frame)
            if self._aborted:
                return
            if sent < len(frame):
                # The rest of a half-written frame must go whatever the state (a memoryview);
                # an unwritten frame of ours stays bytes, dropped if a close frame goes first.
                head = frame if sent == 0 else memoryview(frame)[sent:]
                # Ahead of anything queued meanwhile: frames keep their order.
                self._backlog.extendleft(reversed([head, *frames[position + 1 :]]))
                self._kick()
                return

    def _write_now(self, frame):
        """Write what the socket takes without waiting; return how many bytes went."""
        sock = self._sock
        lock = sock.lock
        if not lock.acquire(blocking=False):
            return 0  # The reader is answering a ping: the writer sends this right after.
        try:
            # Plain bytes are one of our frames (not a reader's, not the rest of a half-written
            # one): dropped once closing, as frames after the close frame must be.
            if type(frame) is bytes and self._protocol.state is not _OPEN:
                return len(frame)
            sent = sock.raw.send(frame, _DONTWAIT)
            if sent != len(frame) or sock.partial:
                # The rest of a half-written frame (a memoryview) is partial until all of it went.
                sock.set_partial(sent < len(frame) and (sent > 0 or type(frame) is memoryview))
            return sent
        except BlockingIOError:
            return 0
        except (OSError, ValueError):  # ValueError: a TLS socket refuses flags.
            self._abort_locked()
            return len(frame)
        finally:
            lock.release()

    def _enqueue(self, item, wake=True):
        """Queue ``item``, or cut the client off if it is too far behind (we hold the mutex)."""
        if len(self._backlog) >= self._limit:
            log.warning("cutting off a slow client of user %s", self.user_id)
            self._abort_locked()
            return False
        self._backlog.append(item)
        if wake:
            self._kick()
        return True

    def _kick(self):
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
                log.error("no thread left to write to a client of user %s", self.user_id)
                self._abort_locked()
                return
            self._writer = writer
        self._wake.set()

    def abort(self):
        """Drop the connection now, without writing: wakes up its blocked reader and writer."""
        with self._mutex:
            self._abort_locked()

    def _abort_locked(self):
        self._aborted = True
        self._sock.broken = True
        self._backlog.clear()  # Release the memory at once: nobody will read it.
        self._wake.set()
        with contextlib.suppress(OSError):  # Already closed: nothing left to wake.
            self._sock.raw.shutdown(socket.SHUT_RDWR)

    def close_with(self, code, reason):
        """Send what is queued, then a close frame with ``code``, then hang up."""
        with self._mutex:
            if self._aborted or self._closing:
                return
            self._closing = True
            self._backlog.append(_Close(code, reason))  # Past the limit too: it must go out.
            self._kick()

    def close(self, timeout=5.0):
        """Let the writer flush what is queued, then stop it."""
        with self._mutex:
            self._closing = True  # A broadcast still holding this socket queues nothing more.
            self._closed = True
            if self._writer is not None and not self._aborted:
                self._backlog.append(_STOP)
                self._wake.set()
            writer = self._writer
        if writer is not None:
            writer.join(timeout)
            if writer.is_alive():
                # The peer stopped reading while we flushed: stop waiting for it.
                self.abort()
                writer.join(timeout)
        if self._ws.connected and not self._aborted:
            # The handler is ending on its own (a greeting that failed): say so ourselves, rather
            # than leave Flask-Sock's close to gunicorn's graceful close on its main thread.
            errors = (ConnectionClosed, OSError, LocalProtocolError)
            with contextlib.suppress(*errors):
                self._ws.close(CLOSE_TRY_AGAIN, "Try again later")
        # The closing handshake is over (or failed): the server closes TCP first (RFC 6455
        # 7.1.1), instead of leaving the client to wait for its close timeout. This thread is
        # the socket's reader: if our close frame is unanswered yet, read until it is.
        self._ws.thread.linger(CLOSE_TIMEOUT)
        self.abort()

    def _write_loop(self):
        """Drain the backlog in order, blocking on the socket as long as it takes."""
        _writer.active = True  # This thread may wait on the socket (SerializedSocket.send).
        while True:
            woken = self._wake.wait(WRITER_IDLE)
            self._wake.clear()  # Before looking: a frame queued from now on sets it again.
            if not woken:
                with self._mutex:
                    if not self._backlog and not self._aborted:
                        self._writer = None  # The next backlog starts another (_kick).
                        return
            while True:
                with self._mutex:
                    if self._aborted:
                        return
                    if not self._backlog:
                        break  # Whoever queues more kicks us, or flushes it itself.
                    item = self._backlog.popleft()
                    self._writing = True
                if item is _STOP:
                    return
                if isinstance(item, _Close):
                    self._send_close(item)
                    return
                written = self._write_blocking(item)
                with self._mutex:
                    self._writing = False
                if not written:
                    return

    def _write_blocking(self, frame):
        """Write all of ``frame``; False if the socket failed (it is then aborted)."""
        sock = self._sock
        try:
            # Held across the write: a pong or close frame from the reader cannot cut in. The rest
            # of a half-written frame goes whatever the state, or the stream would be corrupt.
            with sock.lock:
                if _always_sent(frame) or self._protocol.state is _OPEN:
                    sock.raw.sendall(frame)
                sock.set_partial(False)
        except (OSError, ValueError):
            self.abort()
            return False
        return True

    def _send_close(self, request):
        """Send a close frame, give the peer a moment to answer it, then hang up."""
        errors = (ConnectionClosed, OSError, LocalProtocolError)
        with contextlib.suppress(*errors), self._sock.lock:
            self._ws.close(request.code, request.reason)
        # Hanging up at once would reset a peer that is still sending, and a reset makes it drop
        # the close frame unread; the reader ends when the peer's close frame arrives.
        self._ws.thread.join(CLOSE_TIMEOUT)
        self.abort()


def _unlist(roster, name, user_id):
    """Remove ``user_id`` from a sorted roster, where ``name`` should have placed them."""
    position = bisect.bisect_left(roster, (name.casefold(), user_id))
    if position < len(roster) and roster[position][1] == user_id:
        del roster[position]
        return
    # Listed under another name (a bug elsewhere): never remove someone else instead.
    log.error("user %s was not in a roster under %r", user_id, name)
    roster[:] = [entry for entry in roster if entry[1] != user_id]


class Hub:
    """A thread-safe registry of this worker's connections, and fan-out through a backplane.

    Room membership lives in the database; the hub mirrors it for users who are online here, so
    that a broadcast reaches exactly the sockets of a room's members. Every fan-out is an *event*
    published on the backplane, which delivers it to the hub of every worker (``deliver``).
    """

    def __init__(self, backplane=None, presence_interval=0.25):
        self._backplane = backplane or MemoryBackplane()
        self._backplane.bind(self)
        # Arrivals and departures, announced in batches (``presence.py``).
        self.presence = PresenceBatcher(self, presence_interval)
        # Guards the registry only; nothing under it does I/O.
        self._lock = threading.Lock()
        # Makes "persist, then publish" one step, so every client receives messages in id order
        # and a joining client's history meets its live frames with no gap and no duplicate.
        self._order = threading.Lock()
        # Serializes presence writes, so that an older snapshot never overwrites a newer one.
        self.presence_lock = threading.Lock()
        self._sockets = {}  # user id -> set of Connection
        self._names = {}  # user id -> display name
        self._people = {}  # user id -> {"id", "name"} for online lists (replaced, not changed)
        self._rooms = {}  # user id -> {room id: room key}, for users online here
        self._members = {}  # room id -> set of user ids online here in it
        # room id -> [(casefolded name, user id)] of those members, kept sorted as they come and
        # go: a greeting lists a room's people without sorting them (a storm greets thousands).
        self._rosters = {}
        # room id -> tuple of Connection, so deliveries read it without the lock; dropped on
        # change and rebuilt by the next delivery (``_fanout_of``), not once per arrival.
        self._fanout = {}
        self._typing = {}  # (user id, room id) -> when their last typing frame was relayed

    # ---- Backplane -----------------------------------------------------------------------------

    def start(self):
        """Start the backplane and the presence batcher (once; the first socket calls this)."""
        self._backplane.start()
        self.presence.start()

    def stop(self):
        """Stop the backplane's and the batcher's threads (tests make many apps in one process)."""
        self.presence.stop()
        self._backplane.stop()

    def generation(self):
        """Changes whenever the backplane was lost: events may have been missed since."""
        return self._backplane.generation

    def ready(self, wait=0):
        """True when sockets may join: the backplane delivers events to this worker."""
        return self._backplane.ready(wait)

    @contextlib.contextmanager
    def ordered(self):
        """A context in which to persist and publish, or to read history and attach.

        With several workers this also holds the backplane's cross-process lock.
        """
        if _deferred.connections is not None:
            yield  # Already inside (a handler that calls another): one lock, one flush.
            return
        _deferred.connections = touched = []
        try:
            with self._order, self._backplane.exclusive():
                yield
        finally:
            _deferred.connections = None
            # The lock is free: now write what was queued under it, each socket in order.
            for conn in touched:
                conn.flush()

    # ---- Registry ------------------------------------------------------------------------------

    def attach(self, conn, rooms):
        """Register ``conn`` in ``rooms`` ({id: key}); True if its user was online nowhere."""
        user_id = conn.user_id
        with self._lock:
            sockets = self._sockets.setdefault(user_id, set())
            first = not sockets
            sockets.add(conn)
            self._set_name(user_id, conn.name)
            # Merged, not replaced: a room this greeting did not read (a join or leave still on
            # its way from another worker) stays listed until its own event, so that the user's
            # rooms, the members and the rosters always agree.
            self._rooms.setdefault(user_id, {}).update(rooms)
            for room_id in rooms:
                self._add_member(room_id, user_id)
                self._refresh(room_id)
        self._publish_presence(user_id)
        return first and not self._online_elsewhere(user_id)

    def detach(self, conn):
        """Unregister ``conn``; return ``(last, rooms)``: its user's last socket anywhere? rooms?"""
        known, last_here, rooms = self._remove(conn)
        if not known:
            return False, {}
        self._publish_presence(conn.user_id)
        return last_here and not self._online_elsewhere(conn.user_id), rooms

    def forget(self, conn):
        """Unregister ``conn`` while the backplane may be down; the rooms it left if it was its
        user's last socket here (for the presence batch, which retries until Redis is back)."""
        _known, last_here, rooms = self._remove(conn)
        with contextlib.suppress(BackplaneError):
            self._publish_presence(conn.user_id)
        return rooms if last_here else {}

    def _remove(self, conn):
        """Drop ``conn`` from the registry: ``(was it there, was it its user's last, rooms)``."""
        user_id = conn.user_id
        with self._lock:
            sockets = self._sockets.get(user_id, set())
            if conn not in sockets:
                return False, False, {}
            sockets.discard(conn)
            rooms = self._rooms[user_id]
            if not sockets:
                for room_id in rooms:
                    self._drop_member(room_id, user_id)
                    self._typing.pop((user_id, room_id), None)
                del self._sockets[user_id], self._rooms[user_id]
                del self._names[user_id], self._people[user_id]
            for room_id in rooms:
                self._refresh(room_id)
        return True, not sockets, rooms

    # Membership and name changes apply here at once, then go to every worker (here again, a
    # no-op): the caller's next check already sees them (no post lands after a leave).

    def subscribe(self, user_id, room_id, key):
        """Add a user's sockets, on every worker, to a room they joined."""
        event = {"kind": "subscribe", "user": user_id, "room": room_id, "key": key}
        self._publish_and_apply(event)

    def unsubscribe(self, user_id, room_id, key, fallback):
        """Take a user's sockets out of a room they left; those typing in it go to ``fallback``."""
        event = {"kind": "unsubscribe", "user": user_id, "room": room_id, "key": key}
        self._publish_and_apply({**event, "fallback": fallback})

    def _publish_and_apply(self, event):
        """Apply ``event`` on this worker now, then publish it to every worker."""
        if self._backplane.shared:
            self.deliver(event, None)
        self._backplane.publish(event)

    def _subscribe(self, user_id, room_id, key):
        with self._lock:
            if user_id not in self._sockets:
                return
            self._rooms[user_id][room_id] = key
            self._add_member(room_id, user_id)
            self._refresh(room_id)
            name = self._names[user_id]
        self._publish_presence(user_id)
        # Every worker hosting the user announces it once its own presence is written: a batch
        # built before another worker applied the change would state it wrongly for good.
        self.presence.note(room_id, key, user_id, name)

    def _unsubscribe(self, user_id, room_id, key, fallback):
        with self._lock:
            if user_id not in self._sockets:
                return
            self._rooms[user_id].pop(room_id, None)
            self._drop_member(room_id, user_id)
            self._typing.pop((user_id, room_id), None)
            self._refresh(room_id)
            for conn in self._sockets[user_id]:
                if conn.current == key:
                    conn.current = fallback
            name = self._names[user_id]
        self._publish_presence(user_id)
        self.presence.note(room_id, key, user_id, name)  # As in _subscribe.

    def rename(self, user_id, name):
        """Give a user's sockets, on every worker, a new display name."""
        self._publish_and_apply({"kind": "rename", "user": user_id, "name": name})

    def _rename(self, user_id, name):
        with self._lock:
            if user_id not in self._sockets:
                return
            self._set_name(user_id, name)
            for conn in self._sockets[user_id]:
                conn.name = name
            rooms = dict(self._rooms[user_id])
        self._publish_presence(user_id)
        for room_id, key in rooms.items():  # As in _subscribe; their own tabs need it too.
            self.presence.note(room_id, key, user_id, name, echo=True)

    def rooms_of(self, user_id):
        """``{room id: key}`` of an online user's rooms (empty when they are offline)."""
        return dict(self.everyone().get(user_id, {}).get("rooms", {}))

    def _refresh(self, room_id):
        """A room's sockets changed: drop its fan-out tuple; the caller holds the lock."""
        self._fanout.pop(room_id, None)
        if not self._members.get(room_id):
            self._members.pop(room_id, None)
            self._rosters.pop(room_id, None)

    def _fanout_of(self, room_id):
        """The sockets in a room, as a tuple that stays valid once the registry changes."""
        fanout = self._fanout.get(room_id)
        if fanout is None:
            with self._lock:
                fanout = self._fanout.get(room_id)
                if fanout is None:
                    members = self._members.get(room_id, ())
                    fanout = tuple(c for uid in members for c in self._sockets[uid])
                    if members:  # An empty room keeps no entry (rooms come and go).
                        self._fanout[room_id] = fanout
        return fanout

    def _add_member(self, room_id, user_id):
        """Count a user as online in a room, in its sorted roster too; the caller holds the lock."""
        members = self._members.setdefault(room_id, set())
        if user_id not in members:
            members.add(user_id)
            key = (self._names[user_id].casefold(), user_id)
            bisect.insort(self._rosters.setdefault(room_id, []), key)

    def _drop_member(self, room_id, user_id):
        """Undo ``_add_member`` (nothing if the user was not there); the caller holds the lock."""
        members = self._members.get(room_id, set())
        if user_id in members:
            members.discard(user_id)
            _unlist(self._rosters[room_id], self._names[user_id], user_id)

    def _set_name(self, user_id, name):
        """Record a user's display name, moving them in their rooms' rosters; we hold the lock."""
        old = self._names.get(user_id)
        if old == name:
            return
        if old is not None:
            for room_id in self._rooms[user_id]:
                if user_id in self._members.get(room_id, ()):
                    roster = self._rosters[room_id]
                    _unlist(roster, old, user_id)
                    bisect.insort(roster, (name.casefold(), user_id))
        self._names[user_id] = name
        self._people[user_id] = {"id": user_id, "name": name}

    def room_id(self, user_id, key):
        """The id of the room ``key`` if the user is in it, else None."""
        with self._lock:
            rooms = self._rooms.get(user_id, {})
            return next((room_id for room_id, k in rooms.items() if k == key), None)

    # ---- Presence ------------------------------------------------------------------------------

    def local_presence(self):
        """``{user id: {"name", "rooms", "sockets"}}`` for the users online on this worker."""
        with self._lock:
            return {uid: self._entry(uid) for uid in self._sockets}

    def _entry(self, user_id):
        """One user's presence entry; the caller holds the lock."""
        rooms = {str(room_id): key for room_id, key in self._rooms[user_id].items()}
        sockets = len(self._sockets[user_id])
        return {"name": self._names[user_id], "rooms": rooms, "sockets": sockets}

    def _publish_presence(self, user_id):
        """Tell the backplane where a user is online now (a no-op in one process)."""
        if not self._backplane.shared:
            return
        with self.presence_lock:
            with self._lock:
                entry = self._entry(user_id) if user_id in self._sockets else None
            self._backplane.set_presence(user_id, entry)

    def _online_elsewhere(self, user_id):
        """True if another worker has a socket of this user."""
        if not self._backplane.shared:
            return False
        return user_id in self._backplane.everyone(exclude_self=True)

    def everyone(self):
        """``{user id: {"name", "rooms": {room id: key}, "sockets"}}`` for every worker."""
        if self._backplane.shared:
            return self._backplane.everyone()
        with self._lock:
            return {
                uid: {"name": self._names[uid], "rooms": dict(self._rooms[uid]), "sockets": len(s)}
                for uid, s in self._sockets.items()
            }

    def online_in(self, room_ids):
        """``{room id: [{"id", "name"}]}``: who is online in each room, sorted by name.

        The dicts may be shared with other callers: read them, do not change them.
        """
        if not self._backplane.shared:
            # The rooms' sorted rosters directly: a greeting must not copy everyone's presence,
            # nor build and sort a dict per person (a storm of 5,000 greets each against
            # thousands).
            with self._lock:
                return {
                    room_id: [self._people[uid] for _, uid in self._rosters.get(room_id, ())]
                    for room_id in room_ids
                }
        wanted = {room_id: [] for room_id in room_ids}
        for uid, person in self.everyone().items():
            for room_id in person["rooms"]:
                if room_id in wanted:
                    wanted[room_id].append({"id": uid, "name": person["name"]})
        for people in wanted.values():
            people.sort(key=lambda person: (person["name"].casefold(), person["id"]))
        return wanted

    def online(self, room_id):
        """``[{"id", "name"}]`` of the users online in one room, sorted by name."""
        return self.online_in([room_id])[room_id]

    def share_a_room(self, user_id, other_id):
        """True if both users are online and in at least one common room."""
        with self._lock:
            mine = set(self._rooms.get(user_id, {}))
        theirs = self.everyone().get(other_id, {"rooms": {}})["rooms"]
        return not mine.isdisjoint(theirs)

    def sockets_of(self, user_id):
        """How many sockets a user has open, on every worker."""
        if self._backplane.shared:
            return self._backplane.everyone().get(user_id, {"sockets": 0})["sockets"]
        with self._lock:
            return len(self._sockets.get(user_id, ()))

    def allow_typing(self, user_id, room_id, interval):
        """True at most once per ``interval`` seconds per user and room: typing is throttled."""
        now = time.monotonic()
        with self._lock:
            last = self._typing.get((user_id, room_id))
            if last is not None and now - last < interval:
                return False
            self._typing[(user_id, room_id)] = now
        return True

    # ---- Fan-out: publish an event; every worker's hub delivers it ------------------------------

    def broadcast(self, room_id, payload, exclude_user=None):
        """Send ``payload`` (already encoded) to every socket in a room, but ``exclude_user``'s.

        Not for chat messages: ``broadcast_messages`` skips those a socket has in its history.
        """
        event = {"kind": "room", "room": room_id, "exclude": exclude_user}
        self._backplane.publish(event, payload)

    def broadcast_messages(self, room_id, messages):
        """Send several chat messages of one room (``[(id, payload)]``, in id order) as one event.

        A group commit stores several messages at once: each socket of the room then gets them
        as one write, queued once, instead of once per message (a socket that joined after some
        of them, and so has them in its history, gets the others one by one).
        """
        event = {
            "kind": "messages",
            "room": room_id,
            "ids": [message_id for message_id, _ in messages],
        }
        # Encoded JSON never holds a raw newline: it separates the messages on the backplane.
        self._backplane.publish(event, "\n".join(payload for _, payload in messages))

    def send_to_user(self, user_id, payload):
        """Send ``payload`` to every socket of one user."""
        self._backplane.publish({"kind": "user", "user": user_id}, payload)

    def send_to_all(self, payload):
        """Send ``payload`` to every socket."""
        self._backplane.publish({"kind": "all"}, payload)

    def close_user(self, user_id, code, reason):
        """Close every socket of one user, on every worker, with an application close code."""
        self._backplane.publish({"kind": "close", "user": user_id, "code": code, "reason": reason})

    def close_all(self, code, reason):
        """Close every socket of *this worker* (shutdown, or a lost backplane)."""
        for conn in self._snapshot():
            conn.close_with(code, reason)

    def deliver(self, event, payload):
        """Carry out one published event on this worker's sockets; never waits on any of them."""
        kind = event["kind"]
        if kind == "messages":
            self._deliver_messages(event["room"], event["ids"], payload.split("\n"))
            return
        if payload is not None:
            payload = encode_frame(payload)  # Framed once, whatever the number of recipients.
        if kind == "room":
            exclude = event["exclude"]
            for conn in self._fanout_of(event["room"]):
                if conn.user_id != exclude:
                    conn.send(payload)
        elif kind == "user":
            for conn in self._snapshot(event["user"]):
                conn.send(payload)
        elif kind == "all":
            for conn in self._snapshot():
                conn.send(payload)
        elif kind == "close":
            for conn in self._snapshot(event["user"]):
                conn.close_with(event["code"], event["reason"])
        elif kind == "subscribe":
            self._subscribe(event["user"], event["room"], event["key"])
        elif kind == "rename":
            self._rename(event["user"], event["name"])
        elif kind == "unsubscribe":
            self._unsubscribe(event["user"], event["room"], event["key"], event["fallback"])
        else:
            raise KeyError(f"unknown event kind {kind!r}")

    def _deliver_messages(self, room_id, ids, texts):
        """Queue a batch of a room's messages to each of its sockets, in one piece if it can."""
        if len(ids) != len(texts):
            raise KeyError("a messages event needs one id per message")
        frames = [encode_frame(text) for text in texts]
        whole = b"".join(frames)
        for conn in self._fanout_of(room_id):
            if conn.floor < ids[0]:
                conn.send(whole)
            else:  # It joined after some of them: only the ones it does not have.
                for message_id, frame in zip(ids, frames, strict=True):
                    if message_id > conn.floor:
                        conn.send(frame)

    def _snapshot(self, user_id=None):
        """The sockets of one user, or of everyone, copied under the lock."""
        with self._lock:
            if user_id is not None:
                return tuple(self._sockets.get(user_id, ()))
            return [conn for group in self._sockets.values() for conn in group]
