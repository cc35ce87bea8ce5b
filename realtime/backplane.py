"""Backplanes: how the hub's events reach the sockets of every worker, and who is online where.

``MemoryBackplane`` serves one process: an event is delivered as it is published. ``RedisBackplane``
joins workers and hosts: every event goes through one Redis pub/sub channel and each worker
delivers what arrives on it — its own events included, so that every worker sees one order, the
channel's. Events that must keep an order (messages, presence) are published under
``Hub.ordered()``, which the Redis backplane makes a cross-process lock (a PostgreSQL advisory lock,
or a file lock beside a SQLite database), so the channel's order is the order of message ids.

Presence lives in one Redis hash per worker (user id -> name, rooms, socket count). Workers
heartbeat into a sorted set; one that misses ``CHAT_PRESENCE_TTL`` seconds of beats is buried by
the first live worker to notice: its hash is dropped and its users are announced as gone.
"""

import contextlib
import fcntl
import json
import logging
import os
import random
import secrets
import socket
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar, Literal, NotRequired, Protocol, TypedDict, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.typing import EncodableT, FieldT
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from realtime import events, stats
from realtime.protocol import CLOSE_RESTART

log = logging.getLogger(__name__)

# Application close code 1012 (Service Restart, IANA registry): reconnect and resume.
MAX_BACKOFF = 5.0  # seconds between attempts to resubscribe after Redis went away
# Any constant works; it names the one lock all workers take around "commit, then publish".
ORDER_LOCK_KEY = 0x63686174  # "chat"


class BackplaneError(Exception):
    """The backplane could not be reached: the caller answers ``unavailable``."""


class PresenceEntry(TypedDict):
    """One user on one worker, as that worker's Redis hash holds it (JSON: room ids as text)."""

    name: str
    rooms: dict[str, str]  # room id -> room key
    sockets: int
    visible: NotRequired[int]  # Of those sockets, how many pages are visible (Web Push).


class OnlineUser(TypedDict):
    """One user over every worker: their name, rooms ({room id: key}) and open sockets."""

    name: str
    rooms: dict[int, str]
    sockets: int


# A dead worker's user, announced gone: (user id, name, {room id: key}).
Departed = tuple[int, str, dict[int, str]]


class Receiver(Protocol):
    """What a backplane delivers to: the hub (``hub.py``, which imports this module)."""

    @property
    def presence_lock(self) -> threading.Lock:
        """Held while the hub's presence is written or read as a whole."""

    def deliver(self, event: events.Event, payload: str | None) -> None:
        """Carry out one published event on this worker's sockets."""

    def close_all(self, code: int, reason: str) -> None:
        """Close every socket of this worker."""

    def local_presence(self) -> dict[int, PresenceEntry]:
        """The users online on this worker."""

    def ordered(self) -> AbstractContextManager[None]:
        """The context in which ordered events are published."""


def _count_in(people: dict[int, OnlineUser], user_id: int, raw: str) -> None:
    """Add one worker's presence entry (its JSON) for ``user_id`` to ``people``: the rooms
    merged, the sockets summed over the workers."""
    entry = json.loads(raw)
    rooms = {int(room_id): key for room_id, key in entry["rooms"].items()}
    person = people.setdefault(user_id, {"name": entry["name"], "rooms": {}, "sockets": 0})
    person["rooms"].update(rooms)
    person["sockets"] += entry["sockets"]


class MemoryBackplane:
    """One process: events are delivered at once, presence is the hub's own registry."""

    shared: ClassVar[Literal[False]] = False
    generation = 0  # Never lost.

    def bind(self, hub: Receiver) -> None:
        """Deliver events to ``hub``."""
        self._hub = hub

    def start(self) -> None:
        """Nothing to start."""

    def ready(self, wait: float = 0) -> bool:
        """Always ready."""
        return True

    def stop(self) -> None:
        """Nothing to stop."""

    def exclusive(self) -> AbstractContextManager[None]:
        """No other process to exclude: the hub's own lock is enough."""
        return contextlib.nullcontext()

    def publish(self, event: events.Event, payload: str | None = None) -> None:
        """Deliver ``event`` (and its encoded frame) to this process's sockets now."""
        self._hub.deliver(event, payload)


