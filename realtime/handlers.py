"""One handler per client frame type. Each checks that the user is in the room it names."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import SQLAlchemyError

from accounts import invitations
from core import messages, rooms
from core.formatting import format_ts
from core.throttle import message_wait
from extensions import db
from models import GENERAL, PUBLIC, Room, messages_after, messages_before
from previews import changes as previews
from realtime import commits, outside, protocol, room_events
from realtime.backplane import BackplaneError
from realtime.hub import Hub
from realtime.protocol import StoredMessage
from realtime.runtime import current_runtime
from realtime.transport.connection import Connection

# Seconds a handler waits for the committer: for room in its queue, or for this socket's
# messages to be stored before its next command. Past it the database is as good as down.
SETTLE_WAIT = 10.0
MAX_MEMBERS = 1000  # Listed in a ``members`` frame.


def handle(hub: Hub, conn: Connection, command: protocol.Command) -> None:
    """Run the handler for ``command``; refusals and database failures raise ``FrameError``."""
    if not isinstance(command, protocol.ChatMessage) and not settle(conn):
        # Its earlier messages are still not stored: running this first could reorder them.
        message = protocol.ERROR_MESSAGES["unavailable"]
        raise protocol.FrameError("unavailable", message, command.client_id)
    try:
        _HANDLERS[type(command)](hub, conn, command)
    except (rooms.RoomError, messages.MessageError) as error:
        raise protocol.FrameError(error.code, error.message, command.client_id) from None
    except (SQLAlchemyError, BackplaneError):
        db.session.rollback()
        current_app.logger.exception(
            "database or backplane error for user %s", conn.user_id, extra={"user_id": conn.user_id}
        )
        message = protocol.ERROR_MESSAGES["unavailable"]
        raise protocol.FrameError("unavailable", message, command.client_id) from None


def page(
    room_id: int, before: int | None, limit: int | None = None
) -> tuple[Sequence[StoredMessage], bool]:
    """A page of a room's messages older than ``before``, oldest first, and whether more exist."""
    limit = limit or current_app.config["CHAT_HISTORY_SIZE"]
    messages = messages_before(room_id, before, limit + 1)
    return messages[-limit:], len(messages) > limit


def _member_room(hub: Hub, conn: Connection, key: str, client_id: str | None) -> int:
    """The id of room ``key`` if the user is in it; ``forbidden`` otherwise, whatever the room."""
    room_id = hub.room_id(conn.user_id, key)
    if room_id is None:
        raise protocol.FrameError("forbidden", protocol.ERROR_MESSAGES["forbidden"], client_id)
    return room_id


def _send(hub: Hub, conn: Connection, frame: Mapping[str, object]) -> None:
    """Send one frame to the socket that asked."""
    hub.send(conn, protocol.encode(frame))


def _post(hub: Hub, conn: Connection, command: protocol.ChatMessage) -> None:
    """Queue a message for the group committer (``commits.py``), which stores and publishes it."""
    key = command.room or conn.current
    config = current_app.config
    wait = message_wait(conn.user_id, config["CHAT_MESSAGE_RATE"], config["CHAT_MESSAGE_BURST"])
    if wait:
        message = protocol.ERROR_MESSAGES["rate_limited"]
        raise protocol.FrameError("rate_limited", message, command.client_id, wait)
    current_app.logger.info(
        "message from user %s (%d chars)",
        conn.user_id,
        len(command.text),
        extra={"user_id": conn.user_id},
    )
    if len(command.attachments) > config["CHAT_MAX_ATTACHMENTS"]:
        message = _l("A message can carry at most %(n)s files.", n=config["CHAT_MAX_ATTACHMENTS"])
        raise protocol.FrameError("bad_request", message, command.client_id)
    post = commits.Post(
        conn, key, command.text, command.client_id, conn.locale, command.reply_to,
        command.attachments,
    )  # fmt: skip
    if not current_runtime().commits.add(post, SETTLE_WAIT):
        message = protocol.ERROR_MESSAGES["unavailable"]
        raise protocol.FrameError("unavailable", message, command.client_id)
    conn.last_post = post


def settle(conn: Connection) -> bool:
    """Wait until this socket's messages are stored and published (or refused); False if not yet.

    Whatever the client sends after a message is handled after it: a leave must not overtake the
    message before it, nor a socket's departure its last words.
    """
    post = conn.last_post  # None, or the Post that ``_post`` queued.
    if isinstance(post, commits.Post) and not post.done.wait(SETTLE_WAIT):
        current_app.logger.warning(
            "messages of user %s still not stored", conn.user_id, extra={"user_id": conn.user_id}
        )
        return False
    return True


