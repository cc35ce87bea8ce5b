"""Rooms and memberships in the database: public rooms, direct messages, unread counts."""

import re
import unicodedata
from typing import TypedDict

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError

from core.audit import audit
from extensions import db
from models import (
    DIRECT,
    GENERAL,
    PUBLIC,
    Membership,
    Mention,
    Message,
    Room,
    User,
    ensure_general,
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
    kind: str  # PUBLIC or DIRECT
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


# Lazy: translated when an error frame is built, in the language of that socket's user.
FORBIDDEN = _l("You are not in this room.")
NO_SUCH_USER = _l("No such user is online in any of your rooms.")


class RoomError(Exception):
    """A room operation that cannot be done; ``code`` becomes an error frame's code."""

    def __init__(self, code: str, message: str | LazyString) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


def create_room(name: str, user_id: int) -> Room:
    """Create a public room named ``name`` with its creator in it; return the room."""
    room = Room(key=room_key(name), title=name, kind=PUBLIC)
    db.session.add(room)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise RoomError(
            "name_taken", _l("A room named “%(name)s” already exists.", name=name)
        ) from None
    db.session.add(Membership(room_id=room.id, user_id=user_id))
    db.session.commit()
    return room


def join_public(key: str, user_id: int) -> tuple[Room, bool]:
    """Join the public room ``key``; return ``(room, newly_joined)``."""
    room = find_room(key)
    if room is None or room.kind != PUBLIC:
        # A direct room's key gets the same answer whether it exists or not: nothing leaks.
        if key.startswith("dm:"):
            raise RoomError("forbidden", FORBIDDEN)
        raise RoomError("not_found", _l("There is no room named “%(name)s”.", name=key))
    return room, _add_member(room.id, user_id)


def leave_public(room: Room, user_id: int) -> None:
    """Leave a public room other than ``general``."""
    if room.key == GENERAL or room.kind != PUBLIC:
        raise RoomError("bad_request", _l("You cannot leave this room."))
    membership = db.session.get(Membership, (room.id, user_id))
    if membership is not None:
        db.session.delete(membership)
        db.session.commit()


def remove_member(key: str, user_id: int, actor_id: int) -> tuple[Room, User]:
    """An administrator takes ``user_id`` out of public room ``key`` (moderation, audited);
    the room and the person removed."""
    actor = db.session.get(User, actor_id)
    if actor is None or not actor.is_admin:
        raise RoomError("forbidden", _l("Only administrators can remove people from a room."))
    room = find_room(key)
    if room is None or room.kind != PUBLIC:
        raise RoomError("not_found", _l("There is no such public room."))
    if room.key == GENERAL:
        raise RoomError("bad_request", _l("Everyone is in general: deactivate the account."))
    membership = db.session.get(Membership, (room.id, user_id))
    target = db.session.get(User, user_id)
    if membership is None or target is None:
        raise RoomError("not_found", _l("That person is not in this room."))
    db.session.delete(membership)
    audit(actor_id, "remove_member", "room", room.id, f"{target.name} ({target.email})")
    db.session.commit()
    return room, target


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


def summaries(user_id: int) -> list[RoomSummary]:
    """The user's rooms as the page lists them: title, kind, unread count and last message id."""
    rows = db.session.execute(
        select(Room, Membership.last_read_id)
        .join(Membership, Membership.room_id == Room.id)
        .where(Membership.user_id == user_id)
        .order_by(Room.kind.desc(), Room.key)
    ).all()
    room_ids = [room.id for room, _ in rows]
    unread = _unread_counts(user_id)
    mentions = _unread_counts(user_id, mentioning=True)
    last_ids = dict(
        db.session.execute(
            select(Message.room_id, func.max(Message.id))
            .where(Message.room_id.in_(room_ids))
            .group_by(Message.room_id)
        ).all()
    )
    partners = direct_partners(user_id)
    return [
        {
            "id": room.id,
            "room": room.key,
            "title": partners.get(room.id, room.title),
            "kind": room.kind,
            "unread": unread.get(room.id, 0),
            "mentions": mentions.get(room.id, 0),
            "last_id": last_ids.get(room.id, 0),
            "last_read_id": last_read,
        }
        for room, last_read in rows
    ]


def summary(room: Room, user_id: int) -> RoomSummary:
    """One room's summary for ``user_id``."""
    return next(item for item in summaries(user_id) if item["id"] == room.id)


def _unread_counts(user_id: int, mentioning: bool = False) -> dict[int, int]:
    """Messages by others after the user's read marker, per room; with ``mentioning``, only
    those that mention the user (a deleted message has lost its mentions)."""
    newer = and_(
        Message.room_id == Membership.room_id,
        Message.id > Membership.last_read_id,
        Message.user_id != user_id,
    )
    query = (
        select(Membership.room_id, func.count(Message.id))
        .join(Message, newer)
        .where(Membership.user_id == user_id)
        .group_by(Membership.room_id)
    )
    if mentioning:
        mine = and_(Mention.message_id == Message.id, Mention.user_id == user_id)
        query = query.join(Mention, mine)
    return dict(db.session.execute(query).all())


def members(room_id: int, limit: int) -> list[tuple[int, str]]:
    """``[(user id, name)]`` of up to ``limit`` active people in a room, sorted by name (the
    page suggests mentions from them)."""
    users = db.session.scalars(
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.room_id == room_id, User.deactivated_at.is_(None))
        .order_by(User.id)
    ).all()
    people = sorted(((user.id, user.name) for user in users), key=lambda p: (p[1].casefold(), p[0]))
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


def public_rooms() -> list[PublicRoom]:
    """Every public room, with its number of members, for people to discover and join."""
    rows = db.session.execute(
        select(Room.key, Room.title, func.count(Membership.user_id))
        .outerjoin(Membership, Membership.room_id == Room.id)
        .where(Room.kind == PUBLIC)
        .group_by(Room.id)
        .order_by(Room.key)
    )
    return [{"room": key, "title": title, "members": count} for key, title, count in rows]


def archived_ids() -> set[int]:
    """Ids of the archived rooms (read-only: no message, edit, reaction or join)."""
    return set(db.session.scalars(select(Room.id).where(Room.archived_at.is_not(None))))


def member_ids(room_id: int) -> list[int]:
    """Ids of the users in a room."""
    return list(db.session.scalars(select(Membership.user_id).where(Membership.room_id == room_id)))
