"""Rooms and memberships in the database: public and private rooms, direct messages, unread
counts, and what members, creators and administrators may do to a room."""

import re
import secrets
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from typing import TypedDict

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from sqlalchemy import BindParameter, Integer, ScalarSelect, and_, bindparam, func, select
from sqlalchemy.exc import IntegrityError

from core.audit import audit
from core.text import has_control_characters
from extensions import db
from models import (
    DIRECT,
    GENERAL,
    NOTIFY_ALL,
    NOTIFY_LEVELS,
    NOTIFY_MENTIONS,
    PRIVATE,
    PUBLIC,
    Attachment,
    Membership,
    Mention,
    Message,
    Room,
    User,
    ensure_general,
    utcnow,
)

# 1 to 32 Latin letters (accents welcome), digits, "-" or "_", starting with a letter or digit.
# One script only, so that no room can pass for another with look-alike letters ("general" with
# a Cyrillic U+0435 for its "e"); keys are NFKC-normalized and case-folded ("Straße" = "STRASSE").
_LATIN = "A-Za-z0-9\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u017f"
ROOM_NAME = re.compile(f"[{_LATIN}][{_LATIN}_-]{{0,31}}")


class RoomSummary(TypedDict):
    """One of a user's rooms as the page lists it (``summaries``)."""

    id: int
    room: str  # The key.
    title: str  # A direct room's is the other person's display name.
    kind: str  # PUBLIC, PRIVATE or DIRECT
    topic: str
    archived: bool
    created_by: int | None
    notify: str  # What tells the user about new messages here (``notify_level``).
    unread: int  # Messages by others after the user's read marker.
    mentions: int  # Of them, those that mention the user.
    last_id: int  # The room's newest message id, 0 when it has none.
    last_read_id: int


class PublicRoom(TypedDict):
    """A public room as the list to discover them shows it (``public_rooms``)."""

    room: str
    title: str
    members: int


def room_key(name: str) -> str:
    """The key a room name is known by: NFKC-normalized and case-folded."""
    return unicodedata.normalize("NFKC", name).casefold()


MAX_TOPIC_CHARS = 250
PRIVATE_PREFIX = "p:"  # A private room's key: this and random characters, so names leak nothing.
DIRECT_PREFIX = "dm:"

# Lazy: translated when an error frame is built, in the language of that socket's user.
FORBIDDEN = _l("You are not in this room.")
ARCHIVED = _l("This room is archived: it can be read and searched, not changed.")
NOT_MANAGER = _l("Only the room's creator or an administrator can do this.")
BAD_ROOM_NAME = _l(
    "Room names are 1 to 32 letters, digits, '-' or '_', starting with a letter or a digit."
)
NO_SUCH_USER = _l("No such user is online in any of your rooms.")


class RoomError(Exception):
    """A room operation that cannot be done; ``code`` becomes an error frame's code."""

    def __init__(self, code: str, message: str | LazyString) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_room_name(value: str) -> str:
    """A room name as it is kept (NFKC), if it keeps the rules; ``bad_room_name`` otherwise."""
    value = unicodedata.normalize("NFKC", value.strip())
    if not ROOM_NAME.fullmatch(value):
        raise RoomError("bad_room_name", BAD_ROOM_NAME)
    return value


def clean_topic(topic: str) -> str:
    """A topic as it is kept: one line (the header shows it under the name), checked."""
    if has_control_characters(topic):
        raise RoomError("bad_text", _l("A topic cannot hold control characters."))
    topic = " ".join(topic.split())
    if len(topic) > MAX_TOPIC_CHARS:
        raise RoomError("too_long", _l("A topic is at most %(n)s characters.", n=MAX_TOPIC_CHARS))
    return topic


def direct_key(user_id: int, other_id: int) -> str:
    """The key of the direct-message room between two users, the same from both sides."""
    low, high = sorted((user_id, other_id))
    return f"dm:{low}:{high}"


