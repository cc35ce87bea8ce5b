"""The socket transport alone: frames, ``Connection``, ``FrameReader`` and the ``Poller``.

No Flask app and no HTTP server: the server's end of a ``socket.socketpair()`` is driven by the
code under test, and the peer's end by a wsproto client connection, which frames what the peer
sends and parses what the server wrote. Tests wait on events and frames, with a deadline;
the only sleeps let the clock reach a deadline the code set, or let a waiter block first.
"""

import collections
import contextlib
import itertools
import select
import socket
import threading
import time
import zlib

import pytest
from wsproto.connection import Connection as WebSocket
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from realtime.session import Session
from realtime.transport import connection, frames, poller, reader
from realtime.transport.connection import Connection
from realtime.transport.frames import Kind
from realtime.transport.poller import Poller
from realtime.transport.reader import ConnectionClosed

TIMEOUT = 5.0  # Seconds any expected frame, wake-up or thread exit may take.
BIG = "x" * (2 << 20)  # 2 MB: far more than a socket pair's buffers (about 200 KB each way).
_user_ids = itertools.count(1)


class Peer:
    """The client's end of the pair: frames what it sends, parses what the server wrote."""

    def __init__(self, sock):
        self.sock = sock
        sock.settimeout(TIMEOUT)
        self.ws = WebSocket(ConnectionType.CLIENT)
        self._events = collections.deque()
        self._parts = []

    def send(self, *events):
        self.sock.sendall(b"".join(self.ws.send(event) for event in events))

    def ready(self):
        """True if the server wrote something that is not read yet."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def next(self):
        """The next whole frame, as a tuple (a message joined from its pieces); None at EOF."""
        while True:
            while self._events:
                if (frame := self._whole(self._events.popleft())) is not None:
                    return frame
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                pytest.fail(f"no frame from the server within {TIMEOUT} s")
            if not data:
                return None
            self.ws.receive_data(data)
            self._events.extend(self.ws.events())

    def until_eof(self):
        """The whole frames left before the server hangs up."""
        return list(iter(self.next, None))

    def _whole(self, event):
        if isinstance(event, TextMessage | BytesMessage):
            self._parts.append(event.data)
            if not event.message_finished:
                return None
            parts, self._parts = self._parts, []
            kind = "text" if isinstance(event, TextMessage) else "bytes"
            return (kind, parts[0][:0].join(parts))
        if isinstance(event, Ping):
            return ("ping", event.payload)
        if isinstance(event, Pong):
            return ("pong", event.payload)
        return ("close", event.code, event.reason)


@pytest.fixture
def make_pair():
    """``make(queue_size=64, **options)``: a server ``Connection`` and its ``Peer``."""
    made = []

    def make(queue_size=64, **options):
        ours, theirs = socket.socketpair()
        conn = Connection(ours, next(_user_ids), "alice", queue_size, **options)
        made.append((conn, ours, theirs))
        return conn, Peer(theirs)

    yield make
    for conn, ours, theirs in made:
        conn.abort()
        ours.close()
        theirs.close()


def readable(conn):
    """Wait until the peer's bytes reached the server's end."""
    assert select.select([conn], [], [], TIMEOUT)[0], "nothing from the peer"


def wait_until(when):
    """Let the clock reach a deadline the code computed (a ping or a close timeout due)."""
    time.sleep(max(0.0, when - time.monotonic()))


def writers(conn):
    """The live writer threads of ``conn``."""
    name = f"chat-writer-{conn.user_id}"
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def rsv1_frame(text):
    """A masked text frame compressed with permessage-deflate (RSV1 set), as a client sends."""
    deflate = zlib.compressobj(wbits=-15)
    payload = (deflate.compress(text.encode()) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | 0x40 | 0x1, 0x80 | len(payload)]) + mask + masked


# ---- frames.coalesce -----------------------------------------------------------------------------


def test_coalesce_keeps_rest_first_and_control_in_place_and_joins_message_runs():
    """A REST is never joined, a control frame keeps its place, runs of messages become one."""
    rest = frames.rest(b"..tail", 2)
    ping = frames.control(b"ping")
    one, two, three, four = (frames.message(text) for text in ("1", "2", "3", "4"))
    out = frames.coalesce([rest, one, two, ping, three, four])
    assert [frame.kind for frame in out] == [Kind.REST, Kind.MESSAGE, Kind.CONTROL, Kind.MESSAGE]
    assert bytes(out[0].data) == b"tail"
    assert out[1].data == one.data + two.data
    assert out[2] is ping
    assert out[3].data == three.data + four.data


def test_coalesce_leaves_a_lone_message_as_it_is():
    """A single message is not copied into a new buffer."""
    alone = frames.message("alone")
    assert frames.coalesce([alone]) == [alone]
    assert frames.coalesce([alone])[0] is alone


# ---- Connection: writes --------------------------------------------------------------------------


def test_a_direct_write_goes_out_at_once_without_a_writer(make_pair):
    """A frame the socket takes is written by the sender itself, before send() returns."""
    conn, peer = make_pair()
    assert conn.send(frames.message("héllo"))
    assert peer.ready()
    assert writers(conn) == []
    assert peer.next() == ("text", "héllo")


def test_a_frame_bigger_than_the_buffer_is_finished_by_the_writer_in_order(make_pair):
    """The rest of a 2 MB frame goes first; a control frame and a message follow, unmixed."""
    conn, peer = make_pair()
    assert conn.send(frames.message(BIG))
    assert len(writers(conn)) == 1
    assert conn.send_control(lambda state: Ping(b"p"))
    assert conn.send(frames.message("after"))
    assert peer.next() == ("text", BIG)
    assert peer.next() == ("ping", b"p")
    assert peer.next() == ("text", "after")


def test_the_writer_ends_when_idle_and_the_next_backlog_starts_another(make_pair, monkeypatch):
    """The writer thread lives only while there is a backlog (plus WRITER_IDLE)."""
    monkeypatch.setattr(connection, "WRITER_IDLE", 0.05)
    conn, peer = make_pair()
    assert conn.send(frames.message(BIG))
    [first] = writers(conn)
    assert peer.next() == ("text", BIG)
    first.join(TIMEOUT)
    assert not first.is_alive()
    assert conn.send(frames.message(BIG))
    [second] = writers(conn)
    assert second is not first
    assert peer.next() == ("text", BIG)


def test_a_backlogged_message_is_dropped_once_the_peer_closed_and_the_reply_goes(make_pair):
    """After the peer's close frame, only the rest of a begun frame and our close reply go."""
    conn, peer = make_pair()
    assert conn.send(frames.message(BIG))
    assert conn.send(frames.message("dropped"))
    peer.send(CloseConnection(1000, "bye"))
    readable(conn)
    with pytest.raises(ConnectionClosed):
        conn.reader.receive_nowait()
    assert peer.next() == ("text", BIG)
    assert peer.next() == ("close", 1000, "bye")


