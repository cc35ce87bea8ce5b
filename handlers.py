"""One handler per client frame type. Each checks that the user is in the room it names."""

import itertools
import threading

from flask import current_app
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

import protocol
import rooms
from backplane import BackplaneError
from extensions import db
from models import GENERAL, Room, messages_before, save_message, save_messages
from throttle import message_wait


def handle(hub, conn, command):
    """Run the handler for ``command``; refusals and database failures raise ``FrameError``."""
    try:
        _HANDLERS[type(command)](hub, conn, command)
    except rooms.RoomError as error:
        raise protocol.FrameError(error.code, error.message, command.client_id) from None
    except (SQLAlchemyError, BackplaneError):
        db.session.rollback()
        current_app.logger.exception("database or backplane error for user %s", conn.user_id)
        message = protocol.ERROR_MESSAGES["unavailable"]
        raise protocol.FrameError("unavailable", message, command.client_id) from None


def page(room_id, before, limit=None):
    """A page of a room's messages older than ``before``, oldest first, and whether more exist."""
    limit = limit or current_app.config["CHAT_HISTORY_SIZE"]
    messages = messages_before(room_id, before, limit + 1)
    return messages[-limit:], len(messages) > limit


def _member_room(hub, conn, key, client_id):
    """The id of room ``key`` if the user is in it; ``forbidden`` otherwise, whatever the room."""
    room_id = hub.room_id(conn.user_id, key)
    if room_id is None:
        raise protocol.FrameError("forbidden", protocol.ERROR_MESSAGES["forbidden"], client_id)
    return room_id


def _send(conn, frame):
    conn.send(protocol.encode(frame))


def _entry(hub, room, user_id):
    """The ``room`` frame describing ``room`` to ``user_id``."""
    summary = rooms.summary(room, user_id)
    return {"type": "room", **protocol.room_entry(summary, hub.online(room.id))}


def _post(hub, conn, command):
    """Persist a message, then queue it to the room; a retried ``client_id`` gets the original."""
    key = command.room or conn.current
    config = current_app.config
    wait = message_wait(conn.user_id, config["CHAT_MESSAGE_RATE"], config["CHAT_MESSAGE_BURST"])
    if wait:
        message = protocol.ERROR_MESSAGES["rate_limited"]
        raise protocol.FrameError("rate_limited", message, command.client_id, wait)
    current_app.logger.info("message from user %s (%d chars)", conn.user_id, len(command.text))
    post = _Post(conn, key, command.text, command.client_id)
    commits = current_app.extensions[COMMITS_KEY]
    commits.add(post)
    try:
        with hub.ordered():
            # Group commit: whoever holds the lock stores every post waiting for it in one
            # transaction. Ours is done when we get the lock, by us or by the holder before us.
            batch = commits.take()
            if batch:
                _store_and_publish(hub, batch)
    except (SQLAlchemyError, BackplaneError):
        # The lock itself failed (the database or Redis is down): answer "unavailable", and make
        # sure nobody stores this post later behind the client's back.
        commits.discard(post)
        raise
    if isinstance(post.error, protocol.FrameError):
        raise post.error
    if post.error is not None:  # Logged once, by whoever ran the batch.
        message = protocol.ERROR_MESSAGES["unavailable"]
        raise protocol.FrameError("unavailable", message, command.client_id)
    stored, created = post.result
    if not created:
        conn.send(protocol.encode(protocol.message_frame(stored)))


COMMITS_KEY = "chat_commits"


class _Post:
    """A message waiting for the next group commit, and what became of it."""

    __slots__ = ("client_id", "conn", "error", "key", "result", "room_id", "text")

    def __init__(self, conn, key, text, client_id):
        self.conn, self.key, self.text, self.client_id = conn, key, text, client_id
        self.room_id = self.result = self.error = None


