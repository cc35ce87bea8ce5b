"""Presence announcements, batched: one ``presence`` frame per room per interval, not per user.

Announcing every arrival to everyone already there costs n²/2 frames when n people connect at
once (about 500,000 for 1,000). Instead, arrivals, departures and renames are noted here and a
flusher thread sends, every ``interval`` seconds at most, one frame per changed room listing who
came online and who went offline. Each frame states where a user is *now* (read at flush time),
so a user who leaves and comes back within one interval is simply still online, and a page that
applies the frames (idempotently) agrees with the hub after the next flush whatever it missed.
"""

import collections
import logging
import threading
from contextlib import AbstractContextManager
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from realtime import protocol, stats
from realtime.backplane import BackplaneError, OnlineUser

log = logging.getLogger(__name__)

# Changes noted and not sent yet (``PresenceBatcher._pending``).
Pending = dict[tuple[int, str], dict[int, tuple[str, bool]]]


class Broadcaster(Protocol):
    """What the batcher sends through: the hub (``hub.py``, which imports this module)."""

    def ordered(self) -> AbstractContextManager[None]:
        """The context in which presence frames keep one order with greetings."""

    def everyone(self) -> dict[int, OnlineUser]:
        """Where each user is online now, on every worker."""

    def broadcast(self, room_id: int, payload: str, exclude_user: int | None = None) -> None:
        """Send ``payload`` to every socket in a room, but ``exclude_user``'s."""


class PresenceBatcher:
    """Notes presence changes and sends them in batches through the hub."""

    def __init__(self, hub: Broadcaster, interval: float) -> None:
        self._hub = hub
        self._interval = interval
        self._lock = threading.Lock()
        # (room id, room key) -> {user id: (display name when noted, tell their own sockets?)}
        self._pending: Pending = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the flusher thread (once; the first socket calls this)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="chat-presence", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the flusher; whatever is pending is dropped (the process is going away)."""
        self._stopping.set()
        self._wake.set()

    def note(self, room_id: int, key: str, user_id: int, name: str, echo: bool = False) -> None:
        """A user came online in, went offline from, or was renamed in a room.

        ``echo``: their own sockets need the frame too (a rename, which their other tabs show);
        a user's own arrival is news to everyone but them.
        """
        with self._lock:
            self._pending.setdefault((room_id, key), {})[user_id] = (name, echo)
        self._wake.set()

    def flush(self) -> int:
        """Send one ``presence`` frame per room with changes; return how many were sent."""
        # Under the order lock, like a greeting: a socket attached before this flush got a hello
        # that is older than the frames below, and one attached after gets a hello that is newer.
        with self._hub.ordered():
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return 0
            try:
                self._send(pending)
            except BackplaneError:
                self._restore(pending)  # Frames already sent are sent again: they are idempotent.
                raise
        changes = sum(len(users) for users in pending.values())
        stats.presence_sent.send(self._hub, changes=changes, rooms=len(pending))
        return len(pending)

    def _send(self, pending: Pending) -> None:
        """Broadcast one frame per room in ``pending``, with each user's state as of now."""
        everyone = self._hub.everyone()
        counts = collections.Counter(room for each in everyone.values() for room in each["rooms"])
        for (room_id, key), changes in pending.items():
            online: list[protocol.PresenceUser] = []
            offline: list[protocol.PresenceUser] = []
            for user_id, (name, _) in changes.items():
                person = everyone.get(user_id)
                if person is not None and room_id in person["rooms"]:
                    # The noted name: another worker's copy of it may not be renamed yet.
                    online.append({"user_id": user_id, "user": name})
                else:
                    offline.append({"user_id": user_id, "user": name})
            frame = protocol.presence_frame(key, online, offline, counts[room_id])
            (only, (_, echo)), *others = changes.items()
            exclude = None if others or echo else only
            self._hub.broadcast(room_id, protocol.encode(frame), exclude_user=exclude)

    def _restore(self, pending: Pending) -> None:
        """Put back changes that could not be sent; anything noted since is newer and wins."""
        with self._lock:
            for room, changes in pending.items():
                self._pending[room] = {**changes, **self._pending.get(room, {})}

    def _run(self) -> None:
        """Flush at most once per interval, and only when something changed."""
        while True:
            self._wake.wait()
            # Collect what else happens within the interval (a storm of arrivals is one frame).
            if self._stopping.wait(self._interval):
                return
            self._wake.clear()
            try:
                self.flush()
            except (BackplaneError, SQLAlchemyError):
                # Redis or the order lock's database is away: try again after the next interval.
                log.warning("could not send presence changes; retrying")
                self._wake.set()
            except Exception:
                # Presence would stay silent for the rest of the worker's life: log, carry on.
                log.exception("presence batch failed")