def test_a_client_whose_backlog_overflows_is_cut_off_without_blocking(make_pair):
    """Past ``queue_size`` queued frames the connection is aborted; senders never wait."""
    conn, peer = make_pair(queue_size=2)
    assert conn.send(frames.message(BIG))
    results, done = [], threading.Event()

    def flood():
        results.extend(conn.send(frames.message(f"m{n}")) for n in range(5))
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(TIMEOUT), "a sender blocked on a slow client"
    assert conn.aborted
    assert False in results
    assert not any(results[results.index(False) :])
    assert peer.until_eof() == []  # Hung up mid-frame: not one whole frame reached the peer.


def test_queue_writes_nothing_until_flush_which_keeps_the_order(make_pair):
    """What Hub.ordered does: queue under the lock (the first queuer flushes), flush after."""
    conn, peer = make_pair()
    assert conn.queue(frames.message("one")) is True
    assert conn.queue(frames.message("two")) is False  # Already someone's to flush.
    assert not peer.ready()
    conn.flush()
    assert peer.next() == ("text", "one")
    assert peer.next() == ("text", "two")


def test_frames_sent_while_held_go_after_the_greeting_in_order(make_pair):
    """What a greeting does: registered and held, it reads its hello while live frames come."""
    conn, peer = make_pair()
    conn.hold()
    assert conn.send(frames.message("live 1"))
    assert conn.queue(frames.message("live 2")) is False  # Held: nobody's to flush.
    conn.flush()
    assert not peer.ready()
    assert conn.release_held([frames.message("hello"), frames.message("replay")])
    assert [peer.next() for _ in range(4)] == [
        ("text", "hello"),
        ("text", "replay"),
        ("text", "live 1"),
        ("text", "live 2"),
    ]
    assert conn.send(frames.message("after"))  # Not held any more: written at once.
    assert peer.next() == ("text", "after")


