"""The group committer: one thread per worker stores and publishes chat messages, in batches.

A handler only queues its post here and goes back to reading its socket. The committer takes
everything queued, stores it in one transaction under ``Hub.ordered()``, publishes it, writes the
frames out, then takes whatever queued up meanwhile. Under load the batches grow by themselves:
one INSERT, one commit, one backplane event and one write per socket carry many messages, and
no handler thread queues up behind the order lock. With one message in flight it is stored at
once. Whatever concerns the sender alone (an error, the original of a retried ``client_id``)
goes to the sender's socket.
"""

import collections
import itertools
import logging
import threading

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

import protocol
from backplane import BackplaneError
from extensions import db
from models import save_message, save_messages

log = logging.getLogger(__name__)

COMMITS_KEY = "chat_commits"
# Posts waiting at most: past it, handlers wait for room (their clients' sends then back up in
# TCP) rather than let a flood grow the queue without bound.
MAX_WAITING = 10_000
MAX_BATCH = 1_000  # Posts per transaction: a long backlog is stored in several.


class Post:
    """A message waiting for the committer, and what became of it."""

    __slots__ = ("client_id", "conn", "done", "error", "key", "result", "room_id", "text")

    def __init__(self, conn, key, text, client_id):
        self.conn, self.key, self.text, self.client_id = conn, key, text, client_id
        self.room_id = self.result = self.error = None
        self.done = threading.Event()  # Stored and published, or refused: the sender was told.


class GroupCommit:
    """Posts queued by the handlers, and the thread that stores and publishes them."""

    def __init__(self, app, hub):
        self._app = app
        self._hub = hub
        self._changed = threading.Condition()
        self._waiting = collections.deque()
        self._stopping = False
        self._thread = None

    def start(self):
        """Start the committer thread (once; the first socket calls this)."""
        with self._changed:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="chat-commit", daemon=True)
                self._thread.start()

    def stop(self, timeout=5.0):
        """Store what is queued, then stop the thread (a worker exiting, a test's teardown)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def add(self, post, timeout):
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

    def _take(self):
        """The next batch, waiting for one; None once stopped with nothing left."""
        with self._changed:
            self._changed.wait_for(lambda: self._waiting or self._stopping)
            if not self._waiting:
                return None
            count = min(len(self._waiting), MAX_BATCH)
            batch = [self._waiting.popleft() for _ in range(count)]
            self._changed.notify_all()  # Handlers waiting for room.
        return batch

    def _run(self):
        """Store and publish batch after batch, until stopped with nothing left."""
        with self._app.app_context():
            while (batch := self._take()) is not None:
                try:
                    self.commit(batch)
                except Exception:
                    # A bug: its posts were answered "unavailable"; the next batch may fare better.
                    log.exception("a batch of %d messages failed", len(batch))

    def commit(self, batch):
        """Store and publish ``batch`` under the order lock, then answer whoever needs an answer."""
        try:
            with self._hub.ordered():
                _store_and_publish(self._hub, batch)
        except (SQLAlchemyError, BackplaneError) as error:
            # The database, Redis or the order lock failed: no post of the batch may land later.
            db.session.rollback()
            log.exception("could not store or publish %d messages", len(batch))
            for post in batch:
                if post.result is None and post.error is None:
                    post.error = error
        finally:
            db.session.remove()
            for post in batch:
                _answer(post)
                post.done.set()


def _answer(post):
    """Tell the sender what it needs to hear: an error, or the original of a retried message."""
    error = post.error
    if error is None and post.result is None:  # The batch failed on a bug before this post.
        error = RuntimeError("not stored")
    if error is not None and not isinstance(error, protocol.FrameError):
        message = protocol.ERROR_MESSAGES["unavailable"]
        error = protocol.FrameError("unavailable", message, post.client_id)
    if error is not None:
        frame = protocol.error_frame(error.code, error.message, error.client_id, error.retry_after)
        post.conn.send(protocol.encode(frame))
        return
    stored, created = post.result
    if not created:
        post.conn.send(protocol.encode(protocol.message_frame(stored)))


def _store_and_publish(hub, batch):
    """Store a batch of posts in one transaction, then publish each, in id order."""
    accepted = []
    for post in batch:
        # Checked under the lock that membership changes take: no post lands after a leave.
        post.room_id = hub.room_id(post.conn.user_id, post.key)
        if post.room_id is None:
            message = protocol.ERROR_MESSAGES["forbidden"]
            post.error = protocol.FrameError("forbidden", message, post.client_id)
        else:
            accepted.append(post)
    published = 0
    try:
        for post, result in zip(accepted, _store(accepted), strict=True):
            post.result = result
        # Runs of consecutive posts to one room go out as one event: one write per socket.
        for room_id, run in itertools.groupby(accepted, lambda post: post.room_id):
            run = list(run)
            new = [_encoded(post.result[0]) for post in run if post.result[1]]
            if new:
                hub.broadcast_messages(room_id, new)
            published += len(run)
    except Exception as error:
        # Not stored, or stored and not published: a retry (same client_id) sorts it out.
        for post in accepted[published:]:
            post.result, post.error = None, error
        raise


def _encoded(stored):
    """``(id, JSON text)`` of a stored message's frame."""
    return stored["id"], protocol.encode(protocol.message_frame(stored))


def _store(posts):
    """``[(stored, created)]`` for ``posts``: one INSERT and one commit for the whole batch."""
    if not posts:
        return []
    rows = [(p.conn.user_id, p.room_id, p.text, p.client_id, p.key, p.conn.name) for p in posts]
    try:
        return [(stored, True) for stored in save_messages(rows)]
    except IntegrityError:
        # A retried client_id among them: one at a time, each retry finds its original.
        db.session.rollback()
        return [save_message(*row) for row in rows]
