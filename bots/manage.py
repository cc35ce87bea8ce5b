"""What administrators do to bots, each written to the audit log in the action's own
transaction: create, rename, move to another room, rotate the incoming secret, set the outgoing
URL (and its signing secret), delete.

A bot is a ``User`` with ``is_bot`` (an unusable password, an address under ``.invalid`` that is
never mailed, the member role) and a ``Bot`` row. It is a member of its room only: the mention
picker lists it there, and its incoming webhook posts there.
"""

import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, select

from core.audit import audit
from core.text import has_control_characters, is_invisible, is_unicode
from extensions import db
from models import DIRECT, MAX_DISPLAY_NAME_CHARS, MEMBER, Bot, Membership, Room, User, utcnow

MAX_URL_CHARS = 2048
BOT_DOMAIN = "bots.invalid"  # RFC 2606: never resolves, so nothing is ever mailed there.
# Werkzeug's check_password_hash returns False for a hash without its "method$salt$hash" form.
UNUSABLE_PASSWORD = "!bot"  # noqa: S105 - the mark of an account without a password


class BotError(Exception):
    """A bot action refused: ``code`` for scripts, ``message`` for people."""

    def __init__(self, code: str, message: LazyString | str) -> None:
        super().__init__(str(message))
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Secrets:
    """What an action made that is shown once: the incoming secret, the outgoing one (either
    None when the action left it as it was)."""

    hook: str | None = None
    outgoing: str | None = None


def hook_hash(secret: str) -> str:
    """What the database keeps of an incoming webhook's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_name(value: str) -> str:
    """A bot's name, trimmed: 1 to 40 visible characters, as a display name."""
    name = " ".join(value.split())
    if not name or not is_unicode(name) or is_invisible(name):
        raise BotError("bad_name", _l("A bot needs a name."))
    if len(name) > MAX_DISPLAY_NAME_CHARS:
        message = _l("A bot's name is at most %(n)s characters.", n=MAX_DISPLAY_NAME_CHARS)
        raise BotError("bad_name", message)
    if has_control_characters(name):
        raise BotError("bad_name", _l("A bot's name cannot contain control characters."))
    return name


def parse_url(value: str) -> str | None:
    """An outgoing webhook URL (http or https, with a host, at most 2048 characters), or None
    for an empty one. Where it leads is checked on every call (``net.guard``)."""
    url = value.strip()
    if not url:
        return None
    refused = BotError(
        "bad_url",
        _l("The outgoing URL must be an http:// or https:// address of at most %(n)s characters.",
           n=MAX_URL_CHARS),
    )  # fmt: skip
    if len(url) > MAX_URL_CHARS or not is_unicode(url) or has_control_characters(url):
        raise refused
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise refused from None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname or " " in url:
        raise refused
    if parts.username is not None or parts.password is not None:
        raise BotError("bad_url", _l("The outgoing URL cannot hold a user name or password."))
    return url


def bot_room(room_id: int) -> Room:
    """A room a bot may be put in: public or private, not archived."""
    room = db.session.get(Room, room_id)
    if room is None or room.kind == DIRECT:
        raise BotError("bad_room", _l("Choose a room for the bot."))
    if room.archived_at is not None:
        raise BotError("archived", _l("This room is archived: choose another one."))
    return room


def create(name: str, room_id: int, outgoing_url: str, actor_id: int | None) -> tuple[Bot, Secrets]:
    """A new bot in ``room_id``; the secrets to show once."""
    name, url, room = parse_name(name), parse_url(outgoing_url), bot_room(room_id)
    user = User(
        email=f"bot-{secrets.token_hex(8)}@{BOT_DOMAIN}",
        password_hash=UNUSABLE_PASSWORD,
        display_name=name,
        role=MEMBER,
        is_bot=True,
    )
    db.session.add(user)
    db.session.flush()
    hook = secrets.token_urlsafe(32)
    outgoing = secrets.token_urlsafe(32) if url else None
    bot = Bot(
        user_id=user.id,
        room_id=room.id,
        hook_hash=hook_hash(hook),
        outgoing_url=url,
        outgoing_secret=outgoing,
        created_by=actor_id,
    )
    db.session.add_all([bot, Membership(room_id=room.id, user_id=user.id)])
    audit(actor_id, "create_bot", "user", user.id, f"{name} → #{room.title}")
    db.session.commit()
    return bot, Secrets(hook, outgoing)


def user_of(bot: Bot) -> User:
    """The bot's account."""
    return db.session.get_one(User, bot.user_id)


def rename(bot: Bot, name: str, actor_id: int | None) -> bool:
    """Give the bot another name (its messages from now on carry it); whether it changed."""
    changed = _rename(bot, parse_name(name), actor_id)
    db.session.commit()
    return changed


