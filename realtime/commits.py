"""The group committer: one thread per worker stores and publishes chat messages, in batches.

A handler only queues its post here and goes back to reading its socket. The committer takes
everything queued, stores it in one transaction under ``Hub.ordered()``, publishes it, writes the
frames out, then takes whatever queued up meanwhile. Under load the batches grow by themselves:
one INSERT, one commit, one backplane event and one write per socket carry many messages, and
no handler thread queues up behind the order lock. With one message in flight it is stored at
once. Whatever concerns the sender alone (an error, the original of a retried ``client_id``)
goes to the sender's socket.

A message that was stored but could not be published (Redis refused the PUBLISH) is not lost:
it is published before anything newer from this worker, at the next batch or within
``RETRY_PUBLISH`` seconds, and until then nothing new is stored here.
"""

import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Collection
from typing import NamedTuple

from flask import Flask
from flask_babel import force_locale
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from core import messages, rooms, signals
from extensions import db
from files import uploads
from models import MessageRow, save_message, save_messages
from realtime import protocol, stats
from realtime.backplane import BackplaneError
from realtime.hub import Hub
from realtime.protocol import StoredMessage
from realtime.transport.connection import Connection

log = logging.getLogger(__name__)

# Posts waiting at most: past it, handlers wait for room (their clients' sends then back up in
# TCP) rather than let a flood grow the queue without bound.
MAX_WAITING = 10_000
MAX_BATCH = 1_000  # Posts per transaction: a long backlog is stored in several.
RETRY_PUBLISH = 1.0  # Seconds between attempts to publish messages stored but not yet published.

# [(room id, [(message id, encoded frame)])]: stored, not yet published, oldest first.
Unpublished = list[tuple[int, list[tuple[int, str]]]]


class Author(NamedTuple):
    """Who posts without a socket (the REST API, a webhook, a bot): what a socket would know."""

    user_id: int
    name: str
    avatar_url: str | None
    bot: bool = False


class Post:
    """A message waiting for the committer, and what became of it.

    From a socket (``conn``), or from outside one (``author``: the REST API, a webhook): then
    membership is read from the database, under the same lock, and nothing is sent back; the
    caller waits on ``done`` and reads ``result`` or ``error``.
    """

    __slots__ = (
        "attachments", "author", "client_id", "conn", "done", "error", "key", "locale",
        "reply_to", "result", "room_id", "text", "user_id",
    )  # fmt: skip

    def __init__(
        self,
        conn: Connection | Author,
        key: str | None,
        text: str,
        client_id: str | None,
        locale: str | None = None,
        reply_to: int | None = None,
        attachments: tuple[int, ...] = (),
    ) -> None:
        # ``key`` None: the socket has no current room (it is refused as ``forbidden``).
        self.conn: Connection | None = None if isinstance(conn, Author) else conn
        self.author: Author | None = conn if isinstance(conn, Author) else None
        self.user_id = conn.user_id
        self.key, self.text, self.client_id = key, text, client_id
        self.reply_to = reply_to  # A live message of the same room, as the committer checks.
        self.attachments = attachments  # The sender's unposted uploads, as the committer checks.
        self.locale = locale  # The sender's language, for an error told from another thread.
        self.room_id: int | None = None
        self.result: tuple[StoredMessage, bool] | None = None  # (stored, created)
        self.error: Exception | None = None
        self.done = threading.Event()  # Stored and published, or refused: the sender was told.


