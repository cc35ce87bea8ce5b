"""Greeted sockets between frames: no thread each, one epoll thread for all, a pool to serve them.

A thread per socket cost about 30 KB of memory per idle client (its stack, its interpreter
state) and kept the request (environ, request context) alive with it. Once a socket is greeted
its handler hands it here and returns. One thread waits on every socket with epoll; when one has
bytes to read, or a ping falls due, its ``Session`` is queued for a small pool of threads, which
reads what is there without waiting, handles each frame, and hands the socket back.

A session is served by one pool thread at a time (frames keep their order), for at most
``BATCH`` frames before it goes to the back of the queue: a client sending non-stop cannot keep
a thread from everyone else.
"""

import collections
import contextlib
import logging
import select
import threading
import time

log = logging.getLogger(__name__)

POLLER_KEY = "chat_poller"
TICK = 0.5  # Seconds between looks at which sessions have a ping or close timeout due.
BATCH = 64  # Frames a session handles before others get a turn.
_WATCH = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT


class Poller:
    """One epoll thread watching every handed-off socket, and ``threads`` threads serving them."""

    def __init__(self, threads):
        self._threads = threads
        self._lock = threading.Lock()  # Guards the fields below; never held during I/O.
        self._sessions = {}  # file descriptor -> Session
        self._ready = collections.deque()  # sessions queued for the pool
        self._wake = threading.Condition(self._lock)
        self._epoll = None
        self._running = []
        self._stopping = False
        self._idle = threading.Condition(self._lock)

    def start(self):
        """Start the epoll thread and the pool (once; the first socket calls this)."""
        with self._lock:
            if self._running or self._stopping:
                return
            self._epoll = select.epoll()
            self._running.append(self._start(self._watch, "chat-poll"))
            for number in range(self._threads):
                self._running.append(self._start(self._serve, f"chat-serve-{number}"))

    @staticmethod
    def _start(target, name):
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def stop(self, timeout=5.0):
        """Stop the threads (a test's teardown; a worker exits after its sockets ended)."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            threads, self._running = self._running, []
        for thread in threads:
            thread.join(timeout)
        if self._epoll is not None:
            self._epoll.close()

    def __len__(self):
        """How many sockets are handed off and not ended."""
        with self._lock:
            return len(self._sessions)

    def wait_empty(self, timeout):
        """Wait until every handed-off socket has ended; False if some remain after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._sessions, timeout)

    def adopt(self, session, fd):
        """Watch ``session``'s socket (file descriptor ``fd``) and serve what it has already."""
        with self._lock:
            self._sessions[fd] = session
        self._epoll.register(fd, 0)  # Armed by the first run, once it has read what is there.
        self.queue(session)  # Frames read during the greeting may be buffered already.

    def arm(self, fd):
        """Watch ``fd`` again: one event per arming, so one pool thread per session at a time."""
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

    def queue(self, session):
        """Have a pool thread call ``session.run()``."""
        with self._lock:
            self._ready.append(session)
            self._wake.notify()

    def _watch(self):
        """Queue the sessions whose sockets are readable, and those with a ping or timeout due."""
        next_tick = time.monotonic() + TICK
        while not self._stopping:
            try:
                events = self._epoll.poll(max(0.0, next_tick - time.monotonic()))
            except (OSError, ValueError):  # Closed by stop().
                return
            with self._lock:
                ready = [self._sessions.get(fd) for fd, _ in events]
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK
                    ready.extend(self._due(now))
            for session in ready:
                if session is not None:
                    session.wake()

    def _due(self, now):
        """Sessions with a ping or a close timeout due (at most ``TICK`` late); under the lock."""
        due = []
        for session in self._sessions.values():
            when = session.next_due()
            if when is not None and when <= now:
                due.append(session)
        return due

    def _serve(self):
        """A pool thread: run queued sessions one at a time."""
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._ready or self._stopping)
                if self._stopping:
                    return
                session = self._ready.popleft()
            session.run()