def set_room(bot: Bot, room_id: int, actor_id: int | None) -> bool:
    """Move the bot to another room: it leaves its old one and joins the new; whether it moved."""
    changed = _set_room(bot, bot_room(room_id), actor_id)
    db.session.commit()
    return changed


def set_outgoing_url(bot: Bot, value: str, actor_id: int | None) -> tuple[bool, str | None]:
    """Set (or, empty, remove) the outgoing webhook; ``(changed, new signing secret)``: a
    secret is made the first time a URL is set, and shown once."""
    changed = _set_url(bot, parse_url(value), actor_id)
    db.session.commit()
    return changed


def update(
    bot: Bot, name: str, room_id: int, outgoing_url: str, actor_id: int | None
) -> tuple[bool, str | None]:
    """Rename, move and set the URL at once (all checked first, one transaction);
    ``(changed, new signing secret)``."""
    parsed, room, url = parse_name(name), bot_room(room_id), parse_url(outgoing_url)
    renamed = _rename(bot, parsed, actor_id)
    moved = _set_room(bot, room, actor_id)
    routed, signing = _set_url(bot, url, actor_id)
    db.session.commit()
    return renamed or moved or routed, signing


def _rename(bot: Bot, name: str, actor_id: int | None) -> bool:
    user = user_of(bot)
    if user.display_name == name:
        return False
    audit(actor_id, "rename_bot", "user", user.id, f"{user.name} → {name}")
    user.display_name = name
    return True


def _set_room(bot: Bot, room: Room, actor_id: int | None) -> bool:
    if bot.room_id == room.id:
        return False
    db.session.execute(delete(Membership).where(Membership.user_id == bot.user_id))
    db.session.add(Membership(room_id=room.id, user_id=bot.user_id))
    bot.room_id = room.id
    audit(actor_id, "set_bot_room", "user", bot.user_id, f"{user_of(bot).name} → #{room.title}")
    return True


def _set_url(bot: Bot, url: str | None, actor_id: int | None) -> tuple[bool, str | None]:
    if url == bot.outgoing_url:
        return False, None
    made = None
    if url and not bot.outgoing_secret:
        made = bot.outgoing_secret = secrets.token_urlsafe(32)
    bot.outgoing_url = url
    shown = _shown_url(url) if url else "—"
    audit(actor_id, "set_bot_url", "user", bot.user_id, f"{user_of(bot).name} → {shown}")
    return True, made


def rotate_secret(bot: Bot, actor_id: int | None) -> str:
    """A new incoming secret (the old URL stops working at once); shown once."""
    hook = secrets.token_urlsafe(32)
    bot.hook_hash = hook_hash(hook)
    audit(actor_id, "rotate_bot_secret", "user", bot.user_id, user_of(bot).name)
    db.session.commit()
    return hook


def _shown_url(url: str) -> str:
    """The URL without its query, for the audit log (a query may carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def rotate_outgoing_secret(bot: Bot, actor_id: int | None) -> str:
    """A new signing secret for the outgoing webhook (the receiver must learn it); shown once."""
    if not bot.outgoing_url:
        raise BotError("no_url", _l("Set an outgoing URL first."))
    bot.outgoing_secret = secrets.token_urlsafe(32)
    audit(actor_id, "rotate_bot_signing", "user", bot.user_id, user_of(bot).name)
    db.session.commit()
    return bot.outgoing_secret


def delete_bot(bot: Bot, actor_id: int | None) -> str:
    """Delete the bot: its account is deactivated (its messages stay, under its name), its
    webhooks are gone; its name."""
    user = user_of(bot)
    user.deactivated_at = utcnow()
    db.session.execute(delete(Membership).where(Membership.user_id == user.id))
    db.session.delete(bot)
    audit(actor_id, "delete_bot", "user", user.id, user.name)
    db.session.commit()
    return user.name


def record_failure(user_id: int, reason: str) -> None:
    """Note the outgoing webhook's last failure, for administrators (if the bot still exists)."""
    bot = db.session.get(Bot, user_id)
    if bot is None:
        return
    bot.last_error = reason[:500]
    bot.last_error_at = utcnow()
    db.session.commit()


def listed() -> list[tuple[Bot, User, Room | None]]:
    """Every bot, its account and its room (None once deleted), by name."""
    rows = db.session.execute(
        select(Bot, User, Room)
        .join(User, User.id == Bot.user_id)
        .outerjoin(Room, Room.id == Bot.room_id)
    ).all()
    return sorted(
        ((bot, user, room) for bot, user, room in rows),
        key=lambda row: (row[1].name.casefold(), row[0].user_id),
    )
