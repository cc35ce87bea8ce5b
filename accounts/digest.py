"""The digest: one mail per person, after a quiet period, listing the mentions and direct
messages they missed, with an unsubscribe link (``flask send-digests`` sends them).

"Missed" is decided from the database alone, so that any host can run the command: a message
in one of the person's rooms, not theirs, not deleted, after their read marker there, older
than ``CHAT_DIGEST_QUIET`` and newer than the period the last digest covered (and than their
joining), that mentions them or is in a direct room, in a room they did not set to "nothing".
A person is left alone while they are around: their read marker names, or they posted, a
message of the quiet period (the database knows nothing else of what they do); and they get at
most one digest per quiet period, however often the command runs.

``User.last_digest_at`` holds the end of the period the last digest covered (its run's time
minus the quiet period), set once the SMTP server took the mail: the next run starts there,
so no message is listed twice, none falls between two runs, and a failed send is retried.
"""

import logging
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from flask import current_app
from flask_babel import force_locale, format_datetime, ngettext
from flask_babel import gettext as _
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import Select, exists, func, or_, select, update

from accounts import mail
from config import SmtpSettings, smtp_settings
from core.formatting import excerpt
from core.rooms import direct_partners
from extensions import db
from i18n import DEFAULT_LANGUAGE
from models import (
    DIRECT,
    NOTIFY_NOTHING,
    Membership,
    Mention,
    Message,
    MessageData,
    Room,
    User,
    as_utc,
    describe,
    utcnow,
)

log = logging.getLogger(__name__)

UNSUBSCRIBE_SALT = "chat-digest-unsubscribe"
UNSUBSCRIBE = "unsubscribe"  # The token's purpose, signed with it.


class NotConfigured(Exception):
    """The server cannot send digests: no ``CHAT_SMTP_URL`` or no ``CHAT_PUBLIC_URL``."""


@dataclass
class Item:
    """One missed message as the digest lists it."""

    sender: str
    time: str  # Formatted in the reader's language (UTC).
    iso_time: str  # The same, for the HTML part's <time datetime>.
    text: str  # An excerpt, mentions as "@name".


@dataclass
class Group:
    """The missed messages of one room, oldest first, and the link that opens the room."""

    title: str
    direct: bool
    link: str
    items: list[Item] = field(default_factory=list)


@dataclass
class Run:
    """What a run did: digests handed to the SMTP server, and those that failed (retried)."""

    sent: int = 0
    failed: int = 0


def digests_enabled() -> bool:
    """Whether this server sends digests: it needs a mail server and its public address."""
    config = current_app.config
    return bool(config["CHAT_SMTP_URL"] and config["CHAT_PUBLIC_URL"])


# ---- Unsubscribe tokens ------------------------------------------------------------------------


def _serializer() -> URLSafeSerializer:
    """No expiry (a mail is read for years); the current key signs, any fallback verifies."""
    config = current_app.config
    keys = [*config["SECRET_KEY_FALLBACKS"], config["SECRET_KEY"]]
    return URLSafeSerializer(keys, salt=UNSUBSCRIBE_SALT)


def unsubscribe_token(user: User) -> str:
    """A token that turns ``user``'s digest off."""
    return _serializer().dumps({"uid": user.id, "p": UNSUBSCRIBE})


def user_of_unsubscribe(token: str) -> User | None:
    """The user an unsubscribe token names, if it is one of ours."""
    try:
        payload = _serializer().loads(token)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or payload.get("p") != UNSUBSCRIBE:
        return None
    user_id = payload.get("uid")
    return db.session.get(User, user_id) if type(user_id) is int else None


# ---- Who missed what ---------------------------------------------------------------------------


def _missed(cutoff: datetime, *columns: Any) -> Select[Any]:
    """``columns`` of the messages missed up to ``cutoff``, with their readers (``User``) among
    the accounts that take digests (see the module's docstring)."""
    mentioned = exists().where(Mention.message_id == Message.id, Mention.user_id == User.id)
    return (
        select(*columns)
        .select_from(Message)
        .join(Membership, Membership.room_id == Message.room_id)
        .join(User, User.id == Membership.user_id)
        .join(Room, Room.id == Message.room_id)
        .where(
            User.deactivated_at.is_(None),
            User.is_bot.is_(False),
            User.digest.is_(True),
            Message.user_id != User.id,
            Message.deleted_at.is_(None),
            Message.id > Membership.last_read_id,
            Message.created_at <= cutoff,
            Message.created_at > Membership.joined_at,
            or_(User.last_digest_at.is_(None), Message.created_at > User.last_digest_at),
            or_(Membership.notify.is_(None), Membership.notify != NOTIFY_NOTHING),
            or_(Room.kind == DIRECT, mentioned),
        )
    )


def _was_around(user_id: int, cutoff: datetime) -> bool:
    """Whether the person read or posted a message of the quiet period (after ``cutoff``)."""
    read = (
        select(Membership.user_id)
        .join(Message, Message.id == Membership.last_read_id)
        .where(Membership.user_id == user_id, Message.created_at > cutoff)
    )
    posted = select(Message.id).where(Message.user_id == user_id, Message.created_at > cutoff)
    return bool(db.session.scalar(select(or_(exists(read), exists(posted)))))


def _recipients(cutoff: datetime) -> list[int]:
    """Ids of the accounts that take digests and missed something up to ``cutoff`` (one query,
    not one per account)."""
    query = _missed(cutoff, User.id).distinct().order_by(User.id)
    return list(db.session.scalars(query))