def find_room(key: str) -> Room | None:
    """The room with ``key``, or None."""
    return db.session.scalar(select(Room).where(Room.key == key))


def is_member(room_id: int, user_id: int) -> bool:
    """Tell whether the user is in the room."""
    return db.session.get(Membership, (room_id, user_id)) is not None


def join_general(user_id: int) -> int:
    """Make sure the user is in ``general``; return its id."""
    # Every greeting asks: one query answers for everyone but a first-time user.
    room_id = member_room_id(user_id, GENERAL)
    if room_id is not None:
        return room_id
    room_id = ensure_general()
    _add_member(room_id, user_id)
    return room_id


def _add_member(room_id: int, user_id: int) -> bool:
    """Add a membership; return False if it already existed."""
    if is_member(room_id, user_id):
        return False
    db.session.add(Membership(room_id=room_id, user_id=user_id))
    try:
        db.session.commit()
    except IntegrityError:  # Joined from another tab at the same moment.
        db.session.rollback()
        return False
    return True


def create_room(name: str, user_id: int, private: bool = False) -> Room:
    """Create a room named ``name`` with its creator in it; return the room.

    A public room's key is its name's (unique); a private room's is random, and its name need
    not be unique: refusing a name would tell that a private room has it.
    """
    if private:
        key = PRIVATE_PREFIX + secrets.token_hex(6)  # Lower case: keys are case-folded.
        room = Room(key=key, title=name, kind=PRIVATE, created_by=user_id)
    else:
        _check_name_free(name, None)
        room = Room(key=room_key(name), title=name, kind=PUBLIC, created_by=user_id)
    db.session.add(room)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise _name_taken(name) from None
    db.session.add(Membership(room_id=room.id, user_id=user_id))
    db.session.commit()
    return room


def _name_taken(name: str) -> RoomError:
    return RoomError("name_taken", _l("A room named “%(name)s” already exists.", name=name))


def _check_name_free(name: str, room_id: int | None) -> None:
    """A public name must not be what another public room goes by, key or (renamed) name."""
    key = room_key(name)
    others = db.session.execute(
        select(Room.id, Room.key, Room.title).where(Room.kind == PUBLIC)
    ).all()
    for other_id, other_key, title in others:
        if other_id != room_id and key in (other_key, room_key(title)):
            raise _name_taken(name)


def hidden(key: str) -> RoomError:
    """The answer to an outsider about a room they may not see: the same whether it exists."""
    if key.startswith((DIRECT_PREFIX, PRIVATE_PREFIX)):
        return RoomError("forbidden", FORBIDDEN)
    return RoomError("not_found", _l("There is no room named “%(name)s”.", name=key))


def join_public(key: str, user_id: int) -> tuple[Room, bool]:
    """Join the public room ``key``; return ``(room, newly_joined)``. A member of a private
    room "joins" it again (the page asks so after a link); an outsider is ``forbidden``."""
    room = find_room(key)
    if room is None or room.kind == DIRECT:
        raise hidden(key)
    if room.kind == PRIVATE:
        if not is_member(room.id, user_id):
            raise hidden(key)
        return room, False
    if room.archived_at is not None and not is_member(room.id, user_id):
        raise RoomError("archived", ARCHIVED)
    return room, _add_member(room.id, user_id)


def leave_room(room: Room, user_id: int) -> None:
    """Leave a public or private room other than ``general`` (a private room stays, even
    empty: an administrator may delete it)."""
    if room.key == GENERAL or room.kind == DIRECT:
        raise RoomError("bad_request", _l("You cannot leave this room."))
    membership = db.session.get(Membership, (room.id, user_id))
    if membership is not None:
        db.session.delete(membership)
        db.session.commit()


def _actor(actor_id: int | None) -> User | None:
    """The person acting, or None for the shell; an id no account has is refused (it must
    never pass for the shell and its full rights)."""
    if actor_id is None:
        return None
    actor = db.session.get(User, actor_id)
    if actor is None:
        raise RoomError("forbidden", NOT_MANAGER)
    return actor


