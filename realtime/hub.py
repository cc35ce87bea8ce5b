"""The hub: who is connected, and fan-out of frames to them.

A broadcast is framed once (``frames.message``) and handed to each ``Connection``
(``transport/connection.py``), which writes it without blocking. Fan-out goes through a
backplane (``backplane.py``): in memory for one process, Redis pub/sub for several.
"""

import bisect
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from realtime import events
from realtime.backplane import (
    BackplaneError,
    MemoryBackplane,
    OnlineUser,
    PresenceEntry,
    RedisBackplane,
)
from realtime.presence import PresenceBatcher
from realtime.protocol import Person
from realtime.stats import Count, Tally
from realtime.transport import frames
from realtime.transport.connection import Connection
from realtime.transport.frames import Outgoing

log = logging.getLogger(__name__)

# A room's members online here, sorted by name: [(casefolded name, user id)].
Roster = list[tuple[str, int]]
# A room's first people online, by name, and how many are online there in all.
OnlinePage = tuple[list[Person], int]


@dataclasses.dataclass(frozen=True)
class SocketTotals:
    """What this worker's sockets did so far, and hold now (``Hub.totals``)."""

    bytes_sent: int  # Written to sockets, over the worker's life.
    cut_off: int  # Sockets cut off for falling too far behind, over the worker's life.
    backlog: int  # Frames waiting in the sockets' backlogs now, in all.
    longest_backlog: int  # Frames waiting in the longest one.


def _rosters_of(everyone: Mapping[int, OnlineUser]) -> dict[int, list[Person]]:
    """``{room id: [{"id", "name"}] sorted by name}`` from every worker's presence."""
    rosters: dict[int, list[Person]] = {}
    for uid, person in everyone.items():
        entry: Person = {"id": uid, "name": person["name"]}
        for room_id in person["rooms"]:
            rosters.setdefault(room_id, []).append(entry)
    for people in rosters.values():
        people.sort(key=lambda person: (person["name"].casefold(), person["id"]))
    return rosters


class SharedRosters:
    """Every worker's rosters, read from the backplane once for all the greetings waiting.

    Reading everyone's presence costs O(people); a storm greets thousands at once. A caller
    asks for rosters read after a moment (its ``attach``); whoever reads them shares them
    with every caller that came before the read began, and the rest wait for the next read.
    """

    def __init__(self, read: Callable[[], Mapping[int, OnlineUser]]) -> None:
        self._read = read
        self._lock = threading.Lock()  # One read at a time: those waiting get its result.
        self._read_at = float("-inf")
        self._rosters: dict[int, list[Person]] = {}

    def since(self, moment: float) -> dict[int, list[Person]]:
        """Rosters read after ``moment`` (``time.monotonic()``); raises ``BackplaneError``."""
        with self._lock:
            if self._read_at <= moment:
                started = time.monotonic()
                self._rosters = _rosters_of(self._read())
                self._read_at = started
            return self._rosters


def _unlist(roster: Roster, name: str, user_id: int) -> None:
    """Remove ``user_id`` from a sorted roster, where ``name`` should have placed them."""
    position = bisect.bisect_left(roster, (name.casefold(), user_id))
    if position < len(roster) and roster[position][1] == user_id:
        del roster[position]
        return
    # Listed under another name (a bug elsewhere): never remove someone else instead.
    log.error("user %s was not in a roster under %r", user_id, name, extra={"user_id": user_id})
    roster[:] = [entry for entry in roster if entry[1] != user_id]


