"""What can happen to a message once posted: edits, deletions and reactions, each recorded.

Every change is one transaction: the change itself and its ``MessageChange`` row, whose number
orders it among all changes (a resuming client replays from it) and whose ``client_id`` makes a
retry a no-op. The caller holds the hub's order lock, so numbers follow the order in which
changes are published. ``may_change`` is the one permission check for edits and deletions
(an administrator's deletion of someone else's message is also written to the audit log).
"""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, select

from core.audit import audit
from core.formatting import mentioned_ids
from core.rooms import ARCHIVED, FORBIDDEN
from extensions import db
from files import uploads
from models import (
    DELETE,
    EDIT,
    MAX_REACTIONS,
    REACT,
    UNREACT,
    Membership,
    Mention,
    Message,
    MessageChange,
    Reaction,
    User,
    as_utc,
    utcnow,
)

NO_SUCH_MESSAGE = _l("There is no such message.")


class MessageError(Exception):
    """A change that cannot be made; ``code`` becomes an error frame's code."""

    def __init__(self, code: str, message: str | LazyString) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Changed:
    """What became of a change: ``change`` is its number, None if it changed nothing (a retry,
    a reaction already there); ``message`` is the message it concerns."""

    change: int | None
    message: Message
    kind: str


def find(message_id: int, room_ids: Collection[int]) -> Message:
    """The message ``message_id``, if it is in one of ``room_ids`` (the user's rooms).

    ``not_found`` when there is no such message, ``forbidden`` when it is in another room,
    ``archived`` when its room is.
    """
    message = db.session.get(Message, message_id)
    if message is None:
        raise MessageError("not_found", NO_SUCH_MESSAGE)
    if message.room_id not in room_ids:
        raise MessageError("forbidden", FORBIDDEN)
    if message.room.archived_at is not None:  # Read-only: even moderation unarchives first.
        raise MessageError("archived", ARCHIVED)
    return message


def may_change(user_id: int, message: Message, kind: str) -> bool:
    """Whether ``user_id`` may make a change of ``kind`` (EDIT or DELETE) to ``message``: its
    author; an administrator may also delete it (moderation), never put words in it."""
    if message.user_id == user_id:
        return True
    if kind != DELETE:
        return False
    user = db.session.get(User, user_id)
    return user is not None and user.is_admin


def reply_target(message_id: int, room_id: int, room_ids: Collection[int]) -> Message:
    """The message a new one in ``room_id`` answers: a live message of the same room.

    One in another of the user's rooms is ``bad_request``; anywhere else, ``not_found``, as if
    there were none (a reply must not tell what other rooms hold).
    """
    message = db.session.get(Message, message_id)
    if message is None or message.room_id not in room_ids:
        raise MessageError("not_found", NO_SUCH_MESSAGE)
    if message.room_id != room_id:
        raise MessageError("bad_request", _l("A reply must be in the room of its message."))
    _live(message)
    return message


def _retried(user_id: int, client_id: str | None) -> MessageChange | None:
    """The change this user already made under ``client_id``, if any."""
    if client_id is None:
        return None
    return db.session.scalar(
        select(MessageChange).where(
            MessageChange.user_id == user_id, MessageChange.client_id == client_id
        )
    )


def _unchanged(kind: str, message: Message) -> Changed:
    return Changed(None, message, kind)


def record(kind: str, message: Message, user_id: int, client_id: str | None) -> Changed:
    """Add the change's row and commit it with the change itself."""
    change = MessageChange(
        room_id=message.room_id,
        message_id=message.id,
        user_id=user_id,
        kind=kind,
        client_id=client_id,
    )
    db.session.add(change)
    db.session.commit()
    return Changed(change.id, message, kind)


def _prior(user_id: int, client_id: str | None, message: Message, kind: str) -> Changed | None:
    """A retry of an applied change: nothing to do (the message is shown as it is now)."""
    prior = _retried(user_id, client_id)
    if prior is None:
        return None
    return _unchanged(prior.kind, db.session.get_one(Message, prior.message_id))


def _live(message: Message) -> None:
    """Refuse a change to a deleted message."""
    if message.deleted_at is not None:
        raise MessageError("not_found", _l("This message was deleted."))