def test_a_greeting_that_failed_drops_what_it_held_and_a_held_flood_is_cut_off(make_pair):
    conn, peer = make_pair(queue_size=2)
    conn.hold()
    conn.send(frames.message("live"))
    assert conn.release_held([], keep=False)
    assert conn.send(frames.message("error"))
    assert peer.next() == ("text", "error")
    conn.hold()
    assert [conn.send(frames.message(f"m{n}")) for n in range(3)] == [True, True, False]
    assert conn.aborted
    assert conn.cut_off


def test_a_flush_that_outgrows_the_buffer_stays_ahead_of_later_sends(make_pair):
    """What a flush leaves unwritten goes before anything sent afterwards."""
    conn, peer = make_pair()
    assert conn.queue(frames.message(BIG))
    conn.queue(frames.message("two"))
    conn.flush()
    assert conn.send(frames.message("three"))
    assert [peer.next() for _ in range(3)] == [("text", BIG), ("text", "two"), ("text", "three")]


def test_close_with_sends_the_backlog_then_the_close_and_hangs_up_on_the_answer(
    make_pair, monkeypatch
):
    """Queued frames first, then our close frame; the answer (not a timeout) ends it."""
    monkeypatch.setattr(connection, "CLOSE_TIMEOUT", 60.0)  # Only the answer can end it in time.
    conn, peer = make_pair()
    assert conn.send(frames.message(BIG))
    assert conn.send(frames.message("queued"))
    conn.close_with(4000, "bye")
    assert not conn.send(frames.message("late"))
    assert peer.next() == ("text", BIG)
    assert peer.next() == ("text", "queued")
    assert peer.next() == ("close", 4000, "bye")
    peer.send(CloseConnection(4000, "bye"))
    readable(conn)
    with pytest.raises(ConnectionClosed):
        conn.reader.receive_nowait()
    assert peer.until_eof() == []


def test_close_with_hangs_up_after_close_timeout_without_an_answer(make_pair, monkeypatch):
    """A peer that never answers our close frame is hung up on after CLOSE_TIMEOUT."""
    monkeypatch.setattr(connection, "CLOSE_TIMEOUT", 0.05)
    conn, peer = make_pair()
    conn.close_with(4000, "bye")
    assert peer.next() == ("close", 4000, "bye")
    assert peer.until_eof() == []


def test_close_finishes_the_backlog_says_try_again_and_hangs_up_on_the_answer(make_pair):
    """close() on an open socket: the backlog, then close 1013; the answer ends it."""
    conn, peer = make_pair()
    assert conn.send(frames.message(BIG))
    closing = threading.Thread(target=conn.close, daemon=True)
    closing.start()
    assert peer.next() == ("text", BIG)
    assert peer.next() == ("close", 1013, "Try again later")
    peer.send(CloseConnection(1013))
    closing.join(TIMEOUT)
    assert not closing.is_alive()
    assert peer.until_eof() == []


def test_close_sends_what_was_queued_but_not_flushed_yet(make_pair):
    """A frame queued under Hub.ordered() and not flushed yet still goes out on close()."""
    conn, peer = make_pair()
    assert conn.queue(frames.message("queued"))
    closing = threading.Thread(target=conn.close, daemon=True)
    closing.start()
    assert peer.next() == ("text", "queued")
    assert peer.next() == ("close", 1013, "Try again later")
    peer.send(CloseConnection(1013))
    closing.join(TIMEOUT)


# ---- FrameReader ---------------------------------------------------------------------------------


def test_receive_nowait_returns_a_whole_message_and_none_when_nothing_came(make_pair):
    """No bytes: None at once; a text frame: its text."""
    conn, peer = make_pair()
    assert conn.reader.receive_nowait() is None
    peer.send(TextMessage("hello"))
    readable(conn)
    assert conn.reader.receive_nowait() == "hello"
    assert conn.reader.receive_nowait() is None


def test_a_fragmented_message_comes_back_whole(make_pair):
    """Fragments read apart are returned as one message, once the last one came."""
    conn, peer = make_pair()
    peer.send(TextMessage("hel", message_finished=False))
    readable(conn)
    assert conn.reader.receive_nowait() is None
    peer.send(TextMessage("lo"))
    readable(conn)
    assert conn.reader.receive_nowait() == "hello"


