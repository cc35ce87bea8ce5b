"""A message's preview arriving and its author removing it: changes like edits (``core.messages``).

Each is one transaction: ``Message.preview_id`` and the ``MessageChange`` row that numbers it,
so that a resuming client replays it. The caller holds the hub's order lock and publishes the
``Changed`` it gets (``realtime.outside.publish_change``).
"""

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from core.messages import Changed, MessageError, record
from extensions import db
from models import PREVIEW, UNPREVIEW, Message, MessageChange


def attach(message: Message, preview_id: int) -> Changed | None:
    """Show preview ``preview_id`` under ``message``; None when it no longer may: the message was
    deleted, its author removed a preview of it, or its room was archived meanwhile."""
    if message.deleted_at is not None or message.room.archived_at is not None:
        return None
    if message.preview_id == preview_id:
        return Changed(None, message, PREVIEW)
    removed = select(MessageChange.id).where(
        MessageChange.message_id == message.id, MessageChange.kind == UNPREVIEW
    )
    if db.session.scalar(removed.limit(1)) is not None:
        return None  # Its author wants none: not even a later one.
    message.preview_id = preview_id
    # By its author: the server fetched it on their behalf, and the frame names the author.
    return record(PREVIEW, message, message.user_id, None)


def remove(message: Message, user_id: int, client_id: str | None) -> Changed:
    """Its author takes the preview off ``message`` (for good: it is not fetched again); a
    message without one is left as it is (the sender's confirmation)."""
    if client_id is not None:
        prior = db.session.scalar(
            select(MessageChange).where(
                MessageChange.user_id == user_id, MessageChange.client_id == client_id
            )
        )
        if prior is not None:  # A retry: nothing more to do.
            return Changed(None, db.session.get_one(Message, prior.message_id), prior.kind)
    if message.deleted_at is not None:
        raise MessageError("not_found", _l("This message was deleted."))
    if message.user_id != user_id:
        raise MessageError("forbidden", _l("You can only remove the preview of your own messages."))
    if message.preview_id is None:
        return Changed(None, message, UNPREVIEW)
    message.preview_id = None
    return record(UNPREVIEW, message, user_id, client_id)