def may_manage(room: Room, actor: User | None) -> bool:
    """Whether ``actor`` (None: the shell) may rename, archive or remove people from ``room``."""
    return actor is None or actor.is_admin or (room.created_by == actor.id and actor.is_active)


def _managed(room: Room, actor_id: int | None) -> User | None:
    """Check that ``actor_id`` manages ``room``; the actor (None: the shell)."""
    actor = _actor(actor_id)
    if not may_manage(room, actor):
        raise RoomError("forbidden", NOT_MANAGER)
    return actor


def _audit_if_admin(actor: User | None, room: Room, action: str, details: str) -> None:
    """Log what an administrator (or the shell) did to a room that is not their own."""
    if actor is None or (actor.is_admin and room.created_by != actor.id):
        audit(actor.id if actor else None, action, "room", room.id, details)


def remove_member(room: Room, user_id: int, actor_id: int | None) -> User:
    """The room's creator or an administrator takes ``user_id`` out of ``room`` (audited for
    an administrator); the person removed."""
    actor = _managed(room, actor_id)
    if room.kind == DIRECT:
        raise RoomError("bad_request", _l("Nobody can be removed from a direct conversation."))
    if room.key == GENERAL:
        raise RoomError("bad_request", _l("Everyone is in general: deactivate the account."))
    membership = db.session.get(Membership, (room.id, user_id))
    target = db.session.get(User, user_id)
    if membership is None or target is None:
        raise RoomError("not_found", _l("That person is not in this room."))
    db.session.delete(membership)
    _audit_if_admin(actor, room, "remove_member", f"{room.title}: {target.name} ({target.email})")
    db.session.commit()
    return target


def invite(room: Room, user_id: int, actor_id: int) -> tuple[User, bool]:
    """A member of ``room`` brings ``user_id`` in; ``(the person, newly added)``.

    Only someone the member can already see (who shares a room with them): stepping through
    ids must not list every account.
    """
    if room.kind == DIRECT:
        raise RoomError("bad_request", _l("Nobody can be invited to a direct conversation."))
    if room.archived_at is not None:
        raise RoomError("archived", ARCHIVED)
    target = db.session.get(User, user_id)
    if target is None or not target.is_active or not _share_a_room(actor_id, user_id):
        raise RoomError("not_found", NO_SUCH_USER)
    return target, _add_member(room.id, user_id)


def _share_a_room(user_id: int, other_id: int) -> bool:
    mine = select(Membership.room_id).where(Membership.user_id == user_id)
    shared = select(Membership.room_id).where(
        Membership.user_id == other_id, Membership.room_id.in_(mine)
    )
    return db.session.scalar(shared.limit(1)) is not None


def add_members(room: Room, user_ids: list[int]) -> list[int]:
    """Put people in ``room`` (an invitation link's use); those newly added."""
    return [user_id for user_id in user_ids if _add_member(room.id, user_id)]


@dataclass(frozen=True)
class Update:
    """What an ``update_room`` changes; None leaves it as it is."""

    title: str | None = None
    topic: str | None = None


def update_room(room: Room, change: Update, actor_id: int | None) -> bool:
    """Rename ``room`` (creator or administrator) and/or set its topic (any member, checked by
    the caller); whether anything changed."""
    if room.kind == DIRECT:
        raise RoomError("bad_request", _l("A direct conversation has no name or topic to set."))
    if room.archived_at is not None:
        raise RoomError("archived", ARCHIVED)
    changed = False
    if change.title is not None and change.title != room.title:
        actor = _managed(room, actor_id)
        if room.key == GENERAL and change.title.casefold() != GENERAL:
            raise RoomError("bad_request", _l("general keeps its name."))
        if room.kind == PUBLIC:
            _check_name_free(change.title, room.id)
        _audit_if_admin(actor, room, "rename_room", f"{room.title} → {change.title}")
        room.title = change.title
        changed = True
    topic = clean_topic(change.topic) if change.topic is not None else None
    if topic is not None and topic != room.topic:
        room.topic = topic
        changed = True
    if changed:
        db.session.commit()
    return changed


