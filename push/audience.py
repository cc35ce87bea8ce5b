"""Who gets a Web Push for new messages, and what it says.

A member is pushed a message when their notification level for its room asks for it (``all``:
every message; ``mentions``: their mentions, and every message of a direct room; ``nothing``:
none), it is not their own, their account is active and not a bot, they have a subscribed
browser, and none of their tabs is visible (``Hub.visible_users``, over every worker).
"""

import contextlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from flask_babel import force_locale, ngettext
from flask_babel import gettext as _
from sqlalchemy import select

from core.formatting import excerpt
from core.rooms import notify_level
from extensions import db
from models import (
    DIRECT,
    NOTIFY_ALL,
    NOTIFY_MENTIONS,
    Membership,
    MessageData,
    PushSubscription,
    Room,
    User,
)

EXCERPT_CHARS = 140
MAX_PAYLOAD_BYTES = 3000  # Push services take 4 KB of ciphertext; ours stay well under it.


@dataclass(frozen=True)
class Member:
    """A member of a room who might be pushed, with what the push needs of them and the room."""

    user_id: int
    level: str
    locale: str | None
    room_kind: str
    room_title: str


@dataclass(frozen=True)
class Push:
    """One notification to one browser: where, with which keys, and the JSON to encrypt."""

    subscription_id: int
    endpoint: str
    p256dh: str
    auth: str
    payload: str


def plan(messages: Sequence[MessageData], visible: Callable[[set[int]], set[int]]) -> list[Push]:
    """The pushes that ``messages`` (new, stored) call for; ``visible`` filters out the people
    with a visible tab."""
    members = _members({message["room"] for message in messages})
    wanted = [
        (message, member)
        for message in messages
        for member in members.get(message["room"], ())
        if _wants(member, message)
    ]
    if not wanted:
        return []
    hidden_from = {member.user_id for _message, member in wanted}
    seen = visible(hidden_from)
    wanted = [(message, member) for message, member in wanted if member.user_id not in seen]
    browsers = _subscriptions({member.user_id for _message, member in wanted})
    pushes = []
    for message, member in wanted:
        payload = _payload(message, member)
        for row in browsers.get(member.user_id, ()):
            pushes.append(Push(row.id, row.endpoint, row.p256dh, row.auth, payload))
    return pushes


def _wants(member: Member, message: MessageData) -> bool:
    """Whether ``member``'s level asks for ``message`` (never their own)."""
    if member.user_id == message["user_id"]:
        return False
    if member.level == NOTIFY_ALL:
        return True
    mentioned = member.user_id in message["mentions"] or member.room_kind == DIRECT
    return member.level == NOTIFY_MENTIONS and mentioned


def _members(keys: Iterable[str]) -> dict[str, list[Member]]:
    """``{room key: [Member]}``: the active, human members with a subscribed browser."""
    has_browser = select(PushSubscription.id).where(PushSubscription.user_id == Membership.user_id)
    rows = db.session.execute(
        select(Room.key, Room.kind, Room.title, Membership.user_id, Membership.notify, User.locale)
        .join(Membership, Membership.room_id == Room.id)
        .join(User, User.id == Membership.user_id)
        .where(
            Room.key.in_(list(keys)),
            User.deactivated_at.is_(None),
            User.is_bot.is_(False),
            has_browser.exists(),
        )
    )
    members: dict[str, list[Member]] = {}
    for key, kind, title, user_id, notify, locale in rows:
        member = Member(user_id, notify_level(kind, notify), locale, kind, title)
        members.setdefault(key, []).append(member)
    return members


def _subscriptions(user_ids: set[int]) -> dict[int, list[PushSubscription]]:
    """``{user id: [their subscribed browsers]}``."""
    if not user_ids:
        return {}
    rows = db.session.scalars(
        select(PushSubscription).where(PushSubscription.user_id.in_(user_ids))
    )
    browsers: dict[int, list[PushSubscription]] = {}
    for row in rows:
        browsers.setdefault(row.user_id, []).append(row)
    return browsers


def _payload(message: MessageData, member: Member) -> str:
    """The notification's JSON, in the member's language."""
    with force_locale(member.locale) if member.locale else contextlib.nullcontext():
        sender = message["user"]
        if member.room_kind == DIRECT:
            title = sender
        else:
            title = _("%(sender)s in %(room)s", sender=sender, room=member.room_title)
        body = excerpt(message["text"], message["mentions"], EXCERPT_CHARS)
        if not body and message["attachments"]:
            count = len(message["attachments"])
            body = ngettext("%(num)s file", "%(num)s files", count)
    data = {
        "title": title,
        "body": body,
        "url": f"/?room={quote(message['room'], safe='')}#m{message['id']}",
        "tag": message["room"],
        "room": message["room"],
        "message_id": message["id"],
    }
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:  # A title of long names in wide scripts.
        data["title"] = title[:64]
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return payload