class Hub:
    """A thread-safe registry of this worker's connections, and fan-out through a backplane.

    Room membership lives in the database; the hub mirrors it for users who are online here, so
    that a broadcast reaches exactly the sockets of a room's members. Every fan-out is an *event*
    published on the backplane, which delivers it to the hub of every worker (``deliver``).
    """

    def __init__(
        self,
        backplane: MemoryBackplane | RedisBackplane | None = None,
        presence_interval: float = 0.25,
    ) -> None:
        self._backplane = backplane or MemoryBackplane()
        self._backplane.bind(self)
        # Arrivals and departures, announced in batches (``presence.py``).
        self.presence = PresenceBatcher(self, presence_interval)
        self._shared_rosters = SharedRosters(self.everyone)
        # Guards the registry only; nothing under it does I/O.
        self._lock = threading.Lock()
        # Makes "persist, then publish" one step, so every client receives messages in id order
        # and a joining client's history meets its live frames with no gap and no duplicate.
        self._order = threading.Lock()
        # Held by the thread inside ``ordered()``: its writes wait until it lets go of the lock.
        self._order_holder: int | None = None
        # The connections it queued frames to, to flush after the lock.
        self._touched: list[Connection] = []
        # Serializes presence writes, so that an older snapshot never overwrites a newer one.
        self.presence_lock = threading.Lock()
        self._sockets: dict[int, set[Connection]] = {}  # user id -> set of Connection
        self._names: dict[int, str] = {}  # user id -> display name
        # user id -> {"id", "name"} for online lists (replaced, not changed)
        self._people: dict[int, Person] = {}
        # user id -> {room id: room key}, for users online here
        self._rooms: dict[int, dict[int, str]] = {}
        self._members: dict[int, set[int]] = {}  # room id -> set of user ids online here in it
        # room id -> [(casefolded name, user id)] of those members, kept sorted as they come and
        # go: a greeting lists a room's people without sorting them (a storm greets thousands).
        self._rosters: dict[int, Roster] = {}
        # room id -> tuple of Connection, so deliveries read it without the lock; dropped on
        # change and rebuilt by the next delivery (``_fanout_of``), not once per arrival.
        self._fanout: dict[int, tuple[Connection, ...]] = {}
        # (user id, room id) -> when their last typing frame was relayed
        self._typing: dict[tuple[int, int], float] = {}
        # Deliveries and refusals, for ``ops.metrics``; what the sockets that ended had sent, and
        # how many of them were cut off (``retire``; under ``_lock``).
        self.tally = Tally()
        self._bytes_retired = 0
        self._cut_off = 0

    # ---- Backplane -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the backplane and the presence batcher (once; the first socket calls this)."""
        self._backplane.start()
        self.presence.start()

    def stop(self) -> None:
        """Stop the backplane's and the batcher's threads (tests make many apps in one process)."""
        self.presence.stop()
        self._backplane.stop()

    def generation(self) -> int:
        """Changes whenever the backplane was lost: events may have been missed since."""
        return self._backplane.generation

    def ready(self, wait: float = 0) -> bool:
        """True when sockets may join: the backplane delivers events to this worker."""
        return self._backplane.ready(wait)

    @contextlib.contextmanager
    def ordered(self) -> Iterator[None]:
        """A context in which to persist and publish, or to read history and attach.

        With several workers this also holds the backplane's cross-process lock.
        """
        me = threading.get_ident()
        if self._order_holder == me:
            yield  # Already inside (a handler that calls another): one lock, one flush.
            return
        touched: list[Connection] = []
        try:
            with self._order, self._backplane.exclusive():
                self._order_holder, self._touched = me, touched
                try:
                    yield
                finally:
                    self._order_holder = None
        finally:
            # The lock is free: now write what was queued under it, each socket in order.
            for conn in touched:
                conn.flush()

    def send(self, conn: Connection, payload: str | Outgoing) -> None:
        """Send ``payload`` (a frame's JSON, or an ``Outgoing``) to one socket, never blocking.

        Inside ``ordered()`` it is only queued, and written once the lock is free: no socket
        I/O under a shared lock, not even a non-blocking write.
        """
        frame = payload if isinstance(payload, Outgoing) else frames.message(payload)
        if self._order_holder == threading.get_ident():
            if conn.queue(frame):
                self._touched.append(conn)
            return
        conn.send(frame)

    # ---- Registry ------------------------------------------------------------------------------

    def attach(self, conn: Connection, rooms: Mapping[int, str]) -> bool:
        """Register ``conn`` in ``rooms`` ({id: key}); True if its user was online nowhere."""
        return self.attach_all([(conn, rooms)])[0]

    def attach_all(self, arrivals: Sequence[tuple[Connection, Mapping[int, str]]]) -> list[bool]:
        """Register sockets in their rooms ({id: key}) at once, as ``attach`` does each: one
        registry lock, one presence write and one read of the other workers for all of them.
        For each, whether its user was online nowhere (the first of a user's sockets only)."""
        firsts = []
        with self._lock:
            for conn, rooms in arrivals:
                user_id = conn.user_id
                sockets = self._sockets.setdefault(user_id, set())
                firsts.append(not sockets)
                sockets.add(conn)
                self._set_name(user_id, conn.name)
                # Merged, not replaced: a room this greeting did not read (a join or leave still
                # on its way from another worker) stays listed until its own event, so that the
                # user's rooms, the members and the rosters always agree.
                self._rooms.setdefault(user_id, {}).update(rooms)
                for room_id in rooms:
                    self._add_member(room_id, user_id)
                    self._refresh(room_id)
        users = {conn.user_id for conn, _rooms in arrivals}
        self._publish_presence(*users)
        elsewhere = self._online_elsewhere(users)
        return [
            first and conn.user_id not in elsewhere
            for first, (conn, _rooms) in zip(firsts, arrivals, strict=True)
        ]

    def detach(self, conn: Connection) -> tuple[bool, dict[int, str]]:
        """Unregister ``conn``; return ``(last, rooms)``: its user's last socket anywhere? rooms?"""
        known, last_here, rooms = self._remove(conn)
        if not known:
            return False, {}
        self._publish_presence(conn.user_id)
        return last_here and conn.user_id not in self._online_elsewhere({conn.user_id}), rooms

    def forget(self, conn: Connection) -> dict[int, str]:
        """Unregister ``conn`` while the backplane may be down; the rooms it left if it was its
        user's last socket here (for the presence batch, which retries until Redis is back)."""
        _known, last_here, rooms = self._remove(conn)
        with contextlib.suppress(BackplaneError):
            self._publish_presence(conn.user_id)
        return rooms if last_here else {}

    def _remove(self, conn: Connection) -> tuple[bool, bool, dict[int, str]]:
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

    def subscribe(self, user_id: int, room_id: int, key: str) -> None:
        """Add a user's sockets, on every worker, to a room they joined."""
        self._publish_and_apply(events.Subscribe(user_id, room_id, key))

    def unsubscribe(self, user_id: int, room_id: int, key: str, fallback: str) -> None:
        """Take a user's sockets out of a room they left; those typing in it go to ``fallback``."""
        self._publish_and_apply(events.Unsubscribe(user_id, room_id, key, fallback))

    def _publish_and_apply(self, event: events.Event) -> None:
        """Apply ``event`` on this worker now, then publish it to every worker."""
        if self._backplane.shared:
            self.deliver(event, None)
        self._backplane.publish(event)

    def _subscribe(self, user_id: int, room_id: int, key: str) -> None:
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

    def _unsubscribe(self, user_id: int, room_id: int, key: str, fallback: str) -> None:
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

    def rename(self, user_id: int, name: str) -> None:
        """Give a user's sockets, on every worker, a new display name."""
        self._publish_and_apply(events.Rename(user_id, name))

    def _rename(self, user_id: int, name: str) -> None:
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

    def set_avatar(self, user_id: int, url: str | None) -> None:
        """Give a user's sockets, on every worker, their new picture (None: none)."""
        self._publish_and_apply(events.Avatar(user_id, url))

    def _set_avatar(self, user_id: int, url: str | None) -> None:
        with self._lock:
            for conn in self._sockets.get(user_id, ()):
                conn.avatar_url = url

    def rooms_of(self, user_id: int) -> dict[int, str]:
        """``{room id: key}`` of an online user's rooms (empty when they are offline)."""
        if self._backplane.shared:
            person = self._backplane.presence_of(user_id)
            return dict(person["rooms"]) if person is not None else {}
        with self._lock:
            return dict(self._rooms.get(user_id, {}))

    def _refresh(self, room_id: int) -> None:
        """A room's sockets changed: drop its fan-out tuple; the caller holds the lock."""
        self._fanout.pop(room_id, None)
        if not self._members.get(room_id):
            self._members.pop(room_id, None)
            self._rosters.pop(room_id, None)

    def _fanout_of(self, room_id: int) -> tuple[Connection, ...]:
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

    def _add_member(self, room_id: int, user_id: int) -> None:
        """Count a user as online in a room, in its sorted roster too; the caller holds the lock."""
        members = self._members.setdefault(room_id, set())
        if user_id not in members:
            members.add(user_id)
            key = (self._names[user_id].casefold(), user_id)
            bisect.insort(self._rosters.setdefault(room_id, []), key)

    def _drop_member(self, room_id: int, user_id: int) -> None:
        """Undo ``_add_member`` (nothing if the user was not there); the caller holds the lock."""
        members = self._members.get(room_id, set())
        if user_id in members:
            members.discard(user_id)
            _unlist(self._rosters[room_id], self._names[user_id], user_id)

    def _set_name(self, user_id: int, name: str) -> None:
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

    def room_ids(self, user_id: int) -> set[int]:
        """The ids of the rooms of a user online here."""
        with self._lock:
            return set(self._rooms.get(user_id, ()))

    def room_id(self, user_id: int, key: str | None) -> int | None:
        """The id of the room ``key`` if the user is in it, else None."""
        with self._lock:
            rooms = self._rooms.get(user_id, {})
            return next((room_id for room_id, k in rooms.items() if k == key), None)

    def retire(self, conn: Connection) -> None:
        """A socket ended (its file descriptor is closed): keep what it sent in the totals."""
        with self._lock:
            self._bytes_retired += conn.bytes_sent
            self._cut_off += int(conn.cut_off)

    def totals(self) -> SocketTotals:
        """Bytes sent, sockets cut off and backlogs, of the sockets here now and those ended.

        A socket between its goodbye and its end is in neither: the sums may dip for a moment.
        """
        with self._lock:  # One pass over the registry; each socket's fields are read as they are.
            conns = [conn for group in self._sockets.values() for conn in group]
            sent = self._bytes_retired + sum(conn.bytes_sent for conn in conns)
            cut_off = self._cut_off
        backlogs = [conn.backlog for conn in conns]
        return SocketTotals(sent, cut_off, sum(backlogs), max(backlogs, default=0))

    # ---- Presence ------------------------------------------------------------------------------

    def local_presence(self) -> dict[int, PresenceEntry]:
        """``{user id: {"name", "rooms", "sockets"}}`` for the users online on this worker."""
        with self._lock:
            return {uid: self._entry(uid) for uid in self._sockets}

    def _entry(self, user_id: int) -> PresenceEntry:
        """One user's presence entry; the caller holds the lock."""
        rooms = {str(room_id): key for room_id, key in self._rooms[user_id].items()}
        conns = self._sockets[user_id]
        visible = sum(conn.visible for conn in conns)
        return {
            "name": self._names[user_id],
            "rooms": rooms,
            "sockets": len(conns),
            "visible": visible,
        }

    def _publish_presence(self, *user_ids: int) -> None:
        """Tell the backplane where users are online now (a no-op in one process)."""
        if not self._backplane.shared:
            return
        with self.presence_lock:
            with self._lock:
                entries = {
                    uid: self._entry(uid) if uid in self._sockets else None for uid in user_ids
                }
            self._backplane.set_presences(entries)

    # ---- Visibility (Web Push skips a user with a visible tab) ---------------------------------

    def set_visible(self, conn: Connection, visible: bool) -> None:
        """Record whether ``conn``'s page is visible; other workers see it in the presence entry."""
        with self._lock:
            changed = conn.visible != visible and conn in self._sockets.get(conn.user_id, ())
            conn.visible = visible
        if changed:
            self._publish_presence(conn.user_id)

    def visible_users(self, user_ids: Iterable[int]) -> set[int]:
        """Those of ``user_ids`` with a visible tab on any worker (one Redis round trip)."""
        wanted = set(user_ids)
        if not wanted:
            return set()
        if self._backplane.shared:
            return self._backplane.visible_users(wanted)
        with self._lock:
            return {
                uid for uid in wanted if any(conn.visible for conn in self._sockets.get(uid, ()))
            }

    def _online_elsewhere(self, user_ids: Collection[int]) -> set[int]:
        """Those of ``user_ids`` with a socket on another worker."""
        if not self._backplane.shared:
            return set()
        return self._backplane.online_elsewhere(user_ids)

    def everyone(self) -> dict[int, OnlineUser]:
        """``{user id: {"name", "rooms": {room id: key}, "sockets"}}`` for every worker."""
        if self._backplane.shared:
            return self._backplane.everyone()
        with self._lock:
            return {
                uid: {"name": self._names[uid], "rooms": dict(self._rooms[uid]), "sockets": len(s)}
                for uid, s in self._sockets.items()
            }

    def online_page(self, room_ids: Iterable[int], limit: int) -> dict[int, OnlinePage]:
        """``{room id: (the first ``limit`` online there by name, how many in all)}``.

        What a greeting lists: a room's first page and its count, so that greeting n people
        costs n pages, not n². Read after ``attach``, it reflects every presence change whose
        frame the socket did not get. The lists may be shared: read them, do not change them.
        """
        if self._backplane.shared:
            rosters = self._shared_rosters.since(time.monotonic())
            return {
                room_id: (people[:limit], len(people))
                for room_id, people in ((room_id, rosters.get(room_id, [])) for room_id in room_ids)
            }
        # The rooms' sorted rosters directly: no copy of everyone's presence, no sort.
        with self._lock:
            pages: dict[int, OnlinePage] = {}
            for room_id in room_ids:
                roster = self._rosters.get(room_id, ())
                pages[room_id] = ([self._people[uid] for _, uid in roster[:limit]], len(roster))
            return pages

    def online(self, room_id: int) -> list[Person]:
        """``[{"id", "name"}]`` of the users online in one room, sorted by name."""
        if self._backplane.shared:
            return list(_rosters_of(self.everyone()).get(room_id, []))
        with self._lock:
            return [self._people[uid] for _, uid in self._rosters.get(room_id, ())]

    def share_a_room(self, user_id: int, other_id: int) -> bool:
        """True if both users are online and in at least one common room."""
        with self._lock:
            mine = set(self._rooms.get(user_id, {}))
        theirs = self.everyone().get(other_id, {"rooms": {}})["rooms"]
        return not mine.isdisjoint(theirs)

    def sockets_of(self, user_id: int) -> int:
        """How many sockets a user has open, on every worker."""
        if self._backplane.shared:
            person = self._backplane.presence_of(user_id)
            return person["sockets"] if person is not None else 0
        with self._lock:
            return len(self._sockets.get(user_id, ()))

    def allow_typing(self, user_id: int, room_id: int, interval: float) -> bool:
        """True at most once per ``interval`` seconds per user and room: typing is throttled."""
        now = time.monotonic()
        with self._lock:
            last = self._typing.get((user_id, room_id))
            if last is not None and now - last < interval:
                return False
            self._typing[(user_id, room_id)] = now
        return True

    # ---- Fan-out: publish an event; every worker's hub delivers it ------------------------------

    def broadcast(self, room_id: int, payload: str, exclude_user: int | None = None) -> None:
        """Send ``payload`` (already encoded) to every socket in a room, but ``exclude_user``'s.

        Not for chat messages: ``broadcast_messages`` skips those a socket has in its history.
        """
        self._backplane.publish(events.ToRoom(room_id, exclude_user), payload)

    def broadcast_messages(self, room_id: int, messages: Sequence[tuple[int, str]]) -> None:
        """Send several chat messages of one room (``[(id, payload)]``, in id order) as one event.

        A group commit stores several messages at once: each socket of the room then gets them
        as one write, queued once, instead of once per message (a socket that joined after some
        of them, and so has them in its history, gets the others one by one).
        """
        event = events.Messages(room_id, tuple(message_id for message_id, _ in messages))
        # Encoded JSON never holds a raw newline: it separates the messages on the backplane.
        self._backplane.publish(event, "\n".join(payload for _, payload in messages))

    def broadcast_change(self, room_id: int, change: int, payload: str) -> None:
        """Send the frame of change number ``change`` to a room's sockets that lack it."""
        self._backplane.publish(events.Change(room_id, change), payload)

    def send_to_user(self, user_id: int, payload: str) -> None:
        """Send ``payload`` to every socket of one user."""
        self._backplane.publish(events.ToUser(user_id), payload)

    def send_to_all(self, payload: str) -> None:
        """Send ``payload`` to every socket."""
        self._backplane.publish(events.ToAll(), payload)

    def close_user(self, user_id: int, code: int, reason: str) -> None:
        """Close every socket of one user, on every worker, with an application close code."""
        self._backplane.publish(events.CloseUser(user_id, code, reason))

    def close_all(self, code: int, reason: str) -> None:
        """Close every socket of *this worker* (shutdown, or a lost backplane)."""
        for conn in self._snapshot():
            conn.close_with(code, reason)

    def deliver(self, event: events.Event, payload: str | None) -> None:
        """Carry out one published event on this worker's sockets; never waits on any of them.

        Raises ``ValueError`` for an event that cannot be carried out (a frame missing).
        """
        handler = _DELIVERIES[type(event)]
        handler(self, event, payload)

    def _frame_for(self, payload: str | None) -> Outgoing:
        """The frame of an event that carries one: framed once, whatever the recipients."""
        if payload is None:
            raise ValueError("this event carries a frame")
        return frames.message(payload)

    def _to_room(self, event: events.ToRoom, payload: str | None) -> None:
        frame = self._frame_for(payload)
        fanout = self._fanout_of(event.room)
        excluded = 0
        for conn in fanout:
            if conn.user_id != event.exclude:
                self.send(conn, frame)
            else:
                excluded += 1
        self.tally.add(Count.FRAME_DELIVERIES, len(fanout) - excluded)  # Once per fan-out.

    def _deliver_change(self, event: events.Change, payload: str | None) -> None:
        frame = self._frame_for(payload)
        fanout = self._fanout_of(event.room)
        sent = 0
        for conn in fanout:
            if conn.change_floor < event.id:  # Else its greeting showed the change already.
                self.send(conn, frame)
                sent += 1
        self.tally.add(Count.FRAME_DELIVERIES, sent)

    def _to_user(self, event: events.ToUser, payload: str | None) -> None:
        self._to_each(self._snapshot(event.user), self._frame_for(payload))

    def _to_all(self, _event: events.ToAll, payload: str | None) -> None:
        self._to_each(self._snapshot(), self._frame_for(payload))

    def _to_each(self, conns: Sequence[Connection], frame: Outgoing) -> None:
        """Send ``frame`` to each of ``conns``."""
        for conn in conns:
            self.send(conn, frame)
        self.tally.add(Count.FRAME_DELIVERIES, len(conns))

    def _close_user(self, event: events.CloseUser, _payload: str | None) -> None:
        for conn in self._snapshot(event.user):
            conn.close_with(event.code, event.reason)

    def _deliver_messages(self, event: events.Messages, payload: str | None) -> None:
        """Queue a batch of a room's messages to each of its sockets, in one piece if it can."""
        texts = [] if payload is None else payload.split("\n")
        if len(event.ids) != len(texts):
            raise ValueError("a messages event needs one frame per message")
        ids = event.ids
        each = [frames.encode_text(text) for text in texts]
        whole = frames.messages(each)
        singles: list[Outgoing] | None = None
        fanout = self._fanout_of(event.room)
        skipped = 0  # Messages a socket had in its history already.
        for conn in fanout:
            if conn.floor < ids[0]:
                self.send(conn, whole)
                continue
            # It joined after some of them: only the ones it does not have.
            if singles is None:
                singles = [frames.Outgoing(frames.Kind.MESSAGE, frame) for frame in each]
            for message_id, frame in zip(ids, singles, strict=True):
                if message_id > conn.floor:
                    self.send(conn, frame)
                else:
                    skipped += 1
        self.tally.add(Count.MESSAGE_DELIVERIES, len(ids) * len(fanout) - skipped)

    def _snapshot(self, user_id: int | None = None) -> Sequence[Connection]:
        """The sockets of one user, or of everyone, copied under the lock."""
        with self._lock:
            if user_id is not None:
                return tuple(self._sockets.get(user_id, ()))
            return [conn for group in self._sockets.values() for conn in group]