def edit(
    message: Message, user_id: int, text: str, client_id: str | None, window: float
) -> Changed:
    """Replace the text of ``message`` (``window``: seconds after posting it may be, 0: any)."""
    if (prior := _prior(user_id, client_id, message, EDIT)) is not None:
        return prior
    _live(message)
    if not may_change(user_id, message, EDIT):
        raise MessageError("forbidden", _l("You can only edit your own messages."))
    if window and utcnow() - as_utc(message.created_at) > timedelta(seconds=window):
        raise MessageError("forbidden", _l("This message is too old to be edited."))
    if text == message.text:
        return _unchanged(EDIT, message)
    message.text = text
    message.edited_at = utcnow()
    _mention(message, mentioned_ids(text))
    return record(EDIT, message, user_id, client_id)


def _mention(message: Message, user_ids: list[int]) -> None:
    """Make the message's mentions those of ``user_ids`` who are in its room."""
    db.session.execute(delete(Mention).where(Mention.message_id == message.id))
    if not user_ids:
        return
    members = set(
        db.session.scalars(
            select(Membership.user_id).where(
                Membership.room_id == message.room_id, Membership.user_id.in_(user_ids)
            )
        )
    )
    db.session.add_all(
        Mention(message_id=message.id, user_id=uid) for uid in user_ids if uid in members
    )


def remove(message: Message, user_id: int, client_id: str | None) -> Changed:
    """Delete ``message``: its text, mentions, reactions and files are erased; a tombstone
    stays."""
    if (prior := _prior(user_id, client_id, message, DELETE)) is not None:
        return prior
    if not may_change(user_id, message, DELETE):
        raise MessageError("forbidden", _l("You can only delete your own messages."))
    if message.deleted_at is not None:
        return _unchanged(DELETE, message)
    if message.user_id != user_id:  # Moderation: recorded, in the deletion's transaction.
        audit(user_id, "delete_message", "message", message.id, f"by user {message.user_id}")
    message.text = ""
    message.deleted_at = utcnow()
    db.session.execute(delete(Mention).where(Mention.message_id == message.id))
    db.session.execute(delete(Reaction).where(Reaction.message_id == message.id))
    stored = uploads.detach(message)
    changed = record(DELETE, message, user_id, client_id)
    uploads.discard(stored)  # Once the rows are gone for good: never a row without its file.
    return changed


def react(message: Message, user_id: int, symbol: str, client_id: str | None) -> Changed:
    """Add ``user_id``'s ``symbol`` (one emoji) to ``message``; twice is once."""
    if (prior := _prior(user_id, client_id, message, REACT)) is not None:
        return prior
    _live(message)
    given = select(Reaction.emoji).where(Reaction.message_id == message.id).distinct()
    emoji_on_it = set(db.session.scalars(given))
    mine = select(Reaction.id).where(
        Reaction.message_id == message.id, Reaction.user_id == user_id, Reaction.emoji == symbol
    )
    if db.session.scalar(mine) is not None:
        return _unchanged(REACT, message)
    if symbol not in emoji_on_it and len(emoji_on_it) >= MAX_REACTIONS:
        message_text = _l("A message can have at most %(n)s different emoji.", n=MAX_REACTIONS)
        raise MessageError("too_many_reactions", message_text)
    db.session.add(Reaction(message_id=message.id, user_id=user_id, emoji=symbol))
    return record(REACT, message, user_id, client_id)


def unreact(message: Message, user_id: int, symbol: str, client_id: str | None) -> Changed:
    """Take back ``user_id``'s ``symbol`` from ``message``; if they had not given it, nothing."""
    if (prior := _prior(user_id, client_id, message, UNREACT)) is not None:
        return prior
    _live(message)
    removed = db.session.execute(
        delete(Reaction).where(
            Reaction.message_id == message.id,
            Reaction.user_id == user_id,
            Reaction.emoji == symbol,
        )
    )
    if not removed.rowcount:  # type: ignore[attr-defined]  # a CursorResult for a DELETE
        db.session.rollback()
        return _unchanged(UNREACT, message)
    return record(UNREACT, message, user_id, client_id)
