"""Uploads: storing one, the per-person quota, who may read a file, attaching files to a
message, and removing them (with their message, or when never posted).

A file is its uploader's alone until a message carries it; from then on whoever is in the
message's room may read it, and it goes when the message is deleted. Rows and bytes: the row is
written after the bytes are stored and deleted before they are, so a row never points at
nothing; a crash between the two leaves bytes no row names, never the reverse.
"""

import logging
import secrets
import unicodedata
from collections.abc import Collection, Sequence
from datetime import timedelta

from blinker import Namespace
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from core.rooms import is_member
from core.text import has_control_characters
from extensions import db
from files.images import Prepared
from files.store import StoreError, store
from models import MAX_FILE_NAME_CHARS, Attachment, Message, utcnow

log = logging.getLogger(__name__)

# For whoever watches (``ops.metrics``): a file was stored (``size``: its bytes as kept, and
# ``image``), or old uploads were removed (``count``).
signals = Namespace()
upload_stored = signals.signal("upload-stored")
uploads_purged = signals.signal("uploads-purged")

PURGE_BATCH = 100  # Old uploads removed per sweep (each upload request runs one).
NO_SUCH_FILE = _l("No such file to attach: upload it first, and attach each file to one message.")


class NotPostable(Exception):
    """A post's files that cannot be attached (an error frame ``not_found``)."""

    code = "not_found"

    def __init__(self) -> None:
        super().__init__(str(NO_SUCH_FILE))
        self.message = NO_SUCH_FILE


class UploadError(Exception):
    """An upload refused: its HTTP status, the JSON error's code and what to tell the person."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def clean_name(raw: str | None) -> str:
    """A file name fit to show and to send back in a header: its last path part, normalised,
    without control characters, at most ``MAX_FILE_NAME_CHARS`` (its extension kept)."""
    name = unicodedata.normalize("NFC", (raw or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(" " if _unsafe(c) else c for c in name).strip(" .")
    if not name:
        return "file"
    if len(name) > MAX_FILE_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = f"{stem[: MAX_FILE_NAME_CHARS - len(extension) - 1]}.{extension}"
        else:
            name = name[:MAX_FILE_NAME_CHARS]
    return name


# Bidirectional overrides and isolates: "txt.exe" shown as "exe.txt" is an old trick.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unsafe(char: str) -> bool:
    """Whether a character of a file name is replaced: controls, surrogates, bidi controls."""
    return (
        unicodedata.category(char) in {"Cc", "Cs"}
        or has_control_characters(char)
        or char in _BIDI_CONTROLS
    )


def used_bytes(user_id: int) -> int:
    """What the person's files take, posted or not."""
    total = select(func.coalesce(func.sum(Attachment.size), 0)).where(
        Attachment.uploader_id == user_id
    )
    return int(db.session.scalar(total) or 0)


def create(user_id: int, name: str, prepared: Prepared) -> Attachment:
    """Store a prepared upload and its row; ``UploadError`` 503 if the store or database fails
    (then nothing is kept)."""
    token = secrets.token_hex(16)
    key = f"{token[:2]}/{token}{prepared.extension}"
    thumbnail_key = None
    keys = [key]
    try:
        store().put(key, prepared.path, prepared.content_type)
        if prepared.thumbnail == prepared.path:
            thumbnail_key = key  # An animation is its own thumbnail.
        elif prepared.thumbnail is not None:
            thumbnail_key = f"{token[:2]}/{token}.thumb.webp"
            keys.append(thumbnail_key)
            store().put(thumbnail_key, prepared.thumbnail, "image/webp")
        attachment = Attachment(
            uploader_id=user_id,
            name=name,
            size=prepared.path.stat().st_size,
            content_type=prepared.content_type,
            width=prepared.width,
            height=prepared.height,
            key=key,
            thumbnail_key=thumbnail_key,
        )
        db.session.add(attachment)
        db.session.commit()
    except (StoreError, SQLAlchemyError, OSError) as error:
        db.session.rollback()
        store().delete(keys)
        message = str(_l("The file could not be stored. Try again in a moment."))
        raise UploadError(503, "unavailable", message) from error
    upload_stored.send(None, size=attachment.size, image=attachment.width is not None)
    return attachment