def set_archived(room: Room, archived: bool, actor_id: int | None) -> bool:
    """Archive ``room`` (read-only, still searchable) or make it writable again; whether it
    changed."""
    actor = _managed(room, actor_id)
    if room.key == GENERAL or room.kind == DIRECT:
        raise RoomError("bad_request", _l("This room cannot be archived."))
    if (room.archived_at is not None) == archived:
        return False
    room.archived_at = utcnow() if archived else None
    _audit_if_admin(actor, room, "archive_room" if archived else "unarchive_room", room.title)
    db.session.commit()
    return True


@dataclass(frozen=True)
class Deleted:
    """A room just deleted: what the sockets and the file store must forget."""

    room_id: int
    key: str
    kind: str
    member_ids: list[int]
    file_keys: list[str]  # In the file store: attachments and their thumbnails.


def delete_room(room: Room, actor_id: int | None) -> Deleted:
    """An administrator deletes ``room`` with its messages and what hangs on them (audited);
    the caller deletes its files from the store once this committed."""
    actor = _actor(actor_id)
    if actor is not None and not actor.is_admin:
        raise RoomError("forbidden", _l("Only administrators can delete a room."))
    if room.key == GENERAL or room.kind == DIRECT:
        raise RoomError("bad_request", _l("This room cannot be deleted."))
    files = db.session.execute(
        select(Attachment.key, Attachment.thumbnail_key)
        .join(Message, Message.id == Attachment.message_id)
        .where(Message.room_id == room.id)
    ).all()
    keys = sorted({key for pair in files for key in pair if key is not None})
    gone = Deleted(room.id, room.key, room.kind, member_ids(room.id), keys)
    audit(actor_id, "delete_room", "room", room.id, f"{room.title} ({room.key})")
    # The database cascades to memberships, messages and all that hangs on them.
    db.session.delete(room)
    db.session.commit()
    return gone


def open_direct(user_id: int, other_id: int) -> tuple[Room, bool]:
    """The direct room between two users, created with both in it if new; ``(room, created)``."""
    if other_id == user_id:
        raise RoomError("bad_request", _l("You cannot open a direct conversation with yourself."))
    other = db.session.get(User, other_id)
    if other is None or not other.is_active:  # A deactivated account takes no new threads.
        raise RoomError("not_found", NO_SUCH_USER)
    key = direct_key(user_id, other_id)
    room = find_room(key)
    if room is not None:
        return room, False
    room = Room(key=key, title=key, kind=DIRECT)
    db.session.add(room)
    try:
        db.session.flush()
        db.session.add_all(
            [Membership(room_id=room.id, user_id=uid) for uid in (user_id, other_id)]
        )
        db.session.commit()
    except IntegrityError:  # The other user opened it at the same moment.
        db.session.rollback()
        return db.session.execute(select(Room).where(Room.key == key)).scalar_one(), False
    return room, True


def mark_read(room_id: int, user_id: int, message_id: int) -> int:
    """Move the user's read marker forward, never past the room's last message; return it."""
    membership = db.session.get(Membership, (room_id, user_id))
    if membership is None:
        raise RoomError("forbidden", FORBIDDEN)
    last = db.session.scalar(select(func.max(Message.id)).where(Message.room_id == room_id)) or 0
    target = min(message_id, last)
    if target > membership.last_read_id:
        membership.last_read_id = target
        db.session.commit()
    return membership.last_read_id


def notify_level(kind: str, chosen: str | None) -> str:
    """What tells a member about new messages: their choice, else every message of a direct
    room and the mentions elsewhere."""
    if chosen is not None:
        return chosen
    return NOTIFY_ALL if kind == DIRECT else NOTIFY_MENTIONS