def _switch(hub: Hub, conn: Connection, command: protocol.Switch) -> None:
    """Send this socket's plain-text frames to another of the user's rooms."""
    _member_room(hub, conn, command.room, command.client_id)
    conn.current = command.room
    _send(hub, conn, {"type": "switched", "room": command.room, "client_id": command.client_id})


def _create_room(hub: Hub, conn: Connection, command: protocol.CreateRoom) -> None:
    """Create a room with its creator in it; everyone may discover a public one."""
    with hub.ordered():
        room = rooms.create_room(command.name, conn.user_id, command.private)
        hub.subscribe(conn.user_id, room.id, room.key)
        hub.send_to_user(
            conn.user_id, protocol.encode(room_events.entry_frame(hub, room, conn.user_id))
        )
        if room.kind == PUBLIC:
            created = {"type": "room_created", "room": room.key, "title": room.title}
            hub.send_to_all(protocol.encode(created))


def _join_room(hub: Hub, conn: Connection, command: protocol.JoinRoom) -> None:
    """Join a public room; the user's sockets start receiving it and its members see them."""
    with hub.ordered():
        room, joined = rooms.join_public(command.room, conn.user_id)
        if not joined:
            _send(hub, conn, room_events.entry_frame(hub, room, conn.user_id))
            return
        hub.subscribe(conn.user_id, room.id, room.key)
        hub.send_to_user(
            conn.user_id, protocol.encode(room_events.entry_frame(hub, room, conn.user_id))
        )
        hub.presence.note(room.id, room.key, conn.user_id, conn.name)


def _leave_room(hub: Hub, conn: Connection, command: protocol.LeaveRoom) -> None:
    """Leave a room: the user's sockets stop receiving it and its members see them go."""
    with hub.ordered():
        room = _room_of_member(hub, conn, command.room, command.client_id)
        rooms.leave_room(room, conn.user_id)
        hub.unsubscribe(conn.user_id, room.id, room.key, GENERAL)
        left = {"type": "room_left", "room": room.key}
        hub.send_to_user(conn.user_id, protocol.encode(left))
        hub.presence.note(room.id, room.key, conn.user_id, conn.name)


def _room_of_member(hub: Hub, conn: Connection, key: str, client_id: str | None) -> Room:
    """Room ``key``, which the user is in (``forbidden`` otherwise, whatever the room)."""
    return db.session.get_one(Room, _member_room(hub, conn, key, client_id))


def _managed_room(hub: Hub, conn: Connection, key: str) -> Room:
    """Room ``key`` as someone who may manage it sees it: an administrator also manages public
    rooms they are not in; a private or direct room is hidden from every outsider."""
    if (room_id := hub.room_id(conn.user_id, key)) is not None:
        return db.session.get_one(Room, room_id)
    room = rooms.find_room(key)
    if room is None or room.kind != PUBLIC:
        raise rooms.hidden(key)
    return room


def _remove_member(hub: Hub, conn: Connection, command: protocol.RemoveMember) -> None:
    """The room's creator or an administrator takes someone out: for them it is as if they had
    left it (``room_left``, with who removed them); its members see them go."""
    with hub.ordered():
        room = _managed_room(hub, conn, command.room)
        target = rooms.remove_member(room, command.user_id, conn.user_id)
        hub.unsubscribe(target.id, room.id, room.key, GENERAL)
        left = {"type": "room_left", "room": room.key, "removed_by": conn.user_id}
        hub.send_to_user(target.id, protocol.encode(left))
        hub.presence.note(room.id, room.key, target.id, target.name)
        done = {"type": "member_removed", "room": room.key, "user_id": target.id}
        _send(hub, conn, {**done, "client_id": command.client_id})


def _invite(hub: Hub, conn: Connection, command: protocol.Invite) -> None:
    """A member brings someone in: their open tabs get the room at once."""
    with hub.ordered():
        room = _room_of_member(hub, conn, command.room, command.client_id)
        target, added = rooms.invite(room, command.user_id, conn.user_id)
        if added:
            room_events.tell_added(hub, room, target.id, conn.user_id)
        done = {"type": "invited", "room": room.key, "user_id": target.id, "added": added}
        _send(hub, conn, {**done, "client_id": command.client_id})


def _invite_link(hub: Hub, conn: Connection, command: protocol.InviteLink) -> None:
    """A member gets a link that lets people into the room (shown once)."""
    room = _room_of_member(hub, conn, command.room, command.client_id)
    link = invitations.room_link(room, conn.user_id, command.days, command.uses)
    frame = {
        "type": "invite_link",
        "room": room.key,
        "url": _path("accounts.join", secret=link.secret),
        "expires_at": format_ts(link.expires_at) if link.expires_at else None,
        "max_uses": link.max_uses,
        "client_id": command.client_id,
    }
    _send(hub, conn, frame)