def test_a_ping_is_answered_with_its_payload(make_pair):
    """The reader answers a ping with a pong carrying the same bytes."""
    conn, peer = make_pair()
    peer.send(Ping(b"are you there"))
    readable(conn)
    assert conn.reader.receive_nowait() is None
    assert peer.next() == ("pong", b"are you there")


def test_a_message_over_the_limit_gets_1009_and_nothing_after_it_is_returned(make_pair):
    """At the limit is fine; one byte over closes with 1009 and the rest is dropped."""
    conn, peer = make_pair(max_message_bytes=100)
    peer.send(TextMessage("y" * 100), TextMessage("x" * 101), TextMessage("after"))
    readable(conn)
    assert conn.reader.receive_nowait() == "y" * 100
    assert conn.reader.receive_nowait() is None  # Waiting for the answer to our close.
    assert peer.next() == ("close", 1009, "Message is too big")
    peer.send(CloseConnection(1009))
    readable(conn)
    with pytest.raises(ConnectionClosed):
        conn.reader.receive_nowait()


def test_a_compressed_frame_gets_1002_and_is_not_inflated(make_pair):
    """permessage-deflate was declined: an RSV1 frame is a protocol error, not a message."""
    conn, peer = make_pair()
    peer.sock.sendall(rsv1_frame("z" * 1000))
    readable(conn)
    with pytest.raises(ConnectionClosed) as closed:
        conn.reader.receive_nowait()
    assert closed.value.code == 1002
    frame = peer.next()
    assert frame[:2] == ("close", 1002)


def test_a_peer_that_answers_pings_is_pinged_again(make_pair):
    """A pong in time keeps the connection: the next ping goes when due."""
    conn, peer = make_pair(ping_interval=0.02)
    wait_until(conn.reader.next_due())
    assert conn.reader.receive_nowait() is None
    assert peer.next() == ("ping", b"")
    peer.send(Pong(b""))
    wait_until(conn.reader.next_due())
    assert conn.reader.receive_nowait() is None
    assert peer.next() == ("ping", b"")


def test_a_peer_that_misses_a_pong_is_given_up_with_1008_at_once(make_pair):
    """No pong by the next ping: close 1008 and ConnectionClosed in the same call, no wait."""
    conn, peer = make_pair(ping_interval=0.02)
    wait_until(conn.reader.next_due())
    assert conn.reader.receive_nowait() is None
    assert peer.next() == ("ping", b"")
    wait_until(conn.reader.next_due())
    with pytest.raises(ConnectionClosed) as closed:
        conn.reader.receive_nowait()
    assert closed.value.code == 1008
    assert peer.next() == ("close", 1008, "Ping/Pong timeout")
    assert conn.ended.is_set()


def test_the_peers_close_is_answered_and_ends_the_reader(make_pair):
    """A close frame from the peer is echoed back and raises ConnectionClosed with its code."""
    conn, peer = make_pair()
    peer.send(CloseConnection(1001, "going away"))
    readable(conn)
    with pytest.raises(ConnectionClosed) as closed:
        conn.reader.receive_nowait()
    assert (closed.value.code, closed.value.reason) == (1001, "going away")
    assert peer.next() == ("close", 1001, "going away")


def test_eof_without_a_close_frame_ends_the_reader(make_pair):
    """A peer that hangs up without a close frame: ConnectionClosed (1006)."""
    conn, peer = make_pair()
    peer.sock.shutdown(socket.SHUT_WR)
    readable(conn)
    with pytest.raises(ConnectionClosed) as closed:
        conn.reader.receive_nowait()
    assert closed.value.code == 1006


def test_after_our_close_receive_nowait_waits_at_most_close_timeout(make_pair, monkeypatch):
    """Until the deadline it drops what comes and returns None; then it gives up."""
    monkeypatch.setattr(reader, "CLOSE_TIMEOUT", 0.05)
    conn, peer = make_pair()
    assert conn.send_control(lambda state: CloseConnection(1000, "bye"))
    peer.send(TextMessage("late"))  # Sent before the peer read our close: dropped.
    readable(conn)
    assert conn.reader.receive_nowait() is None
    assert not conn.ended.is_set()
    wait_until(conn.reader.next_due())
    with pytest.raises(ConnectionClosed):
        conn.reader.receive_nowait()
    assert conn.ended.is_set()


