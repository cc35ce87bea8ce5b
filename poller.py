"""Greeted sockets between frames: no thread each, a few threads waiting on all of them with epoll.

A thread per socket cost about 30 KB of memory per idle client (its stack, its interpreter
state) and kept the request (environ, request context) alive with it. Once a socket is greeted,
its handler hands it here and returns. A small pool of threads waits on one epoll set; the kernel
gives each readable socket to one waiting thread (``EPOLLONESHOT``), which reads what is there
without waiting, handles each frame, and arms the socket again. The thread that wakes is the
thread that serves: no hand-over between threads, which under the GIL would cost latency.

A session is served by one thread at a time (frames keep their order), for about ``BATCH`` frames
before its socket is armed again behind the others that are ready: a client sending non-stop
cannot keep a thread from everyone else. Every ``TICK`` one thread also serves the sessions
with a ping or a close timeout due.
"""

import contextlib
import logging
import os
import queue
import select
import threading
import time

log = logging.getLogger(__name__)

POLLER_KEY = "chat_poller"
TICK = 0.5  # Seconds between looks at which sessions have a ping or a close timeout due.
BATCH = 64  # Reads of a socket before others get a turn.
CLOSING_THREADS = 2  # Threads for goodbyes, which may wait (a writer, the last messages).
_WATCH = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT


class Poller:
    """``threads`` threads waiting on one epoll set of handed-off sockets, and serving them."""

    def __init__(self, threads, context):
        self._threads = threads
        self._context = context  # Entered by each thread for its life (the app's context).
        self._lock = threading.Lock()  # Guards the fields below; never held during I/O.
        self._sessions = {}  # file descriptor -> Session
        self._idle = threading.Condition(self._lock)  # Notified when a session is forgotten.
        self._next_tick = 0.0
        self._epoll = None
        self._stop_pipe = None  # Written to once, to wake every thread when we stop.
        self._running = []
        self._stopping = False
        self._retiring = queue.SimpleQueue()  # Goodbyes for the closing threads.

    def start(self):
        """Start the threads (once; the first socket calls this)."""
        with self._lock:
            if self._running or self._stopping:
                return
            self._epoll = select.epoll()
            self._stop_pipe = os.pipe()
            self._epoll.register(self._stop_pipe[0], select.EPOLLIN)  # Level: wakes them all.
            targets = [(self._serve, f"chat-poll-{n}") for n in range(self._threads)]
            targets += [(self._retire, f"chat-close-{n}") for n in range(CLOSING_THREADS)]
            for target, name in targets:
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._running.append(thread)

    def stop(self, timeout=5.0):
        """Stop the threads (a test's teardown; a worker exits after its sockets ended)."""
        with self._lock:
            self._stopping = True
            threads, self._running = self._running, []
        if not threads:
            return
        os.write(self._stop_pipe[1], b"x")
        for _ in range(CLOSING_THREADS):
            self._retiring.put(None)
        for thread in threads:
            thread.join(timeout)
        self._epoll.close()
        for fd in self._stop_pipe:
            os.close(fd)

    def __len__(self):
        """How many sockets are handed off and not ended."""
        with self._lock:
            return len(self._sessions)

    def wait_empty(self, timeout):
        """Wait until every handed-off socket has ended; False if some remain after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._sessions, timeout)

    def adopt(self, session, fd):
        """Watch ``session``'s socket (file descriptor ``fd``), armed once.

        Raises ``ValueError`` (or ``OSError``) once the poller has stopped.
        """
        if self._epoll is None:
            raise ValueError("the poller is not running")
        # Armed at once, one-shot: registered without events, a hang-up (always reported) would
        # wake every thread again and again until the session was forgotten.
        self._epoll.register(fd, _WATCH)
        with self._lock:
            self._sessions[fd] = session

    def retire(self, finish):
        """Have a closing thread call ``finish`` (a session's goodbye, which may wait)."""
        self._retiring.put(finish)

    def arm(self, fd):
        """Watch ``fd`` again: one event per arming, so one thread per session at a time."""
        # FileNotFoundError: forgotten meanwhile; ValueError: the poller stopped.
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._epoll.modify(fd, _WATCH)

    def forget(self, fd):
        """Stop watching ``fd``; before it is closed (another socket may get its number)."""
        with self._lock:
            self._sessions.pop(fd, None)
            self._idle.notify_all()
        with contextlib.suppress(FileNotFoundError, ValueError):  # The poller stopped.
            self._epoll.unregister(fd)

    def _serve(self):
        """One thread: wait for a ready socket (or a tick), serve its session, again."""
        stop_fd = self._stop_pipe[0]
        with self._context():
            while not self._stopping:
                wait = max(0.0, self._next_tick - time.monotonic())
                try:
                    events = self._epoll.poll(wait, 1)  # One at a time: the others take the rest.
                except (OSError, ValueError):  # Closed by stop().
                    return
                for fd, _ in events:
                    if fd == stop_fd:
                        return
                    with self._lock:
                        session = self._sessions.get(fd)
                    if session is not None:
                        _wake(session)
                for session in self._due():
                    _wake(session)

    def _retire(self):
        """A closing thread: run goodbyes one at a time, until stopped."""
        with self._context():
            while (finish := self._retiring.get()) is not None:
                try:
                    finish()
                except Exception:  # A bug: log it, and keep closing the others.
                    log.exception("a socket's goodbye failed")

    def _due(self):
        """Once per ``TICK`` (to one thread): the sessions with a ping or close timeout due."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_tick:
                return []
            self._next_tick = now + TICK
            sessions = list(self._sessions.values())
        return [s for s in sessions if (when := s.next_due()) is not None and when <= now]


def _wake(session):
    """Serve ``session``; a bug is logged, and must not cost the worker one of its threads."""
    try:
        session.wake()
    except Exception:
        log.exception("serving a socket failed")