class RedisBackplane:
    """Workers joined by Redis pub/sub, with presence in Redis hashes that expire with a worker."""

    shared: ClassVar[Literal[True]] = True

    def __init__(
        self,
        url: str,
        prefix: str,
        heartbeat: int,  # Seconds, whole: Redis counts its expiries (and health checks) so.
        ttl: int,
        on_departed: Callable[[Iterable[Departed]], None],
        engine: Callable[[], Engine],
    ) -> None:
        self._engine = engine  # () -> the SQLAlchemy engine, for the order lock
        self._url = url
        self._prefix = prefix
        self._heartbeat = heartbeat
        self._ttl = ttl
        self._on_departed = on_departed  # called with [(user id, name, {room id: key})]
        self._start_lock = threading.Lock()
        self._pid: int | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        # Bumped each time the subscription is lost: a greeting that saw it change closes itself.
        self.generation = 0
        self.worker: str | None = None  # Named by ``start``, in the process that uses it.

    def bind(self, hub: Receiver) -> None:
        """Deliver events to ``hub``; read presence from it when re-registering."""
        self._hub = hub

    # ---- Life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start the listener and heartbeat threads, once per process.

        Started on first use rather than in ``create_app``: CLI commands never join the chat, and
        gunicorn workers forked from a preloaded app get threads of their own. Called from within
        an app context (a request, or gunicorn's ``post_worker_init``).
        """
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
            self._exclusive = _order_lock(self._engine())
            retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 3)
            options = {"socket_connect_timeout": 2, "socket_keepalive": True}
            self._redis = redis.Redis.from_url(
                self._url, socket_timeout=5, retry=retry, decode_responses=True, **options
            )
            # Reads on the subscription wait for events: no read timeout, but a periodic PING.
            self._listener = redis.Redis.from_url(
                self._url, health_check_interval=self._heartbeat, decode_responses=True, **options
            )
            for target, name in ((self._listen, "listener"), (self._beat, "heartbeat")):
                thread = threading.Thread(target=target, name=f"chat-{name}", daemon=True)
                thread.start()
            self._pid = os.getpid()  # Last: other threads wait on the lock until all is set.

    def stop(self) -> None:
        """Stop the threads (tests); the worker's presence expires on its own."""
        self._stopping.set()

    def ready(self, wait: float = 0) -> bool:
        """True while this worker is subscribed (waiting up to ``wait`` seconds for it)."""
        return self._ready.wait(wait) if wait else self._ready.is_set()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock every worker takes to publish ordered events."""
        self.start()
        with self._exclusive():
            yield

    # ---- Events --------------------------------------------------------------------------------

    def publish(self, event: events.Event, payload: str | None = None) -> None:
        """Send ``event`` (``events.py``) and its frame's JSON to every worker, this one too."""
        self.start()
        message = events.encode(event)
        if payload is not None:
            message += "\n" + payload  # The frame travels as is, not re-encoded inside JSON.
        try:
            self._redis.publish(self._key("events"), message)
        except redis.RedisError as error:
            raise BackplaneError(f"publish failed: {error}") from error

    def _listen(self) -> None:
        """Deliver what arrives on the channel; resubscribe with capped, jittered backoff."""
        delay = 0.1
        while not self._stopping.is_set():
            pubsub = self._listener.pubsub()
            try:
                pubsub.subscribe(self._key("events"))
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._register()
                        self._ready.set()
                        delay = 0.1
                        log.info("worker %s subscribed to %s", self.worker, self._url)
                    elif message["type"] == "message":
                        self._deliver(message["data"])
            except (redis.RedisError, OSError, BackplaneError) as error:
                # BackplaneError: a presence write made while delivering an event failed.
                log.warning("lost the Redis backplane (%s); retrying in %.1fs", error, delay)
            except Exception:
                # A bug while delivering an event. This thread is the worker's only ear on the
                # channel: dying would leave the worker deaf with every socket still open. Events
                # may have been missed, so do as for a lost Redis: close the sockets (their
                # clients resume) and subscribe again.
                log.exception("the backplane listener failed; resubscribing in %.1fs", delay)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()
            self._lost()
            self._stopping.wait(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, MAX_BACKOFF)

    def _deliver(self, message: str) -> None:
        """Hand one published event to the hub; a malformed one is logged and dropped."""
        header, _, payload = message.partition("\n")
        try:
            self._hub.deliver(events.decode(header), payload or None)
        except ValueError:
            # Someone else's message on our channel, or a newer worker's event: not ours to die of.
            log.exception("dropped a malformed backplane event: %.200r", header)  # Not its text.

    def _lost(self) -> None:
        """Events may have been missed: close this worker's sockets so their clients resume."""
        if self._ready.is_set():
            self._ready.clear()
            self.generation += 1
            stats.backplane_lost.send(self._hub)
            self._hub.close_all(CLOSE_RESTART, "Chat service restarting")

    # ---- Presence ------------------------------------------------------------------------------

    def set_presences(self, entries: Mapping[int, PresenceEntry | None]) -> None:
        """Record (or, for ``None``, forget) some of this worker's users, in one round trip."""
        key = self._key("presence", self._me())
        table: dict[FieldT, EncodableT] = {
            str(uid): json.dumps(entry) for uid, entry in entries.items() if entry is not None
        }
        gone = [str(uid) for uid, entry in entries.items() if entry is None]
        pipe = self._redis.pipeline(transaction=False)
        if gone:
            pipe.hdel(key, *gone)
        if table:
            pipe.hset(key, mapping=table)
            pipe.expire(key, self._ttl * 4)  # Outlives any janitor; then goes.
        try:
            pipe.execute()
        except redis.RedisError as error:
            raise BackplaneError(f"presence update failed: {error}") from error

    def everyone(self, exclude_self: bool = False) -> dict[int, OnlineUser]:
        """``{user id: {"name", "rooms": {room id: key}, "sockets"}}`` over every live worker."""
        try:
            workers = self._live_workers()
            if exclude_self:
                workers = [worker for worker in workers if worker != self.worker]
            pipe = self._redis.pipeline(transaction=False)
            for worker in workers:
                pipe.hgetall(self._key("presence", worker))
            tables = pipe.execute()
        except redis.RedisError as error:
            raise BackplaneError(f"presence read failed: {error}") from error
        people: dict[int, OnlineUser] = {}
        for table in tables:
            for user_id, raw in table.items():
                _count_in(people, int(user_id), raw)
        return people

    def presence_of(self, user_id: int) -> OnlineUser | None:
        """One user's presence over every live worker (as in ``everyone``), or None when they
        are offline: one HGET per worker, in one pipeline. Each socket asks this before its
        upgrade, so it must not cost O(people) as ``everyone`` does."""
        try:
            workers = self._live_workers()
            pipe = self._redis.pipeline(transaction=False)
            for worker in workers:
                pipe.hget(self._key("presence", worker), str(user_id))
            entries = pipe.execute()
        except redis.RedisError as error:
            raise BackplaneError(f"presence read failed: {error}") from error
        people: dict[int, OnlineUser] = {}
        for raw in entries:
            if raw is not None:
                _count_in(people, user_id, raw)
        return people.get(user_id)

    def online_elsewhere(self, user_ids: Collection[int]) -> set[int]:
        """Those of ``user_ids`` with a socket on another live worker: one HMGET per worker, of
        their fields only, in one pipeline (reading everyone's presence would cost each
        greeting O(people))."""
        fields = [str(uid) for uid in user_ids]
        if not fields:
            return set()
        try:
            workers = [worker for worker in self._live_workers() if worker != self.worker]
            pipe = self._redis.pipeline(transaction=False)
            for worker in workers:
                pipe.hmget(self._key("presence", worker), fields)
            rows = pipe.execute()
        except redis.RedisError as error:
            raise BackplaneError(f"presence read failed: {error}") from error
        return {
            int(field)
            for row in rows
            for field, raw in zip(fields, row, strict=True)
            if raw is not None
        }

    def visible_users(self, user_ids: set[int]) -> set[int]:
        """Those of ``user_ids`` with a visible page on a live worker: one HMGET per worker, of
        their fields only, in one pipeline."""
        fields = sorted(user_ids)
        try:
            workers = self._live_workers()
            pipe = self._redis.pipeline(transaction=False)
            for worker in workers:
                pipe.hmget(self._key("presence", worker), fields)
            rows = pipe.execute()
        except redis.RedisError as error:
            raise BackplaneError(f"presence read failed: {error}") from error
        return {
            user_id
            for row in rows
            for user_id, raw in zip(fields, row, strict=True)
            if raw is not None and json.loads(raw).get("visible", 0) > 0
        }

    def _live_workers(self) -> list[str]:
        """Workers that beat within the last ``ttl`` seconds (this one always counts)."""
        now = self._now()
        live = self._members(self._key("workers"), now - self._ttl, "+inf")
        return sorted({*live, self._me()})

    def _members(self, key: str, low: float | str, high: float | str) -> list[str]:
        """The members of sorted set ``key`` scored in ``[low, high]``."""
        # Without scores and with decode_responses, redis-py gives a list of str.
        return cast(list[str], self._redis.zrangebyscore(key, low, high))

    def _me(self) -> str:
        """This worker's name, which ``start`` chose (every Redis call comes after it)."""
        assert self.worker is not None, "the backplane is used before start()"
        return self.worker

    def _register(self) -> None:
        """(Re)announce this worker and its users: after a Redis restart, nothing of it is left."""
        key = self._key("presence", self._me())
        # Under the hub's presence lock: a detach cannot slip between our snapshot and our write.
        with self._hub.presence_lock:
            presence = self._hub.local_presence()
            table: dict[FieldT, EncodableT] = {
                str(uid): json.dumps(entry) for uid, entry in presence.items()
            }
            pipe = self._redis.pipeline()
            pipe.zadd(self._key("workers"), {self._me(): self._now()})
            pipe.delete(key)
            if table:
                pipe.hset(key, mapping=table)
                pipe.expire(key, self._ttl * 4)
            pipe.execute()

    def _beat(self) -> None:
        """Every ``heartbeat`` seconds: prove this worker alive, bury workers that are not."""
        while not self._stopping.wait(self._heartbeat):
            if not self._ready.is_set():
                continue
            try:
                self._beat_once()
            except (redis.RedisError, BackplaneError, SQLAlchemyError) as error:
                # SQLAlchemyError: the database (the order lock) is down; the next beat retries.
                log.warning("presence heartbeat failed: %s", error)
            except Exception:
                # The thread's last line of defence: a heartbeat that dies gets this worker buried
                # while its users are still here, so log whatever it was and keep beating.
                log.exception("presence heartbeat failed")

    def _beat_once(self) -> None:
        """One heartbeat: refresh this worker, then bury the dead."""
        now = self._now()
        if self._redis.zadd(self._key("workers"), {self._me(): now}):
            # We had been buried (stalled past the TTL): our users were announced as gone.
            log.warning("worker %s was taken for dead; its sockets reconnect", self.worker)
            self._register()
            self._hub.close_all(CLOSE_RESTART, "Chat service restarting")
        self._redis.expire(self._key("presence", self._me()), self._ttl * 4)
        for dead in self._members(self._key("workers"), "-inf", now - self._ttl):
            if self._redis.zrem(self._key("workers"), dead):  # Only one worker wins each burial.
                try:
                    self._bury(dead)
                except (redis.RedisError, BackplaneError, SQLAlchemyError):
                    # Buried again on a later beat, from the tomb if the hash was moved there.
                    self._redis.zadd(self._key("workers"), {dead: 0})
                    with contextlib.suppress(redis.ResponseError):
                        self._redis.renamenx(self._key("tomb", dead), self._key("presence", dead))
                    raise

    def _bury(self, dead: str) -> None:
        """Drop a dead worker's presence and announce its users gone unless online elsewhere."""
        log.warning("worker %s stopped beating; its users go offline", dead)
        key, tomb = self._key("presence", dead), self._key("tomb", dead)
        try:
            # Moved aside at once: if the worker was only slow, it re-registers into a fresh hash.
            self._redis.rename(key, tomb)
        except redis.ResponseError:
            return  # No hash: it had nobody online.
        with self._hub.ordered():
            table = self._redis.hgetall(tomb)
            still_here = self.everyone()
            gone: list[Departed] = []
            for user_id, raw in table.items():
                if int(user_id) not in still_here:
                    entry = json.loads(raw)
                    rooms = {int(room_id): k for room_id, k in entry["rooms"].items()}
                    gone.append((int(user_id), entry["name"], rooms))
            self._on_departed(gone)
            self._redis.delete(tomb)  # Only once announced: a failure above retries the burial.

    def _now(self) -> float:
        """Seconds on the Redis server's clock, which every host shares."""
        seconds, micros = self._redis.time()
        return seconds + micros / 1e6

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))


def _order_lock(engine: Engine) -> Callable[[], AbstractContextManager[None]]:
    """A context manager that holds the cross-process order lock for this database."""
    if engine.dialect.name == "postgresql":
        return _postgres_lock(engine)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return _file_lock(Path(database).with_suffix(".order-lock"))
    raise RuntimeError(f"the Redis backplane needs PostgreSQL or a SQLite file, not {engine.url}")


def _postgres_lock(engine: Engine) -> Callable[[], AbstractContextManager[None]]:
    """A session-level advisory lock: held across commit and publish, gone if the worker dies."""

    @contextlib.contextmanager
    def hold() -> Iterator[None]:
        # Autocommit: the connection must not sit "idle in transaction" while it holds the lock
        # (idle_in_transaction_session_timeout would end the session, and the lock with it).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ORDER_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ORDER_LOCK_KEY})

    return hold


def _file_lock(path: Path) -> Callable[[], AbstractContextManager[None]]:
    """An exclusive ``flock`` on a file beside the SQLite database: every worker on one host."""

    @contextlib.contextmanager
    def hold() -> Iterator[None]:
        with open(path, "a") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)

    return hold