def test_linger_stops_on_the_answer_to_our_close(make_pair):
    """linger(30) returns as soon as the peer's answer arrives, not after 30 s."""
    conn, peer = make_pair()
    assert conn.send_control(lambda state: CloseConnection(1000, "bye"))
    assert peer.next() == ("close", 1000, "bye")
    lingering = threading.Thread(target=conn.reader.linger, args=(30.0,), daemon=True)
    lingering.start()
    peer.send(CloseConnection(1000, "bye"))
    lingering.join(TIMEOUT)
    assert not lingering.is_alive()
    assert conn.ended.is_set()


# ---- Poller --------------------------------------------------------------------------------------


class FakeSession:
    """Counts the poller's calls; ``next_due`` is whatever the test sets."""

    def __init__(self, due=None):
        self.due = due
        self.wakes = 0
        self.woken = threading.Event()
        self.resumed = threading.Event()

    def wake(self):
        self.wakes += 1
        self.woken.set()

    def resume(self):
        self.resumed.set()

    def next_due(self):
        return self.due


@pytest.fixture
def running_poller():
    """A started poller with one pool thread, and no app context to enter."""
    started = Poller(1, contextlib.nullcontext)
    started.start()
    yield started
    started.stop()


@pytest.fixture
def sockets():
    """``make()``: a socket pair, closed after the test."""
    made = []

    def make():
        pair = socket.socketpair()
        made.extend(pair)
        return pair

    yield make
    for sock in made:
        sock.close()


def test_a_readable_adopted_socket_wakes_its_session(running_poller, sockets):
    """Bytes on an adopted socket: the poller calls the session's wake()."""
    ours, theirs = sockets()
    session = FakeSession()
    running_poller.adopt(session, ours.fileno())
    theirs.sendall(b"x")
    assert session.woken.wait(TIMEOUT)


def test_a_session_is_woken_once_until_armed_again(running_poller, sockets):
    """One-shot: unread bytes do not wake it again until arm(); then they do."""
    ours, theirs = sockets()
    session = FakeSession()
    running_poller.adopt(session, ours.fileno())
    theirs.sendall(b"x")
    assert session.woken.wait(TIMEOUT)
    # A marker socket woken twice means the epoll thread polled at least twice since.
    marker_ours, marker_theirs = sockets()
    marker = FakeSession()
    running_poller.adopt(marker, marker_ours.fileno())
    marker_theirs.sendall(b"m")
    assert marker.woken.wait(TIMEOUT)
    marker.woken.clear()
    running_poller.arm(marker_ours.fileno())
    assert marker.woken.wait(TIMEOUT)
    assert session.wakes == 1
    session.woken.clear()
    running_poller.arm(ours.fileno())
    assert session.woken.wait(TIMEOUT)


def test_a_session_past_its_next_due_is_woken_on_the_tick(monkeypatch, sockets):
    """No bytes, but next_due() has passed: woken on the tick; one not due is left alone."""
    monkeypatch.setattr(poller, "TICK", 0.01)
    later, due = FakeSession(due=time.monotonic() + 3600), FakeSession(due=time.monotonic())
    started = Poller(1, contextlib.nullcontext)
    started.start()
    try:
        started.adopt(later, sockets()[0].fileno())
        started.adopt(due, sockets()[0].fileno())
        assert due.woken.wait(TIMEOUT)
        due.woken.clear()
        assert due.woken.wait(TIMEOUT)  # A second tick: the first one looked at both.
        assert later.wakes == 0
    finally:
        started.stop()


def test_forget_empties_the_poller_and_wait_empty_sees_it(running_poller, sockets):
    """wait_empty() is False while a socket is adopted, True once every one is forgotten."""
    first, second = sockets()[0].fileno(), sockets()[0].fileno()
    running_poller.adopt(FakeSession(), first)
    running_poller.adopt(FakeSession(), second)
    assert len(running_poller) == 2
    assert running_poller.wait_empty(0) is False
    running_poller.forget(first)
    assert running_poller.wait_empty(0) is False
    results = []
    waiting = threading.Thread(
        target=lambda: results.append(running_poller.wait_empty(30.0)), daemon=True
    )
    waiting.start()
    # The delay only lets wait_empty() be waiting when forget() comes; late, it fails nothing.
    forgetting = threading.Timer(0.05, running_poller.forget, args=(second,))
    forgetting.start()
    waiting.join(TIMEOUT)  # Woken by forget(), not by its 30 s timeout.
    assert results == [True]
    forgetting.join(TIMEOUT)
    assert len(running_poller) == 0