def _notify(hub: Hub, conn: Connection, command: protocol.Notify) -> None:
    """Choose what tells the user about a room's new messages; all their tabs learn it."""
    room = _room_of_member(hub, conn, command.room, command.client_id)
    level = rooms.set_notify(room, conn.user_id, command.level)
    frame = {"type": "notify", "room": room.key, "level": level, "client_id": command.client_id}
    hub.send_to_user(conn.user_id, protocol.encode(frame))


def _path(endpoint: str, **values: str) -> str:
    """A page's path: sockets have no request context, so ``url_for`` is not at hand."""
    root = current_app.config["APPLICATION_ROOT"]
    return current_app.url_map.bind("localhost", script_name=root).build(endpoint, values)


def _update_room(hub: Hub, conn: Connection, command: protocol.UpdateRoom) -> None:
    """Rename a room or set its topic; everyone who can see it learns it."""
    with hub.ordered():
        room = _room_of_member(hub, conn, command.room, command.client_id)
        change = rooms.Update(command.title, command.topic)
        if rooms.update_room(room, change, conn.user_id):
            room_events.tell_updated(hub, room, conn.user_id, command.client_id)
        else:  # Nothing changed: the asking socket alone hears so.
            _send(hub, conn, room_events.updated_frame(room, conn.user_id, command.client_id))


def _archive_room(hub: Hub, conn: Connection, command: protocol.ArchiveRoom) -> None:
    """Archive a room (read-only, still searchable) or make it writable again."""
    with hub.ordered():
        room = _managed_room(hub, conn, command.room)
        if rooms.set_archived(room, command.archived, conn.user_id):
            room_events.tell_updated(hub, room, conn.user_id, command.client_id)
        else:
            _send(hub, conn, room_events.updated_frame(room, conn.user_id, command.client_id))


def _open_direct(hub: Hub, conn: Connection, command: protocol.OpenDirect) -> None:
    """Open the direct room with another user; both of them get it in their room list."""
    with hub.ordered():
        known = rooms.find_room(rooms.direct_key(conn.user_id, command.user_id)) is not None
        if not known and not hub.share_a_room(conn.user_id, command.user_id):
            # Only people you can see: stepping through ids must not list every account.
            message = protocol.ERROR_MESSAGES["no_such_user"]
            raise protocol.FrameError("not_found", message, command.client_id)
        room, created = rooms.open_direct(conn.user_id, command.user_id)
        if not created:
            _send(hub, conn, room_events.entry_frame(hub, room, conn.user_id))
            return
        for user_id in (conn.user_id, command.user_id):
            hub.subscribe(user_id, room.id, room.key)
        for user_id in (conn.user_id, command.user_id):
            hub.send_to_user(user_id, protocol.encode(room_events.entry_frame(hub, room, user_id)))


def _change(hub: Hub, conn: Connection, command: protocol.Edit | protocol.Delete) -> None:
    """Edit or delete one's message; the room sees it changed (a no-op: the sender alone)."""
    with hub.ordered():
        message = messages.find(command.id, hub.room_ids(conn.user_id))
        if isinstance(command, protocol.Edit):
            window = current_app.config["CHAT_EDIT_WINDOW"]
            changed = messages.edit(message, conn.user_id, command.text, command.client_id, window)
        else:
            changed = messages.remove(message, conn.user_id, command.client_id)
        _announce(hub, conn, changed, command.client_id)


def _react(hub: Hub, conn: Connection, command: protocol.React) -> None:
    """Add or take back an emoji; the room sees the message's reactions as they are now."""
    with hub.ordered():
        message = messages.find(command.id, hub.room_ids(conn.user_id))
        change = messages.react if command.add else messages.unreact
        _announce(
            hub,
            conn,
            change(message, conn.user_id, command.emoji, command.client_id),
            command.client_id,
        )


def _unpreview(hub: Hub, conn: Connection, command: protocol.Unpreview) -> None:
    """Its author takes the link preview off a message; the room sees it go."""
    with hub.ordered():
        message = messages.find(command.id, hub.room_ids(conn.user_id))
        changed = previews.remove(message, conn.user_id, command.client_id)
        _announce(hub, conn, changed, command.client_id)


def _announce(hub: Hub, conn: Connection, changed: messages.Changed, client_id: str | None) -> None:
    """Publish a change to the message's room, in the order of changes (we hold the lock); a
    change that changed nothing goes to the sender alone, as its confirmation."""
    frame = outside.publish_change(hub, changed, conn.user_id, client_id)
    if changed.change is None:
        hub.send(conn, protocol.encode(frame))


