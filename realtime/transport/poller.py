"""Greeted sockets between frames: no thread each; one epoll thread reads them all.

A thread per socket cost about 30 KB of memory per idle client (its stack, its interpreter
state) and kept the request (environ, request context) alive with it. Once a socket is greeted,
its handler hands it here and returns. One thread waits on every socket with epoll; when one is
readable (each socket armed ``EPOLLONESHOT``: one thread serves it at a time), that thread reads
what is there without waiting and handles each chat message itself: a message only waits for a
place in the committer's queue. A frame that may wait longer (every other command reads or
writes the database, or waits for the socket's earlier messages to be stored) is handed, with
the rest of that socket's turn, to a pool of ``threads`` threads, which arms the socket again
when it is done. Goodbyes, which may wait too (a writer, the last messages), run on two closing
threads.

Why not a pool of threads all waiting on epoll: under the GIL every event then woke a sleeping
thread that fought the running one for the interpreter; measured on the burst, a third more
context switches and 17% more CPU than one thread draining the ready list.

A socket's turn is at most ``BATCH`` reads (pings and pieces of frames count), then it is armed
again behind the others that are ready: a client sending non-stop cannot keep the thread from
everyone else. Every ``TICK`` the epoll thread also serves the sessions with a ping or a close
timeout due.
"""

import collections
import contextlib
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

log = logging.getLogger(__name__)

POLLER_KEY = "chat_poller"
TICK = 0.5  # Seconds between looks at which sessions have a ping or a close timeout due.
BATCH = 64  # Reads of a socket before others get a turn.
CLOSING_THREADS = 2  # Threads for goodbyes, which may wait (a writer, the last messages).
_WATCH = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT


class Served(Protocol):
    """What the poller serves: a greeted socket's session (``session.py``, which imports this)."""

    def wake(self) -> None:
        """Serve it in the calling thread (the epoll thread), unless it is served elsewhere."""

    def resume(self) -> None:
        """Serve it in the calling thread (a pool thread), after ``hand_over``."""

    def next_due(self) -> float | None:
        """When it must be served even without frames (``time.monotonic()``), if ever."""


