"""Invitation links to the server: a secret in the link, its hash in the database; each use
makes an account and joins it to the invitation's public rooms, in one transaction."""

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select, update

from extensions import db
from models import GENERAL, PUBLIC, Invitation, Membership, Room, User, as_utc, utcnow


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    created_by: int | None,
    expires_at: datetime | None,
    max_uses: int | None,
    room_keys: list[str],
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
    return db.session.scalar(query)


def use(invitation: Invitation, user: User) -> bool:
    """Count one use (atomically: two people on the last use, one wins) and join ``user``
    (flushed) to the rooms; False, with nothing done, if it was used up meanwhile."""
    counted = db.session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, *_usable())
        .values(uses=Invitation.uses + 1)
    )
    if counted.rowcount != 1:  # type: ignore[attr-defined]
        return False
    keys = [key for key in invitation.room_keys.split() if key != GENERAL]
    if keys:
        rooms = db.session.scalars(select(Room).where(Room.key.in_(keys), Room.kind == PUBLIC))
        db.session.add_all(Membership(room_id=room.id, user_id=user.id) for room in rooms)
    return True


def state(invitation: Invitation) -> str:
    """``active``, ``revoked``, ``expired`` or ``used up``: how the admin page lists it."""
    if invitation.revoked_at is not None:
        return "revoked"
    if invitation.expires_at is not None and as_utc(invitation.expires_at) <= utcnow():
        return "expired"
    if invitation.max_uses is not None and invitation.uses >= invitation.max_uses:
        return "used up"
    return "active"