def _members(hub: Hub, conn: Connection, command: protocol.Members) -> None:
    """The people in a room, for a member of it."""
    room_id = _member_room(hub, conn, command.room, command.client_id)
    people: list[protocol.Person] = [
        {"id": user_id, "name": name, "avatar_url": avatar}
        for user_id, name, avatar in rooms.members(room_id, MAX_MEMBERS)
    ]
    _send(hub, conn, protocol.members_frame(command.room, people))


def _who(hub: Hub, conn: Connection, command: protocol.Who) -> None:
    """Everyone online in a room, for a member of it (a room entry lists the first only)."""
    room_id = _member_room(hub, conn, command.room, command.client_id)
    _send(hub, conn, protocol.online_frame(command.room, hub.online(room_id)))


def _history(hub: Hub, conn: Connection, command: protocol.History) -> None:
    """A page of messages, for a member of the room only: older ones, newer ones, or a window
    around one message (which replaces what the client shows of the room)."""
    room_id = _member_room(hub, conn, command.room, command.client_id)
    limit = command.limit
    if command.around is not None:
        older, has_more = page(room_id, command.around + 1, (limit + 1) // 2)  # It, and before.
        newer = messages_after(room_id, command.around, limit - len(older) + 1)
        window = [*older, *newer[: limit - len(older)]]
        has_newer = len(newer) > limit - len(older)
        frame = protocol.history_frame(command.room, window, has_more, True, has_newer)
    elif command.after is not None:
        newer = messages_after(room_id, command.after, limit + 1)
        frame = protocol.history_frame(
            command.room, newer[:limit], False, False, len(newer) > limit
        )
    else:
        messages, has_more = page(room_id, command.before, limit)
        frame = protocol.history_frame(command.room, messages, has_more)
    _send(hub, conn, frame)


def _typing(hub: Hub, conn: Connection, command: protocol.Typing) -> None:
    """Relay "is typing" to the room's other members, at most once per interval; never stored."""
    room_id = _member_room(hub, conn, command.room, command.client_id)
    config = current_app.config
    if hub.allow_typing(conn.user_id, room_id, config["CHAT_TYPING_INTERVAL"]):
        frame = protocol.typing_frame(
            command.room, conn.user_id, conn.name, config["CHAT_TYPING_TTL"]
        )
        hub.broadcast(room_id, protocol.encode(frame), exclude_user=conn.user_id)


def _read(hub: Hub, conn: Connection, command: protocol.Read) -> None:
    """Move the user's read marker; all their tabs learn it, so unread counts agree."""
    room_id = _member_room(hub, conn, command.room, command.client_id)
    marker = rooms.mark_read(room_id, conn.user_id, command.id)
    hub.send_to_user(
        conn.user_id, protocol.encode({"type": "read", "room": command.room, "id": marker})
    )


def _visibility(hub: Hub, conn: Connection, command: protocol.Visibility) -> None:
    """The page became visible or hidden: Web Push asks the hub (no answer: like typing)."""
    hub.set_visible(conn, command.visible)


_C = TypeVar("_C", bound=protocol.Command)
# A handler takes the command type it is filed under (``_filed`` checks it): Any stands for it.
_Handler = Callable[[Hub, Connection, Any], None]


def _filed(kind: type[_C], handler: Callable[[Hub, Connection, _C], None]) -> tuple[type, _Handler]:
    """An entry of ``_HANDLERS``: ``handler`` runs commands of type ``kind``."""
    return kind, handler


_HANDLERS: dict[type, _Handler] = dict(
    [
        _filed(protocol.ChatMessage, _post),
        _filed(protocol.Switch, _switch),
        _filed(protocol.CreateRoom, _create_room),
        _filed(protocol.JoinRoom, _join_room),
        _filed(protocol.LeaveRoom, _leave_room),
        _filed(protocol.RemoveMember, _remove_member),
        _filed(protocol.Invite, _invite),
        _filed(protocol.InviteLink, _invite_link),
        _filed(protocol.UpdateRoom, _update_room),
        _filed(protocol.ArchiveRoom, _archive_room),
        _filed(protocol.Notify, _notify),
        _filed(protocol.OpenDirect, _open_direct),
        _filed(protocol.History, _history),
        _filed(protocol.Typing, _typing),
        _filed(protocol.Read, _read),
        _filed(protocol.Edit, _change),
        _filed(protocol.Delete, _change),
        _filed(protocol.React, _react),
        _filed(protocol.Unpreview, _unpreview),
        _filed(protocol.Members, _members),
        _filed(protocol.Who, _who),
        _filed(protocol.Visibility, _visibility),
    ]
)