def set_notify(room: Room, user_id: int, level: str) -> str:
    """Store what tells ``user_id`` about new messages in ``room``; the level now."""
    if level not in NOTIFY_LEVELS:
        raise RoomError("bad_request", _l("A notification level is all, mentions or nothing."))
    membership = db.session.get(Membership, (room.id, user_id))
    if membership is None:
        raise RoomError("forbidden", FORBIDDEN)
    membership.notify = level
    db.session.commit()
    return level


# Prebuilt statements for what every greeting reads (``summaries``, ``members_rooms``): built
# and keyed for SQLAlchemy's statement cache once, run on the session's connection without ORM
# objects. A storm greets thousands at once, and that Python is what each greeting costs.
_USER: BindParameter[int] = bindparam("user_id", type_=Integer)
_UP_TO: BindParameter[int] = bindparam("up_to", type_=Integer)
# ``up_to`` when the caller wants every message: the largest id an INTEGER column holds on
# every engine (PostgreSQL refuses a bigger parameter for one: "integer out of range").
_ANY_ID = 2**31 - 1


def _unread_since_marker(mentioning: bool) -> ScalarSelect[int]:
    """Messages by others after the member's read marker, up to ``up_to``, in the room of the
    enclosing membership; with ``mentioning``, only those that mention the user."""
    query = select(func.count(Message.id)).where(
        Message.room_id == Membership.room_id,
        Message.id > Membership.last_read_id,
        Message.id <= _UP_TO,
        Message.user_id != _USER,
    )
    if mentioning:  # A deleted message has lost its mentions.
        query = query.join(
            Mention, and_(Mention.message_id == Message.id, Mention.user_id == _USER)
        )
    return query.correlate(Membership).scalar_subquery()


_SUMMARIES = (
    select(
        Room.id,
        Room.key,
        Room.title,
        Room.kind,
        Room.topic,
        Room.archived_at,
        Room.created_by,
        Membership.notify,
        Membership.last_read_id,
        _unread_since_marker(mentioning=False),
        _unread_since_marker(mentioning=True),
        select(func.max(Message.id))
        .where(Message.room_id == Room.id, Message.id <= _UP_TO)
        .correlate(Room)
        .scalar_subquery(),
    )
    .join(Membership, Membership.room_id == Room.id)
    .where(Membership.user_id == _USER)
    .order_by(Room.kind.desc(), Room.key)
)


def summaries(user_id: int, up_to: int | None = None) -> list[RoomSummary]:
    """The user's rooms as the page lists them: title, kind, unread count and last message id
    (one query, and one more for the names of the other people of direct rooms).

    With ``up_to``, as of message ``up_to``: a greeting's, whose later messages arrive live.
    """
    params = {"user_id": user_id, "up_to": _ANY_ID if up_to is None else up_to}
    rows = db.session.connection().execute(_SUMMARIES, params).all()
    direct = any(row.kind == DIRECT for row in rows)
    partners = direct_partners(user_id) if direct else {}
    return [
        {
            "id": room_id,
            "room": key,
            "title": partners.get(room_id, title),
            "kind": kind,
            "topic": topic,
            "archived": archived_at is not None,
            "created_by": created_by,
            "notify": notify_level(kind, chosen),
            "unread": unread,
            "mentions": mentions,
            "last_id": last_id or 0,
            "last_read_id": last_read,
        }
        for (
            room_id,
            key,
            title,
            kind,
            topic,
            archived_at,
            created_by,
            chosen,
            last_read,
            unread,
            mentions,
            last_id,
        ) in rows
    ]


def summary(room: Room, user_id: int) -> RoomSummary:
    """One room's summary for ``user_id``."""
    return next(item for item in summaries(user_id) if item["id"] == room.id)


