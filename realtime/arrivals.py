"""Registering greeted sockets with the hub, under the order lock, a batch at a time."""

import threading
from collections.abc import Sequence

from core import rooms
from core.rooms import PublicRoom
from models import GENERAL, avatar_urls_of, latest_change_id, latest_message_id
from realtime.backplane import BackplaneError
from realtime.hub import Hub
from realtime.transport.connection import Connection

MAX_ARRIVALS = 500  # Per batch: the first greeted need not wait for the whole storm.


class Arrival:
    """A socket waiting to be registered, and what became of it."""

    __slots__ = ("conn", "done", "error", "first", "public_rooms", "rooms", "woken")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.first = False  # Its user was online nowhere before.
        self.rooms: dict[int, str] = {}  # {id: key}
        self.public_rooms: list[PublicRoom] = []  # Shared by the batch: read, do not change.
        self.error: BaseException | None = None
        self.done = False
        self.woken = threading.Event()  # Registered (or refused), or it is its turn to lead.


class Arrivals:
    """Sockets waiting to be registered under the order lock, taken in batches.

    A storm of greetings (every client after a restart) would otherwise take the lock once
    each, with its few queries each time: the lock passes from thread to thread, and each
    holder gives up the GIL at every query and waits to get it back. Instead the first
    greeting registers every socket waiting, in one pass (``_register_all``), and hands the
    next batch to the oldest greeting that came meanwhile; the others sleep until theirs is
    done. With one greeting at a time it is registered at once, alone.
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._lock = threading.Lock()
        self._waiting: list[Arrival] = []
        self._leading = False

    def register(self, conn: Connection) -> Arrival:
        """Register ``conn`` (see ``_register_all``), in a batch; raise what refused it."""
        arrival = Arrival(conn)
        with self._lock:
            self._waiting.append(arrival)
            lead = not self._leading
            self._leading = True
        if not lead:
            arrival.woken.wait()
        if not arrival.done:  # Its turn to lead: it is in the batch it takes.
            self._lead()
        if arrival.error is not None:
            raise arrival.error
        return arrival

    def _lead(self) -> None:
        """Register a batch of those waiting, wake them, and hand over to the next in line."""
        with self._lock:
            batch, self._waiting = self._waiting[:MAX_ARRIVALS], self._waiting[MAX_ARRIVALS:]
        try:
            with self._hub.ordered():
                _register_all(self._hub, batch)
        except BaseException as error:  # Each greeting raises it: a storm fails together.
            for arrival in batch:
                arrival.error = error
            raise
        finally:
            for arrival in batch:
                arrival.done = True
                arrival.woken.set()
            with self._lock:
                if self._waiting:
                    self._waiting[0].woken.set()  # Not done: it leads the next batch.
                else:
                    self._leading = False


def _register_all(hub: Hub, batch: Sequence[Arrival]) -> None:
    """Under ``hub.ordered()``: the sockets' floors, then their registration, holding their
    frames; each arrival learns its rooms and whether its user was online nowhere.

    Every message is stored and published under that lock, so everything up to
    ``conn.floor`` is in the database now and everything after reaches the socket live: the
    hello, read once the lock is free, is bounded by the floor, and the live frames wait for
    it (``Connection.hold``). Messages published before but still in flight from the
    backplane are at most the floor, and the hub skips them for this socket: nothing lands
    twice. Changes to messages are made under the lock too; ``conn.change_floor`` bounds
    them the same way. Only these reads are serialized, and once per batch, so a storm of
    greetings costs the lock a few queries per batch, and everything else runs in parallel.
    """
    generation = hub.generation()
    if not hub.ready():
        raise BackplaneError("the backplane was lost")
    floor, change_floor = latest_message_id(), latest_change_id()
    users = {arrival.conn.user_id for arrival in batch}
    where = rooms.members_rooms(users)
    # Read under the lock: a picture changed from then on reaches these sockets (set_avatar).
    avatars = avatar_urls_of(users)
    for user_id, mine in where.items():
        if GENERAL not in mine.values():  # A first visit (or a restored account): join general.
            mine[rooms.join_general(user_id)] = GENERAL
    public = rooms.public_rooms()  # After the joins; the same for all: read once per batch.
    for arrival in batch:
        conn = arrival.conn
        conn.floor, conn.change_floor, conn.current = floor, change_floor, GENERAL
        arrival.rooms = where[conn.user_id]
        arrival.public_rooms = public
        conn.avatar_url = avatars.get(conn.user_id)
        conn.hold()
    firsts = hub.attach_all([(arrival.conn, arrival.rooms) for arrival in batch])
    for arrival, first in zip(batch, firsts, strict=True):
        arrival.first = first
    if hub.generation() != generation:
        # The backplane was lost while we read: its "close everyone" may have missed these.
        raise BackplaneError("the backplane was lost during the greeting")