def missed_messages(user: User, cutoff: datetime, limit: int) -> tuple[list[MessageData], int]:
    """The newest ``limit`` messages ``user`` missed up to ``cutoff``, oldest first, and how
    many they missed in all."""
    newest = list(
        db.session.scalars(
            _missed(cutoff, Message)
            .where(User.id == user.id)
            .order_by(Message.id.desc())
            .limit(limit)
        )
    )
    total = len(newest)
    if total == limit:
        counted = _missed(cutoff, func.count(Message.id)).where(User.id == user.id)
        total = db.session.scalar(counted) or 0
    return describe(newest[::-1]), total


# ---- The mail ----------------------------------------------------------------------------------


def _groups(user: User, messages: Sequence[MessageData], base_url: str) -> list[Group]:
    """``messages`` (oldest first) by room; the room with the newest message comes last."""
    partners = direct_partners(user.id)
    rooms = {room.key: room for room in _rooms_of(messages)}
    groups: dict[str, Group] = {}
    for data in messages:
        room = rooms[data["room"]]
        group = groups.pop(data["room"], None) or Group(
            title=partners.get(room.id, room.title),
            direct=room.kind == DIRECT,
            link=mail.external_url(base_url, "chat.index", room=room.key),
        )
        group.items.append(_item(data))
        groups[data["room"]] = group  # Moved to the end: the newest message's room is last.
    return list(groups.values())


def _rooms_of(messages: Sequence[MessageData]) -> Sequence[Room]:
    keys = {data["room"] for data in messages}
    return db.session.scalars(select(Room).where(Room.key.in_(keys))).all()


def _item(data: MessageData) -> Item:
    """One message's line: its excerpt, else the names of its files."""
    text = excerpt(data["text"], data["mentions"])
    if not text and data["attachments"]:
        text = _("Files: %(names)s", names=", ".join(a["name"] for a in data["attachments"]))
    moment = data["created_at"]
    return Item(data["user"], format_datetime(moment, "short"), as_utc(moment).isoformat(), text)


def compose_digest(
    user: User, messages: Sequence[MessageData], total: int, base_url: str
) -> EmailMessage:
    """The digest mail for ``user`` in their language, with the List-Unsubscribe headers."""
    token = unsubscribe_token(user)
    unsubscribe = mail.external_url(base_url, "digest.unsubscribe", token=token)
    with force_locale(user.locale or DEFAULT_LANGUAGE):
        subject = ngettext(
            "%(num)s missed message in the chat", "%(num)s missed messages in the chat", total
        )
        message = mail.compose(
            user.email,
            subject,
            "digest",
            user=user,
            groups=_groups(user, messages, base_url),
            more=total - len(messages),
            chat_link=mail.external_url(base_url, "chat.index"),
            profile_link=mail.external_url(base_url, "accounts.profile"),
            unsubscribe_link=unsubscribe,
        )
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    return message


# ---- A run ------------------------------------------------------------------------------------


def send_digests(now: datetime | None = None) -> Run:
    """Mail every person who missed something their digest; raise ``NotConfigured`` when the
    server cannot. Nothing is held open while the SMTP server answers."""
    if not digests_enabled():
        raise NotConfigured("CHAT_SMTP_URL and CHAT_PUBLIC_URL must both be set")
    config = current_app.config
    settings = smtp_settings(config["CHAT_SMTP_URL"])
    quiet = timedelta(seconds=config["CHAT_DIGEST_QUIET"])
    cutoff = (now or utcnow()) - quiet
    run = Run()
    for user_id in _recipients(cutoff):
        message = _digest_for(user_id, cutoff, cutoff - quiet)
        db.session.rollback()  # Ends the read transaction before the network.
        if message is None:
            continue
        if _deliver(settings, message, user_id):
            _mark_sent(user_id, cutoff)
            run.sent += 1
        else:
            run.failed += 1
    return run


def _digest_for(user_id: int, cutoff: datetime, spacing: datetime) -> EmailMessage | None:
    """The person's digest up to ``cutoff``, or None when they missed nothing, were around, or
    had one less than a quiet period ago (its period ended after ``spacing``): the timer may
    run often, a person gets at most one digest per quiet period, and nothing is lost."""
    user = db.session.get(User, user_id)
    if user is None or not user.digest or _was_around(user_id, cutoff):
        return None
    if user.last_digest_at is not None and as_utc(user.last_digest_at) > spacing:
        return None
    messages, total = missed_messages(user, cutoff, current_app.config["CHAT_DIGEST_MAX"])
    if not messages:
        return None
    return compose_digest(user, messages, total, current_app.config["CHAT_PUBLIC_URL"])


def _deliver(settings: SmtpSettings, message: EmailMessage, user_id: int) -> bool:
    """Hand ``message`` to the SMTP server; False (logged, without the address) if it fails."""
    try:
        mail.deliver(settings, message)
    except (smtplib.SMTPException, OSError, ValueError) as error:
        log.warning(
            "digest for user %d not sent through %s:%d: %s: %s",
            user_id,
            settings.host,
            settings.port,
            type(error).__name__,
            error,
        )
        return False
    return True


def _mark_sent(user_id: int, cutoff: datetime) -> None:
    """Record that the digest up to ``cutoff`` went out (one short transaction)."""
    db.session.execute(update(User).where(User.id == user_id).values(last_digest_at=cutoff))
    db.session.commit()