def members(room_id: int, limit: int) -> list[tuple[int, str, str | None]]:
    """``[(user id, name, avatar url)]`` of up to ``limit`` active people in a room, sorted by
    name (the page suggests mentions from them, and draws their pictures in its lists)."""
    users = db.session.scalars(
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.room_id == room_id, User.deactivated_at.is_(None))
        .order_by(User.id)
    ).all()
    people = sorted(
        ((user.id, user.name, user.avatar_url) for user in users),
        key=lambda p: (p[1].casefold(), p[0]),
    )
    return people[:limit]


def direct_partners(user_id: int) -> dict[int, str]:
    """For each of the user's direct rooms, the other person's display name."""
    mine = select(Membership.room_id).where(Membership.user_id == user_id)
    rows = db.session.execute(
        select(Membership.room_id, User)
        .join(User, User.id == Membership.user_id)
        .join(Room, Room.id == Membership.room_id)
        .where(Room.kind == DIRECT, Membership.room_id.in_(mine), Membership.user_id != user_id)
    )
    return {room_id: user.name for room_id, user in rows}


_PUBLIC_ROOMS = (
    select(Room.key, Room.title, func.count(Membership.user_id))
    .outerjoin(Membership, Membership.room_id == Room.id)
    .where(Room.kind == PUBLIC, Room.archived_at.is_(None))  # Archived ones take nobody.
    .group_by(Room.id)
    .order_by(Room.key)
)


def public_rooms() -> list[PublicRoom]:
    """Every public room that is not archived, with its number of members, for people to
    discover and join."""
    rows = db.session.connection().execute(_PUBLIC_ROOMS)
    return [{"room": key, "title": title, "members": count} for key, title, count in rows]


def rooms_of_member(keys: list[str], user_id: int) -> list[Room]:
    """Those of rooms ``keys`` that ``user_id`` is in."""
    mine = select(Membership.room_id).where(Membership.user_id == user_id)
    return list(db.session.scalars(select(Room).where(Room.key.in_(keys), Room.id.in_(mine))))


_MEMBER_ROOM_ID = (
    select(Room.id)
    .join(Membership, Membership.room_id == Room.id)
    .where(Room.key == bindparam("key"), Membership.user_id == _USER)
)


def member_room_id(user_id: int, key: str) -> int | None:
    """The id of the room ``key`` if ``user_id`` is in it, else None (one query)."""
    params = {"user_id": user_id, "key": key}
    room_id: int | None = db.session.connection().execute(_MEMBER_ROOM_ID, params).scalar()
    return room_id


_MEMBERS_ROOMS = (
    select(Membership.user_id, Room.id, Room.key)
    .join(Membership, Membership.room_id == Room.id)
    .where(Membership.user_id.in_(bindparam("user_ids", expanding=True)))
)
_MEMBERS_AT_ONCE = 500  # Ids bound per query: far below any engine's limit on parameters.


def members_rooms(user_ids: Collection[int]) -> dict[int, dict[int, str]]:
    """``{user id: {id: key}}`` of every room each of ``user_ids`` is in, every one listed (a
    batch of greetings': one query per 500 users)."""
    found: dict[int, dict[int, str]] = {user_id: {} for user_id in user_ids}
    wanted = sorted(found)
    connection = db.session.connection()
    for start in range(0, len(wanted), _MEMBERS_AT_ONCE):
        params = {"user_ids": wanted[start : start + _MEMBERS_AT_ONCE]}
        for user_id, room_id, key in connection.execute(_MEMBERS_ROOMS, params):
            found[user_id][room_id] = key
    return found


def member_room_ids(user_id: int) -> set[int]:
    """The ids of every room ``user_id`` is in."""
    return set(db.session.scalars(select(Membership.room_id).where(Membership.user_id == user_id)))


def archived_ids() -> set[int]:
    """Ids of the archived rooms (read-only: no message, edit, reaction or join)."""
    return set(db.session.scalars(select(Room.id).where(Room.archived_at.is_not(None))))


def member_ids(room_id: int) -> list[int]:
    """Ids of the users in a room."""
    return list(db.session.scalars(select(Membership.user_id).where(Membership.room_id == room_id)))