def readable(user_id: int, attachment_id: int) -> Attachment | None:
    """The file, if ``user_id`` may read it: its uploader before it is posted, then the
    members of its message's room. None otherwise, as for a file that does not exist."""
    attachment = db.session.get(Attachment, attachment_id)
    if attachment is None:
        return None
    if attachment.message_id is None:
        return attachment if attachment.uploader_id == user_id else None
    room_id = db.session.scalar(select(Message.room_id).where(Message.id == attachment.message_id))
    return attachment if room_id is not None and is_member(room_id, user_id) else None


def check_postable(
    user_id: int, client_id: str | None, attachment_ids: Sequence[int], taken: Collection[int]
) -> None:
    """Refuse (``NotPostable``) a post's files unless each is the author's own
    upload, in no message yet and not ``taken`` by a post before it in the same batch. A retry
    of a post that was stored (same ``client_id``) may name the files it already carries."""
    rows = db.session.execute(
        select(Attachment.id, Attachment.uploader_id, Message.user_id, Message.client_id)
        .outerjoin(Message, Message.id == Attachment.message_id)
        .where(Attachment.id.in_(attachment_ids))
    ).all()
    found = {row[0]: row for row in rows}
    for attachment_id in attachment_ids:
        row = found.get(attachment_id)
        if row is None or row.uploader_id != user_id or attachment_id in taken:
            raise NotPostable
        _, _, author, posted_as = row
        if author is not None and not (client_id is not None and posted_as == client_id):
            raise NotPostable


def detach(message: Message) -> list[str]:
    """Delete the rows of ``message``'s files in the session's transaction; return their keys,
    for ``discard`` once it is committed."""
    rows = db.session.scalars(select(Attachment).where(Attachment.message_id == message.id)).all()
    db.session.execute(delete(Attachment).where(Attachment.message_id == message.id))
    message.attachment_names = None
    return _keys(rows)


def discard(keys: Sequence[str]) -> None:
    """Remove stored objects whose rows are gone (errors are logged: the rows are gone)."""
    if keys:
        store().delete(keys)


def purge_unposted(ttl: float, limit: int = PURGE_BATCH) -> int:
    """Remove up to ``limit`` uploads never posted within ``ttl`` seconds; return how many."""
    cutoff = utcnow() - timedelta(seconds=ttl)
    old = db.session.scalars(
        select(Attachment)
        .where(Attachment.message_id.is_(None), Attachment.created_at < cutoff)
        .order_by(Attachment.id)
        .limit(limit)
    ).all()
    if not old:
        return 0
    # Only those still unposted: a message may have taken one since they were read.
    removed = db.session.execute(
        delete(Attachment)
        .where(Attachment.id.in_([row.id for row in old]), Attachment.message_id.is_(None))
        .returning(Attachment.key, Attachment.thumbnail_key)
    ).all()
    db.session.commit()
    discard(sorted({key for pair in removed for key in pair if key is not None}))
    uploads_purged.send(None, count=len(removed))
    return len(removed)


def sweep(ttl: float) -> None:
    """``purge_unposted`` as a side job of an upload: a failure (a deadlock with a message taking
    one of those files, the database gone) is logged and left to the next upload."""
    try:
        purge_unposted(ttl)
    except SQLAlchemyError:
        db.session.rollback()
        log.warning("the sweep of unposted uploads failed; the next upload tries again")


def _keys(rows: Sequence[Attachment]) -> list[str]:
    """Every stored object of ``rows``: files and thumbnails."""
    return sorted({key for row in rows for key in (row.key, row.thumbnail_key) if key is not None})