class GroupCommit:
    """Posts queued by the handlers, and the thread that stores and publishes them."""

    def __init__(self, app: Flask, hub: Hub) -> None:
        self._app = app
        self._hub = hub
        self._changed = threading.Condition()
        self._waiting: collections.deque[Post] = collections.deque()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # [(room id, [(message id, encoded frame)])]: stored, not yet published, oldest first.
        self._unpublished: Unpublished = []

    def start(self) -> None:
        """Start the committer thread (once; the first socket calls this)."""
        with self._changed:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="chat-commit", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Store what is queued, then stop the thread (a worker exiting, a test's teardown)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def waiting(self) -> int:
        """How many posts wait for the committer now."""
        return len(self._waiting)

    def add(self, post: Post, timeout: float | None) -> bool:
        """Queue ``post``; False if the queue stayed full for ``timeout`` seconds, or we stop."""
        with self._changed:
            room = self._changed.wait_for(
                lambda: self._stopping or len(self._waiting) < MAX_WAITING, timeout
            )
            if not room or self._stopping:
                return False
            self._waiting.append(post)
            self._changed.notify_all()
        return True

    def _take(self) -> list[Post] | None:
        """The next batch, waiting for one; None once stopped with nothing left.

        An empty batch when stored messages wait to be published: they are retried alone.
        """
        with self._changed:
            retry = RETRY_PUBLISH if self._unpublished else None
            self._changed.wait_for(lambda: self._waiting or self._stopping, retry)
            if not self._waiting:
                return [] if self._unpublished and not self._stopping else None
            count = min(len(self._waiting), MAX_BATCH)
            batch = [self._waiting.popleft() for _ in range(count)]
            self._changed.notify_all()  # Handlers waiting for room.
        return batch

    def _run(self) -> None:
        """Store and publish batch after batch, until stopped with nothing left."""
        with self._app.app_context():
            while (batch := self._take()) is not None:
                self._commit_safely(batch)
            if self._unpublished:  # Stopping: one last try, rather than none.
                self._commit_safely([])

    def _commit_safely(self, batch: list[Post]) -> None:
        """``_commit``, logging a bug instead of ending the thread."""
        try:
            self._commit(batch)
        except Exception:
            # A bug: its posts were answered "unavailable"; the next batch may fare better.
            log.exception("a batch of %d messages failed", len(batch))

    def _commit(self, batch: list[Post]) -> None:
        """Store and publish ``batch`` under the order lock, then answer whoever needs an answer."""
        started = time.monotonic()
        try:
            with self._hub.ordered():
                # What was stored before and not published goes first: ids stay in order.
                _publish(self._hub, self._unpublished)
                _store_and_publish(self._hub, batch, self._unpublished)
        except (SQLAlchemyError, BackplaneError) as error:
            # Posts not stored are refused ("unavailable"): the client may send them again.
            # Stored ones wait in ``_unpublished``: their senders get them when they go out.
            db.session.rollback()
            if batch:
                log.exception("could not store or publish %d messages", len(batch))
            else:
                log.warning("%d stored messages still not published", len(self._unpublished))
            for post in batch:
                if post.result is None and post.error is None:
                    post.error = error
        finally:
            seconds = time.monotonic() - started
            try:
                db.session.remove()
            finally:
                for post in batch:
                    _answer_safely(self._hub, post)
        if batch:
            stored = sum(1 for post in batch if post.result is not None and post.result[1])
            stats.messages_stored.send(self._hub, posts=len(batch), stored=stored, seconds=seconds)
            _tell_published(self._app, batch)


def _tell_published(app: Flask, batch: list[Post]) -> None:
    """Announce the new messages of a batch (``core.signals.messages_published``); a listener's
    bug is logged, never a reason to refuse the batch (it is stored)."""
    new = [post.result[0] for post in batch if post.result is not None and post.result[1]]
    if not new or not signals.messages_published.receivers:
        return
    try:
        signals.messages_published.send(app, messages=new)
    except Exception:
        log.exception("a listener of messages_published failed")


def _answer_safely(hub: Hub, post: Post) -> None:
    """Answer the sender, and in any case let its handler go on (``handlers.settle``)."""
    try:
        with force_locale(post.locale) if post.locale else contextlib.nullcontext():
            _answer(hub, post)
    except Exception:
        log.exception(
            "could not answer a message of user %s", post.user_id, extra={"user_id": post.user_id}
        )
    finally:
        post.done.set()


def _answer(hub: Hub, post: Post) -> None:
    """Tell the sender what it needs to hear: an error, or the original of a retried message.

    A post from outside a socket is answered by its caller, from ``result`` and ``error``.
    """
    if post.conn is None:
        return
    error, result = post.error, post.result
    if error is None and result is not None:
        stored, created = result
        if not created:
            hub.send(post.conn, protocol.encode(protocol.message_frame(stored)))
        return
    # Refused, or not stored: a database or backplane failure, or a bug in the batch before
    # this post (neither a result nor an error).
    if not isinstance(error, protocol.FrameError):
        message = protocol.ERROR_MESSAGES["unavailable"]
        error = protocol.FrameError("unavailable", message, post.client_id)
    frame = protocol.error_frame(error.code, error.message, error.client_id, error.retry_after)
    hub.send(post.conn, protocol.encode(frame))


def _store_and_publish(hub: Hub, batch: list[Post], unpublished: Unpublished) -> None:
    """Store a batch of posts in one transaction, then publish them, in id order.

    What is stored is queued in ``unpublished`` before publishing, and leaves it once published:
    if the backplane fails midway, the rest is still there to be published later.
    """
    accepted: list[Post] = []
    taken: set[int] = set()  # Uploads claimed by posts before, in this batch.
    archived = rooms.archived_ids()  # One query a batch; archiving takes the same lock.
    for post in batch:
        # Checked under the lock that membership changes take: no post lands after a leave.
        post.room_id = _room_id(hub, post)
        if post.room_id is None:
            message = protocol.ERROR_MESSAGES["forbidden"]
            post.error = protocol.FrameError("forbidden", message, post.client_id)
        elif post.room_id in archived:
            message = protocol.ERROR_MESSAGES["archived"]
            post.error = protocol.FrameError("archived", message, post.client_id)
        elif error := _refused(hub, post, post.room_id, taken):
            post.error = error
        else:
            taken.update(post.attachments)
            accepted.append(post)
    try:
        _store(accepted)
    finally:
        # What was stored, all of the batch or the first posts of a one-by-one fallback that
        # failed midway, is published; the rest is refused and may be sent again. (Every post
        # accepted has a room id: the test only tells the type checker so.)
        stored = [
            (post.room_id, post.result)
            for post in accepted
            if post.room_id is not None and post.result is not None
        ]
        # Runs of consecutive posts to one room go out as one event: one write per socket.
        for room_id, run in itertools.groupby(stored, lambda item: item[0]):
            new = [_encoded(message) for _, (message, created) in run if created]
            if new:
                unpublished.append((room_id, new))
    _publish(hub, unpublished)


def _room_id(hub: Hub, post: Post) -> int | None:
    """The id of the post's room if its author is a member, else None: the hub knows a
    socket's rooms; for a post from outside a socket, the database says (under the same lock)."""
    if post.conn is not None:
        return hub.room_id(post.user_id, post.key)
    return rooms.member_room_id(post.user_id, post.key) if post.key else None


def _room_ids(hub: Hub, post: Post) -> Collection[int]:
    """The ids of the rooms of the post's author (as ``_room_id`` finds them)."""
    if post.conn is not None:
        return hub.room_ids(post.user_id)
    return rooms.member_room_ids(post.user_id)


def _refused(hub: Hub, post: Post, room_id: int, taken: set[int]) -> protocol.FrameError | None:
    """Why a post to a room the sender is in cannot be stored, or None."""
    if post.reply_to is not None and (error := _reply_refused(hub, post, room_id, post.reply_to)):
        return error
    if post.attachments:
        return _attachments_refused(post, taken)
    return None


def _reply_refused(hub: Hub, post: Post, room_id: int, reply_to: int) -> protocol.FrameError | None:
    """Why a reply cannot be posted (its parent is not a live message of its room), or None.

    Here rather than in the handler: the handler runs on the epoll thread, which must not wait
    on the database; under the lock, a parent cannot be deleted between the check and the post.
    """
    try:
        messages.reply_target(reply_to, room_id, _room_ids(hub, post))
    except messages.MessageError as error:
        return protocol.FrameError(error.code, error.message, post.client_id)
    return None


def _attachments_refused(post: Post, taken: set[int]) -> protocol.FrameError | None:
    """Why a post's files cannot be attached (not the sender's unposted uploads), or None.

    Under the lock, as for replies: two posts (on any worker) cannot both take one upload.
    """
    try:
        uploads.check_postable(post.user_id, post.client_id, post.attachments, taken)
    except uploads.NotPostable as error:
        return protocol.FrameError(error.code, error.message, post.client_id)
    return None


def _publish(hub: Hub, unpublished: Unpublished) -> None:
    """Publish stored messages, oldest first; each leaves the list once it is out."""
    while unpublished:
        room_id, messages = unpublished[0]
        hub.broadcast_messages(room_id, messages)
        del unpublished[0]


def _encoded(stored: StoredMessage) -> tuple[int, str]:
    """``(id, JSON text)`` of a stored message's frame."""
    return stored["id"], protocol.encode(protocol.message_frame(stored))


def _store(posts: list[Post]) -> None:
    """Set each post's ``result`` to ``(stored, created)``: one INSERT and one commit for all."""
    if not posts:
        return
    rows = [_row(post) for post in posts]
    try:
        results = [(stored, True) for stored in save_messages(rows)]
    except IntegrityError:
        # A retried client_id among them: one at a time (a commit each), so that each retry
        # finds its original; if one fails, those before it are stored and keep their result.
        db.session.rollback()
        for post, row in zip(posts, rows, strict=True):
            post.result = save_message(*row)
        return
    for post, result in zip(posts, results, strict=True):
        post.result = result


def _row(post: Post) -> MessageRow:
    """The row to insert for an accepted post (one whose room was found)."""
    if post.room_id is None:
        raise ValueError("a post is stored only once its room is known")
    # Like the name, the socket knows the picture: no query per message.
    sender = post.conn if post.conn is not None else post.author
    return MessageRow(
        post.user_id,
        post.room_id,
        post.text,
        post.client_id,
        post.key,
        sender.name if sender is not None else None,
        post.reply_to,
        post.attachments,
        sender.avatar_url if sender is not None else None,
        post.author.bot if post.author is not None else False,
    )
