"""Invitation links: a secret in the link, its hash in the database. An administrator's link to
the server makes an account and joins it to the invitation's rooms, in one transaction; a
member's link to a room lets accounts into that room."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask_babel import lazy_gettext as _l
from sqlalchemy import ColumnElement, or_, select, update

from core.rooms import ARCHIVED, RoomError
from extensions import db
from models import DIRECT, GENERAL, Invitation, Membership, Room, User, as_utc, utcnow


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    created_by: int | None,
    expires_at: datetime | None,
    max_uses: int | None,
    room_keys: list[str],
    makes_accounts: bool = True,
) -> tuple[Invitation, str]:
    """A new invitation (flushed, not committed: the caller audits it) and its link's secret,
    which is shown once and never stored."""
    secret = secrets.token_urlsafe(24)
    invitation = Invitation(
        token_hash=_hash(secret),
        created_by=created_by,
        expires_at=expires_at,
        max_uses=max_uses,
        room_keys=" ".join(room_keys),
        makes_accounts=makes_accounts,
    )
    db.session.add(invitation)
    db.session.flush()
    return invitation, secret


def _usable() -> list[ColumnElement[bool]]:
    """The conditions of an invitation that may still make an account, now."""
    now = utcnow()
    return [
        Invitation.revoked_at.is_(None),
        or_(Invitation.expires_at.is_(None), Invitation.expires_at > now),
        or_(Invitation.max_uses.is_(None), Invitation.uses < Invitation.max_uses),
    ]


def find(secret: str) -> Invitation | None:
    """The invitation of a link's secret, if it can still be used."""
    if not secret or len(secret) > 100:
        return None
    query = select(Invitation).where(Invitation.token_hash == _hash(secret), *_usable())
    invitation = db.session.scalar(query)
    if invitation is not None and not invitation.makes_accounts and not _maker_inside(invitation):
        return None
    return invitation


def _maker_inside(invitation: Invitation) -> bool:
    """A member's room link lives as long as its maker is active and still in the room: being
    removed (or leaving) must not be undone with a link one kept."""
    maker = db.session.get(User, invitation.created_by) if invitation.created_by else None
    if maker is None or not maker.is_active:
        return False
    keys = invitation.room_keys.split()
    inside = select(Membership.room_id).where(Membership.user_id == maker.id)
    found = select(Room.id).where(Room.key.in_(keys), Room.id.in_(inside))
    return db.session.scalar(found.limit(1)) is not None


def use(invitation: Invitation, user: User) -> list[Room] | None:
    """Count one use (atomically: two people on the last use, one wins) and join ``user``
    (flushed) to the rooms; the rooms newly joined, or None, with nothing done, if it was used
    up meanwhile."""
    counted = db.session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, *_usable())
        .values(uses=Invitation.uses + 1)
        .execution_options(synchronize_session=False)  # The row is read again after.
    )
    if counted.rowcount != 1:  # type: ignore[attr-defined]
        return None
    rooms = rooms_to_enter(invitation, user)
    db.session.add_all(Membership(room_id=room.id, user_id=user.id) for room in rooms)
    db.session.flush()
    return rooms


@dataclass(frozen=True)
class Link:
    """A room invitation just made: its secret is in no database, and shown once."""

    secret: str
    expires_at: datetime | None
    max_uses: int | None


def room_link(room: Room, created_by: int, days: int | None, uses: int | None) -> Link:
    """A member's invitation link to ``room`` (committed); an archived or direct room has none."""
    if room.kind == DIRECT:
        raise RoomError("bad_request", _l("A direct conversation has no invitation link."))
    if room.archived_at is not None:
        raise RoomError("archived", ARCHIVED)
    expires_at = utcnow() + timedelta(days=days) if days else None
    _, secret = create(created_by, expires_at, uses, [room.key], makes_accounts=False)
    db.session.commit()
    return Link(secret, expires_at, uses)


def rooms_to_enter(invitation: Invitation, user: User) -> list[Room]:
    """The rooms of an invitation that ``user`` is not in yet and may enter: not direct, not
    archived (an archived room takes nobody, by link or not), not ``general`` (everyone's)."""
    keys = [key for key in invitation.room_keys.split() if key != GENERAL]
    mine = select(Membership.room_id).where(Membership.user_id == user.id)
    query = select(Room).where(
        Room.key.in_(keys),
        Room.kind != DIRECT,
        Room.archived_at.is_(None),
        Room.id.not_in(mine),
    )
    return list(db.session.scalars(query))


def state(invitation: Invitation) -> str:
    """``active``, ``revoked``, ``expired`` or ``used up``: how the admin page lists it."""
    if invitation.revoked_at is not None:
        return "revoked"
    if invitation.expires_at is not None and as_utc(invitation.expires_at) <= utcnow():
        return "expired"
    if invitation.max_uses is not None and invitation.uses >= invitation.max_uses:
        return "used up"
    return "active"