class GroupCommit:
    """Posts waiting for ``Hub.ordered()``: the next holder stores them all at once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waiting = []

    def add(self, post):
        """Queue a post for the next commit."""
        with self._lock:
            self._waiting.append(post)

    def discard(self, post):
        """Forget a post that will not be stored (its lock could not be taken)."""
        with self._lock:
            if post in self._waiting:
                self._waiting.remove(post)

    def take(self):
        """Every post queued so far (the caller holds ``Hub.ordered()``)."""
        with self._lock:
            batch, self._waiting = self._waiting, []
        return batch


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
    except (SQLAlchemyError, BackplaneError) as error:
        db.session.rollback()
        current_app.logger.exception("could not store or publish %d messages", len(accepted))
        for post in accepted[published:]:
            # Not stored, or stored and not published: a retry (same client_id) sorts it out.
            post.error = error
    except Exception as error:
        # A bug: the batch-mates waiting on this thread get "unavailable", not a crash of theirs.
        for post in accepted[published:]:
            post.error = error
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


def _switch(hub, conn, command):
    """Send this socket's plain-text frames to another of the user's rooms."""
    _member_room(hub, conn, command.room, command.client_id)
    conn.current = command.room
    _send(conn, {"type": "switched", "room": command.room, "client_id": command.client_id})


def _create_room(hub, conn, command):
    """Create a public room with its creator in it, and let everyone discover it."""
    with hub.ordered():
        room = rooms.create_room(command.name, conn.user_id)
        hub.subscribe(conn.user_id, room.id, room.key)
        hub.send_to_user(conn.user_id, protocol.encode(_entry(hub, room, conn.user_id)))
        created = {"type": "room_created", "room": room.key, "title": room.title}
        hub.send_to_all(protocol.encode(created))


def _join_room(hub, conn, command):
    """Join a public room; the user's sockets start receiving it and its members see them."""
    with hub.ordered():
        room, joined = rooms.join_public(command.room, conn.user_id)
        if not joined:
            _send(conn, _entry(hub, room, conn.user_id))
            return
        hub.subscribe(conn.user_id, room.id, room.key)
        hub.send_to_user(conn.user_id, protocol.encode(_entry(hub, room, conn.user_id)))
        hub.presence.note(room.id, room.key, conn.user_id, conn.name)


def _leave_room(hub, conn, command):
    """Leave a public room: the user's sockets stop receiving it and its members see them go."""
    with hub.ordered():
        room_id = _member_room(hub, conn, command.room, command.client_id)
        rooms.leave_public(db.session.get(Room, room_id), conn.user_id)
        hub.unsubscribe(conn.user_id, room_id, command.room, GENERAL)
        left = {"type": "room_left", "room": command.room}
        hub.send_to_user(conn.user_id, protocol.encode(left))
        hub.presence.note(room_id, command.room, conn.user_id, conn.name)


def _open_direct(hub, conn, command):
    """Open the direct room with another user; both of them get it in their room list."""
    with hub.ordered():
        known = rooms.find_room(rooms.direct_key(conn.user_id, command.user_id)) is not None
        if not known and not hub.share_a_room(conn.user_id, command.user_id):
            # Only people you can see: stepping through ids must not list every account.
            message = protocol.ERROR_MESSAGES["no_such_user"]
            raise protocol.FrameError("not_found", message, command.client_id)
        room, created = rooms.open_direct(conn.user_id, command.user_id)
        if not created:
            _send(conn, _entry(hub, room, conn.user_id))
            return
        for user_id in (conn.user_id, command.user_id):
            hub.subscribe(user_id, room.id, room.key)
        for user_id in (conn.user_id, command.user_id):
            hub.send_to_user(user_id, protocol.encode(_entry(hub, room, user_id)))


def _history(hub, conn, command):
    """A page of older messages, for a member of the room only."""
    room_id = _member_room(hub, conn, command.room, command.client_id)
    messages, has_more = page(room_id, command.before, command.limit)
    _send(conn, protocol.history_frame(command.room, messages, has_more))


def _typing(hub, conn, command):
    """Relay "is typing" to the room's other members, at most once per interval; never stored."""
    room_id = _member_room(hub, conn, command.room, command.client_id)
    config = current_app.config
    if hub.allow_typing(conn.user_id, room_id, config["CHAT_TYPING_INTERVAL"]):
        frame = protocol.typing_frame(
            command.room, conn.user_id, conn.name, config["CHAT_TYPING_TTL"]
        )
        hub.broadcast(room_id, protocol.encode(frame), exclude_user=conn.user_id)


def _read(hub, conn, command):
    """Move the user's read marker; all their tabs learn it, so unread counts agree."""
    room_id = _member_room(hub, conn, command.room, command.client_id)
    marker = rooms.mark_read(room_id, conn.user_id, command.id)
    hub.send_to_user(
        conn.user_id, protocol.encode({"type": "read", "room": command.room, "id": marker})
    )


_HANDLERS = {
    protocol.ChatMessage: _post,
    protocol.Switch: _switch,
    protocol.CreateRoom: _create_room,
    protocol.JoinRoom: _join_room,
    protocol.LeaveRoom: _leave_room,
    protocol.OpenDirect: _open_direct,
    protocol.History: _history,
    protocol.Typing: _typing,
    protocol.Read: _read,
}