def test_hand_over_and_retire_run_on_the_pollers_threads(running_poller):
    """hand_over() calls resume() on a pool thread; retire() runs the goodbye on another."""
    session, retired = FakeSession(), threading.Event()
    running_poller.hand_over(session)
    running_poller.retire(retired.set)
    assert session.resumed.wait(TIMEOUT)
    assert retired.wait(TIMEOUT)


def test_stop_ends_the_pollers_threads(sockets):
    """After stop() no thread of the poller is alive, and it adopts nothing more."""
    ours = {"chat-poll", "chat-serve-0", "chat-close-0", "chat-close-1"}
    before = set(threading.enumerate())
    stopped = Poller(1, contextlib.nullcontext)
    stopped.start()
    started = [t for t in threading.enumerate() if t not in before and t.name in ours]
    assert {t.name for t in started} == ours
    session = FakeSession()
    stopped.hand_over(session)  # The pool thread has been busy, and waits for more.
    assert session.resumed.wait(TIMEOUT)
    stopped.stop()
    assert not any(t.is_alive() for t in started)
    with pytest.raises(ValueError, match="closed"):
        stopped.adopt(FakeSession(), sockets()[0].fileno())


# ---- Session (scheduling only: serving a frame needs the app's context) ------------------------


class FakeReader:
    """``receive_nowait`` runs the test's ``step`` for each call."""

    def __init__(self, step):
        self.step = step
        self.reads = 0
        self.calls = 0

    def receive_nowait(self, read=True):
        self.calls += 1
        return self.step()

    def next_due(self):
        return None


class FakeConn:
    """What a Session asks of its Connection when no frame arrives."""

    def __init__(self, step):
        self.reader = FakeReader(step)
        self.locale = None
        self.user_id = 1

    def fileno(self):
        return 42


class FakePoller:
    """Records what a Session asks of the poller."""

    def __init__(self):
        self.adopted, self.armed, self.retired = [], [], []

    def adopt(self, session, fd):
        self.adopted.append(fd)

    def arm(self, fd):
        self.armed.append(fd)

    def retire(self, finish):
        self.retired.append(finish)


SESSION_CONFIG = {"CHAT_FRAME_RATE": 10, "CHAT_FRAME_BURST": 10, "CHAT_FLOOD_STRIKES": 3}


def test_session_start_adopts_serves_and_arms_once():
    """start(): adopted, what arrived is read, then the socket is armed for its next turn."""
    fake_poller, conn = FakePoller(), FakeConn(lambda: None)
    Session(SESSION_CONFIG, fake_poller, None, conn).start()
    assert fake_poller.adopted == [42]
    assert conn.reader.calls == 1
    assert fake_poller.armed == [42]


def test_session_that_closed_is_retired_not_armed():
    """ConnectionClosed from the reader: its goodbye goes to a closing thread, no arming."""
    fake_poller = FakePoller()

    def closed():
        raise ConnectionClosed(1000, "bye")

    Session(SESSION_CONFIG, fake_poller, None, FakeConn(closed)).start()
    assert len(fake_poller.retired) == 1
    assert fake_poller.armed == []


def test_a_wake_while_served_makes_the_server_look_again_before_arming():
    """A second wake() returns at once; the thread serving it reads again, then arms once."""
    entered, release = threading.Event(), threading.Event()

    def first_blocks():
        if not entered.is_set():
            entered.set()
            assert release.wait(TIMEOUT)

    fake_poller, conn = FakePoller(), FakeConn(first_blocks)
    session = Session(SESSION_CONFIG, fake_poller, None, conn)
    serving = threading.Thread(target=session.start, daemon=True)
    serving.start()
    assert entered.wait(TIMEOUT)
    session.wake()  # Returns at once: another thread is serving it.
    assert conn.reader.calls == 1
    release.set()
    serving.join(TIMEOUT)
    assert conn.reader.calls == 2
    assert fake_poller.armed == [42]