_E = TypeVar("_E", bound=events.Event)
# A delivery takes the event type it is filed under (``_filed`` checks it): Any stands for it.
_Delivery = Callable[[Hub, Any, str | None], None]


def _filed(
    kind: type[_E], deliver: Callable[[Hub, _E, str | None], None]
) -> tuple[type, _Delivery]:
    """An entry of ``_DELIVERIES``: ``deliver`` carries out events of type ``kind``."""
    return kind, deliver


# How each event is carried out (``Hub.deliver``).
_DELIVERIES: dict[type, _Delivery] = dict(
    [
        _filed(events.ToRoom, Hub._to_room),
        _filed(events.Messages, Hub._deliver_messages),
        _filed(events.Change, Hub._deliver_change),
        _filed(events.ToUser, Hub._to_user),
        _filed(events.ToAll, Hub._to_all),
        _filed(events.CloseUser, Hub._close_user),
        _filed(events.Subscribe, lambda hub, e, _p: hub._subscribe(e.user, e.room, e.key)),
        _filed(
            events.Unsubscribe,
            lambda hub, e, _p: hub._unsubscribe(e.user, e.room, e.key, e.fallback),
        ),
        _filed(events.Rename, lambda hub, e, _p: hub._rename(e.user, e.name)),
        _filed(events.Avatar, lambda hub, e, _p: hub._set_avatar(e.user, e.url)),
    ]
)