class Poller:
    """One epoll thread for every handed-off socket, ``threads`` for frames that may wait."""

    def __init__(self, threads: int, context: Callable[[], AbstractContextManager[object]]) -> None:
        self._threads = threads
        self._context = context  # Entered by each thread for its life (the app's context).
        self._lock = threading.Lock()  # Guards the fields below; never held during I/O.
        self._sessions: dict[int, Served] = {}  # file descriptor -> Session
        self._idle = threading.Condition(self._lock)  # Notified when a session is forgotten.
        self._ready: collections.deque[Served] = collections.deque()  # Sessions handed to the pool.
        self._work = threading.Condition(self._lock)
        self._epoll: select.epoll | None = None
        # Written to once, to wake the epoll thread when we stop.
        self._stop_pipe: tuple[int, int] | None = None
        self._running: list[threading.Thread] = []
        self._stopping = False
        # Goodbyes for the closing threads (None: end).
        self._retiring: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()

    def start(self) -> None:
        """Start the threads (once; the first socket calls this)."""
        with self._lock:
            if self._running or self._stopping:
                return
            self._epoll = select.epoll()
            self._stop_pipe = os.pipe()
            self._epoll.register(self._stop_pipe[0], select.EPOLLIN)
            targets = [(self._watch, "chat-poll")]
            targets += [(self._work_loop, f"chat-serve-{n}") for n in range(self._threads)]
            targets += [(self._retire, f"chat-close-{n}") for n in range(CLOSING_THREADS)]
            for target, name in targets:
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._running.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads (a test's teardown; a worker exits after its sockets ended)."""
        with self._lock:
            self._stopping = True
            self._work.notify_all()
            threads, self._running = self._running, []
        if not threads:
            return
        assert self._epoll is not None  # start() made it and the pipe, with the threads.
        assert self._stop_pipe is not None
        os.write(self._stop_pipe[1], b"x")
        for _ in range(CLOSING_THREADS):
            self._retiring.put(None)
        for thread in threads:
            thread.join(timeout)
        self._epoll.close()
        for fd in self._stop_pipe:
            os.close(fd)

    def __len__(self) -> int:
        """How many sockets are handed off and not ended."""
        with self._lock:
            return len(self._sessions)

    def wait_empty(self, timeout: float | None) -> bool:
        """Wait until every handed-off socket has ended; False if some remain after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._sessions, timeout)

    def adopt(self, session: Served, fd: int) -> None:
        """Watch ``session``'s socket (file descriptor ``fd``), armed once.

        Raises ``ValueError`` (or ``OSError``) once the poller has stopped.
        """
        # Armed at once, one-shot: registered without events, a hang-up (always reported) would
        # wake the thread again and again until the session was forgotten.
        self._watcher().register(fd, _WATCH)
        with self._lock:
            self._sessions[fd] = session

    def arm(self, fd: int) -> None:
        """Watch ``fd`` again: one event per arming, so one thread per session at a time."""
        # FileNotFoundError: forgotten meanwhile; ValueError: the poller stopped.
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._watcher().modify(fd, _WATCH)

    def forget(self, fd: int) -> None:
        """Stop watching ``fd``; before it is closed (another socket may get its number)."""
        with self._lock:
            self._sessions.pop(fd, None)
            self._idle.notify_all()
        # The poller stopped, or never started (the session's adoption failed).
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._watcher().unregister(fd)

    def _watcher(self) -> select.epoll:
        """The epoll object; ``ValueError`` if the poller never started (as once it is closed)."""
        if self._epoll is None:
            raise ValueError("the poller is not running")
        return self._epoll

    def hand_over(self, session: Served) -> None:
        """Have a pool thread call ``session.resume()`` (a frame that may wait is next)."""
        with self._lock:
            self._ready.append(session)
            self._work.notify()

    def retire(self, finish: Callable[[], None]) -> None:
        """Have a closing thread call ``finish`` (a session's goodbye, which may wait)."""
        self._retiring.put(finish)

    def _watch(self) -> None:
        """The epoll thread: serve each readable socket's session, and those with a ping due."""
        assert self._epoll is not None  # start() made it and the pipe, before this thread.
        assert self._stop_pipe is not None
        stop_fd = self._stop_pipe[0]
        next_tick = time.monotonic() + TICK
        with self._context():
            while True:
                try:
                    events = self._epoll.poll(max(0.0, next_tick - time.monotonic()))
                except (OSError, ValueError):  # Closed by stop().
                    return
                for fd, _ in events:
                    if fd == stop_fd:
                        return
                    with self._lock:
                        session = self._sessions.get(fd)
                    if session is not None:
                        _safely(session.wake)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK
                    for session in self._due():
                        _safely(session.wake)

    def _due(self) -> list[Served]:
        """The sessions with a ping or a close timeout due (at most ``TICK`` late)."""
        now = time.monotonic()
        with self._lock:
            sessions = list(self._sessions.values())
        return [s for s in sessions if (when := s.next_due()) is not None and when <= now]

    def _work_loop(self) -> None:
        """A pool thread: resume handed-over sessions one at a time."""
        with self._context():
            while True:
                with self._lock:
                    self._work.wait_for(lambda: self._ready or self._stopping)
                    if self._stopping:
                        return
                    session = self._ready.popleft()
                _safely(session.resume)

    def _retire(self) -> None:
        """A closing thread: run goodbyes one at a time, until stopped."""
        with self._context():
            while (finish := self._retiring.get()) is not None:
                _safely(finish)


def _safely(call: Callable[[], object]) -> None:
    """Run ``call``; a bug is logged, and must not cost the worker one of its threads."""
    try:
        call()
    except Exception:
        log.exception("serving a socket failed")
