"""Database models: users, rooms, and their messages with their reactions, mentions, changes
and attached files."""

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, Self, TypedDict

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from flask_login import UserMixin
from flask_migrate import upgrade
from sqlalchemy import (
    DDL,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    event,
    false,
    func,
    insert,
    select,
    true,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import ReturningInsert
from werkzeug.security import check_password_hash, generate_password_hash

from core.formatting import MENTION_MARK, excerpt, mentioned_ids
from extensions import Model, db, migrate

MAX_DISPLAY_NAME_CHARS = 40


MAX_REACTIONS = 20  # Different emoji on one message.
MAX_FILE_NAME_CHARS = 200

# The kinds of change a message goes through after it is posted (``MessageChange.kind``).
# An account's role: administrators run the server (the admin page, moderation).
ADMIN = "admin"
MEMBER = "member"
ROLES = (ADMIN, MEMBER)

EDIT = "edit"
DELETE = "delete"
REACT = "react"
UNREACT = "unreact"
PREVIEW = "preview"  # Its first link's preview arrived (``previews/``),
UNPREVIEW = "unpreview"  # or its author removed it.


class QuoteData(TypedDict):
    """How a reply shows the message it answers."""

    id: int
    user: str
    user_id: int
    excerpt: str  # Its first characters, mentions as "@name"; "" once deleted.
    deleted: bool


class ReactionData(TypedDict):
    """One emoji on a message: who gave it, in the order they did."""

    emoji: str
    count: int
    user_ids: list[int]


class AttachmentData(TypedDict):
    """A file attached to a message (or uploaded, not yet posted), as plain data."""

    id: int
    name: str
    size: int  # Bytes, as served (an image without its metadata).
    content_type: str  # Sniffed from the bytes.
    width: int | None  # An image's size in pixels; None for any other file.
    height: int | None
    thumbnail: bool  # Whether it has a thumbnail (every image).


class PreviewData(TypedDict):
    """The preview of a message's first link: what its page's OpenGraph tags said."""

    url: str
    title: str
    description: str
    site_name: str
    image_url: str | None  # Our re-encoded copy of its image (never the page's own address).
    image_width: int | None
    image_height: int | None


def preview_data(preview: "LinkPreview") -> PreviewData:
    """A stored preview as plain data."""
    return {
        "url": preview.url,
        "title": preview.title,
        "description": preview.description,
        "site_name": preview.site_name,
        "image_url": f"/previews/{preview.id}/image" if preview.image_key else None,
        "image_width": preview.image_width,
        "image_height": preview.image_height,
    }


class MessageData(TypedDict):
    """A stored message as it is now, as plain data (``describe``): what the socket stack sends."""

    id: int
    room: str  # The room's key.
    user_id: int
    user: str  # The author's display name.
    avatar_url: str | None  # The author's uploaded picture now (when sent); None: the initials.
    bot: bool  # Whether the author is a bot.
    text: str  # "" once deleted.
    created_at: datetime  # Aware, in UTC.
    client_id: str | None
    edited_at: datetime | None
    deleted: bool
    reply_to: QuoteData | None
    reactions: list[ReactionData]  # In order of first use.
    mentions: dict[int, str]  # The people it mentions (who were in the room): id -> name now.
    attachments: list[AttachmentData]  # In the order they were sent; none once deleted.
    preview: PreviewData | None  # Of its first link, once fetched; None once deleted.


class MessageRow(NamedTuple):
    """What ``save_messages`` stores; a ``room_key`` or ``author`` of None is looked up (with
    ``author``, the author's ``avatar_url`` too: a given ``author`` comes with its picture)."""

    user_id: int
    room_id: int
    text: str
    client_id: str | None = None
    room_key: str | None = None
    author: str | None = None  # The author's display name.
    reply_to: int | None = None  # A message of the same room (the caller checked).
    attachments: tuple[int, ...] = ()  # The author's own uploads, not yet posted (checked too).
    avatar_url: str | None = None  # The author's picture (the socket knows it, as the name).
    bot: bool = False  # Whether the author is a bot (given with ``author``).


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Return ``moment`` as aware UTC (SQLite hands back naive datetimes)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def display_name(chosen: str | None, email: str) -> str:
    """The name people see: the one chosen on the profile page, else the email before ``@``
    (``User.name``, for a caller that read the two columns without loading the user)."""
    return chosen or email.split("@", 1)[0]


class User(UserMixin, Model):
    """An account: a unique lower-case email and a password hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Bumped to revoke every socket token issued before (logout does it).
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped to end every session, on every device, issued before.
    session_version: Mapped[int] = mapped_column(Integer, default=0)
    # Chosen on the profile page; None means the default (the email's local part).
    display_name: Mapped[str | None] = mapped_column(String(MAX_DISPLAY_NAME_CHARS))
    # A language code of LANGUAGES; None means "from the browser" (Accept-Language).
    locale: Mapped[str | None] = mapped_column(String(8))
    role: Mapped[str] = mapped_column(String(16), default=MEMBER, server_default=MEMBER)
    # Set while the account is deactivated: no login, no session, no socket; messages stay.
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The uploaded avatar's key in the file store ("avatars/<id>/<hash>.webp"); None: initials.
    avatar: Mapped[str | None] = mapped_column(String(96))
    # A bot (``Bot``): an account no one logs in to, shown as a bot everywhere.
    is_bot: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Whether missed mentions and direct messages are mailed (the digest); its unsubscribe link
    # clears it. ``last_digest_at``: the end of the period the last digest covered (its run's
    # time minus the quiet period; None: never), where the next one starts.
    digest: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    last_digest_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def avatar_url(self) -> str | None:
        """Where pages load the uploaded avatar (immutable: a new picture gets a new key)."""
        return f"/{self.avatar}" if self.avatar else None

    @property
    def is_admin(self) -> bool:
        """Whether this account runs the server (and is active)."""
        return self.role == ADMIN and self.deactivated_at is None and not self.is_bot

    @property
    def is_active(self) -> bool:
        """Flask-Login's flag: a deactivated account is never logged in."""
        return self.deactivated_at is None

    @property
    def default_name(self) -> str:
        """The part of the email before ``@``: the name of a user who chose none."""
        return self.email.split("@", 1)[0]

    @property
    def name(self) -> str:
        """Display name: the one chosen on the profile page, else ``default_name``."""
        return display_name(self.display_name, self.email)

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password``, at the configured cost."""
        method = current_app.config["CHAT_PASSWORD_HASH"]
        self.password_hash = generate_password_hash(password, method=method)

    def check_password(self, password: str) -> bool:
        """Tell whether ``password`` matches the stored hash."""
        return check_password_hash(self.password_hash, password)

    def get_id(self) -> str:
        """Session identity: id and session version, so that a version bump ends sessions."""
        return f"{self.id}.{self.session_version}"

    @classmethod
    def by_email(cls, email: str) -> Self | None:
        """Return the user with ``email`` (any case), or None."""
        return db.session.scalar(select(cls).where(cls.email == email.strip().lower()))


class AuditEntry(Model):
    """One administrative action: who (None: the shell), what, on whom or what, and when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(32))
    target_type: Mapped[str] = mapped_column(String(16))  # "user", "room", "message", "server"
    target_id: Mapped[int | None] = mapped_column(Integer)
    # What the target was called then, and the change ("member → admin"): plain text, as shown.
    details: Mapped[str] = mapped_column(Text, default="")


class Invitation(Model):
    """A link that makes an account (whatever the registration policy: an administrator made
    it) and joins it to chosen public rooms; it may expire, run out of uses, or be revoked."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # SHA-256 of the link's secret: the database alone never holds a usable link.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    max_uses: Mapped[int | None] = mapped_column(Integer)  # None: any number
    uses: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    room_keys: Mapped[str] = mapped_column(Text, default="")  # Space-separated room keys.
    # A server link (an administrator's) makes accounts; a room link only lets an existing
    # account in (it makes one only while registration is open).
    makes_accounts: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


READ = "read"  # An API token's scope: reading only.
WRITE = "write"  # Reading and writing (posting, editing, deleting, reacting, uploading).
SCOPES = (READ, WRITE)


class ApiToken(Model):
    """A personal API token: named, scoped, shown once (only its hash is kept), revocable."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the secret.
    scope: Mapped[str] = mapped_column(String(8))  # READ or WRITE
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PushSubscription(Model):
    """A browser subscribed to Web Push for its user: where to push, and the keys to encrypt."""

    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    endpoint: Mapped[str] = mapped_column(String(2048), unique=True)
    p256dh: Mapped[str] = mapped_column(String(128))  # The browser's public key (base64url).
    auth: Mapped[str] = mapped_column(String(64))  # Its authentication secret (base64url).
    user_agent: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_push_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Bot(Model):
    """A bot's account (``User.is_bot``), its incoming webhook into one room, and optionally an
    outgoing webhook called when it is mentioned."""

    __tablename__ = "bots"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    # Where the incoming webhook posts (None once the room is deleted: the hook then refuses).
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="SET NULL"))
    hook_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of its secret.
    outgoing_url: Mapped[str | None] = mapped_column(String(2048))
    # The HMAC key that signs outgoing calls: kept in clear, since signing needs it.
    outgoing_secret: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The last failure of the outgoing webhook, as administrators see it ("" : none).
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LinkPreview(Model):
    """What a page's OpenGraph tags said, fetched once per URL and shared by its messages."""

    __tablename__ = "link_previews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    ok: Mapped[bool] = mapped_column(Boolean, default=False)  # False: fetched, nothing to show.
    title: Mapped[str] = mapped_column(String(300), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    site_name: Mapped[str] = mapped_column(String(100), default="")
    # The image re-encoded through the thumbnail path, in the file store (None: no image).
    image_key: Mapped[str | None] = mapped_column(String(80))
    image_width: Mapped[int | None] = mapped_column(Integer)
    image_height: Mapped[int | None] = mapped_column(Integer)
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Setting(Model):
    """A server setting changed on the admin page; it wins over the configuration's default."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Login(Model):
    """One signed-in browser: its session and remember-me cookie name it; logging out deletes it."""

    __tablename__ = "logins"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Random, unguessable.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Room(Model):
    """A public room anyone may join, a private room its members invite to, or a direct-message
    thread between two users."""

    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # How frames name the room: a public room's name in lower case, or "dm:<low id>:<high id>".
    key: Mapped[str] = mapped_column(String(80), unique=True)
    title: Mapped[str] = mapped_column(String(64))  # The name as its creator wrote it.
    kind: Mapped[str] = mapped_column(String(16))  # PUBLIC, PRIVATE or DIRECT
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Who made it (they may rename and archive it). No foreign key: SQLite cannot add one to a
    # table without copying it, and accounts are deactivated, never deleted.
    created_by: Mapped[int | None] = mapped_column(Integer)
    topic: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Set while archived: read-only (no message, edit, reaction or join), still searchable.
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


NOTIFY_ALL = "all"
NOTIFY_MENTIONS = "mentions"  # And every message of a direct room.
NOTIFY_NOTHING = "nothing"
NOTIFY_LEVELS = (NOTIFY_ALL, NOTIFY_MENTIONS, NOTIFY_NOTHING)

PUBLIC = "public"
PRIVATE = "private"
DIRECT = "direct"
GENERAL = "general"


class Membership(Model):
    """A user in a room, and the last message they have read there."""

    __tablename__ = "memberships"

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    last_read_id: Mapped[int] = mapped_column(Integer, default=0)
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # What tells this person about new messages here: NOTIFY_ALL, NOTIFY_MENTIONS or
    # NOTIFY_NOTHING; None is the default (all in a direct room, mentions elsewhere).
    notify: Mapped[str | None] = mapped_column(String(16))


class Message(Model):
    """A chat message in a room, stored before anyone sees it."""

    __tablename__ = "messages"
    # A client's retry of the same message finds the original instead of posting twice.
    __table_args__ = (
        UniqueConstraint("user_id", "client_id"),
        Index("ix_messages_room_id_id", "room_id", "id"),
        # Who may see a preview's image: the messages that show it (``previews.views``).
        Index("ix_messages_preview_id", "preview_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)  # Emptied when the message is deleted.
    client_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The message this one answers, in the same room. Parents are never removed but with their
    # room (a deletion empties them): the reference stays valid.
    reply_to_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), index=True
    )
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The names of its files as words, for the search index alone (None: no file).
    attachment_names: Mapped[str | None] = mapped_column(Text)
    # The ``LinkPreview`` of its first link (None: none, not yet, or removed by its author). No
    # foreign key, as ``Room.created_by``: SQLite cannot add one without copying the table (and
    # its search triggers); previews are never deleted while a message names them.
    preview_id: Mapped[int | None] = mapped_column(Integer)

    author: Mapped[User] = relationship(lazy="joined")
    room: Mapped[Room] = relationship(lazy="joined")


class Attachment(Model):
    """An uploaded file: its uploader's alone until a message carries it (``message_id``), then
    readable by the message's room. The bytes are in the store (``files.store``) under ``key``."""

    __tablename__ = "attachments"
    __table_args__ = (Index("ix_attachments_message_id_created_at", "message_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uploader_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)  # Its place in the message.
    name: Mapped[str] = mapped_column(String(MAX_FILE_NAME_CHARS))
    size: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(127))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(80), unique=True)  # Random: nothing to guess.
    thumbnail_key: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def data(self) -> AttachmentData:
        """The file as plain data."""
        return attachment_data(self)


def attachment_data(row: "Attachment | Row[Any]") -> AttachmentData:
    """An attachment (a model or a row with its columns) as plain data."""
    return {
        "id": row.id,
        "name": row.name,
        "size": row.size,
        "content_type": row.content_type,
        "width": row.width,
        "height": row.height,
        "thumbnail": row.thumbnail_key is not None,
    }


class Reaction(Model):
    """One person's emoji on a message; its id orders reactions by first use."""

    __tablename__ = "reactions"
    __table_args__ = (UniqueConstraint("message_id", "user_id", "emoji"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    emoji: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Mention(Model):
    """A person a message mentions, by id (so that it survives a rename)."""

    __tablename__ = "mentions"

    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class MessageChange(Model):
    """One edit, deletion or reaction, numbered in the order they happened: what a resuming
    client replays from (``changes_after``), and what makes a retried ``client_id`` a no-op."""

    __tablename__ = "message_changes"
    __table_args__ = (
        UniqueConstraint("user_id", "client_id"),
        Index("ix_message_changes_room_id_id", "room_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # EDIT, DELETE, REACT or UNREACT
    client_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# The full-text index of messages (``core/search.py``), which the database keeps for itself:
# not a model, so ``flask db check`` leaves it out (``migrations/env.py``). Created with the
# table by ``create_all`` (tests) and by the migration 7c1d2e3f4a5b (every deployment).
# Both index the text and the names of the message's files.
# SQLite: FTS5 over the text, kept by triggers in each write's transaction; unicode61 with
# remove_diacritics 2 ignores case and accents and stems nothing.
SEARCH_DDL_SQLITE = [
    "CREATE VIRTUAL TABLE messages_search USING fts5(text, attachment_names,"
    " content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN"
    " INSERT INTO messages_search(rowid, text, attachment_names)"
    " VALUES (new.id, new.text, new.attachment_names); END",
    "CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN"
    " INSERT INTO messages_search(messages_search, rowid, text, attachment_names)"
    " VALUES ('delete', old.id, old.text, old.attachment_names); END",
    "CREATE TRIGGER messages_search_update AFTER UPDATE OF text, attachment_names ON messages"
    " BEGIN INSERT INTO messages_search(messages_search, rowid, text, attachment_names)"
    " VALUES ('delete', old.id, old.text, old.attachment_names);"
    " INSERT INTO messages_search(rowid, text, attachment_names)"
    " VALUES (new.id, new.text, new.attachment_names); END",
]
# PostgreSQL: a generated tsvector (the 'simple' configuration: no English stemming of French)
# with a GIN index. unaccent is a trusted extension (PostgreSQL 13+, the database's owner may
# create it); its function is only STABLE, so a generated column needs it wrapped as IMMUTABLE,
# with the extension's schema spelled out, as PostgreSQL's documentation suggests. (DDL() reads
# "%" as its own placeholders: "%%" is one "%".)
SEARCH_DDL_POSTGRES = [
    """DO $$
DECLARE home text;
BEGIN
  CREATE EXTENSION IF NOT EXISTS unaccent;
  SELECT quote_ident(n.nspname) INTO home FROM pg_extension e
    JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'unaccent';
  EXECUTE format(
    'CREATE OR REPLACE FUNCTION chat_unaccent(text) RETURNS text'
    ' LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT RETURN %%s.unaccent(%%L::regdictionary, $1)',
    home, home || '.unaccent');
END $$""",
    "ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple',"
    " chat_unaccent(text || ' ' || coalesce(attachment_names, '')))) STORED",
    "CREATE INDEX ix_messages_search ON messages USING gin (search)",
]
for _statement in SEARCH_DDL_SQLITE:
    event.listen(Message.__table__, "after_create", DDL(_statement).execute_if(dialect="sqlite"))
for _statement in SEARCH_DDL_POSTGRES:
    event.listen(
        Message.__table__, "after_create", DDL(_statement).execute_if(dialect="postgresql")
    )


def save_message(
    user_id: int,
    room_id: int,
    text: str,
    client_id: str | None = None,
    room_key: str | None = None,
    author: str | None = None,
    reply_to: int | None = None,
    attachments: tuple[int, ...] = (),
    avatar_url: str | None = None,
    bot: bool = False,
) -> tuple[MessageData, bool]:
    """Persist a message; return ``(data, created)``. A repeated ``client_id`` gets the original.

    ``room_key`` and ``author`` (the author's display name, with ``avatar_url``, their picture),
    when given, spare two queries.
    """
    row = MessageRow(
        user_id, room_id, text, client_id, room_key, author, reply_to, attachments, avatar_url, bot
    )
    try:
        (data,) = save_messages([row])
    except IntegrityError:
        db.session.rollback()
        if client_id is None:
            raise
        original = db.session.scalar(
            select(Message).where(Message.user_id == user_id, Message.client_id == client_id)
        )
        if original is None:
            raise
        return describe([original])[0], False
    return data, True


def save_messages(rows: Sequence[tuple[object, ...]]) -> list[MessageData]:
    """Persist several new messages in one transaction; their data, in id order.

    ``rows`` are ``MessageRow``s (or tuples of their fields). This is the hot path: one Core
    ``INSERT … RETURNING``, not the ORM's unit of work, and for the rare message that mentions
    someone one more INSERT. A ``client_id`` seen before raises ``IntegrityError`` for the whole
    batch (nothing is stored): the caller then stores them one by one with ``save_message``,
    which finds the originals.
    """
    created_at = utcnow()
    posts = [MessageRow(*row) for row in rows]  # type: ignore[arg-type]  # checked by NamedTuple
    # A connection of its own, not the session: the session's bookkeeping cost more than the
    # INSERT. The transaction commits when the block ends, and rolls back on any error.
    with db.engine.begin() as connection:
        rows = _uploads_of(connection, posts)
        files = {row.id: attachment_data(row) for row in rows}
        values = [
            {
                "user_id": post.user_id,
                "room_id": post.room_id,
                "text": post.text,
                "client_id": post.client_id,
                "created_at": created_at,
                "reply_to_id": post.reply_to,
                "attachment_names": searchable_names(files[a]["name"] for a in post.attachments),
            }
            for post in posts
        ]
        # A retried client_id fails here, before its files (attached to the original) are seen.
        ids = connection.execute(_insert_returning_ids(), values).scalars().all()
        _check_claimable(rows, posts)
        _claim(connection, ids, posts)
        mentions = {
            message_id: _members_among(connection, post.room_id, mentioned_ids(post.text))
            for message_id, post in zip(ids, posts, strict=True)
            if MENTION_MARK in post.text
        }
        if any(mentions.values()):
            connection.execute(
                insert(Mention),
                [{"message_id": m, "user_id": u} for m, users in mentions.items() for u in users],
            )
    # Built after the commit, before the publish: if the publish fails, a client's retry (same
    # client_id) finds its row.
    names = _names({user for users in mentions.values() for user in users})
    parents = _quotes({post.reply_to for post in posts if post.reply_to is not None})
    authors = [_author(post) for post in posts]  # (name, picture, bot)
    return [
        {
            "id": message_id,
            "room": post.room_key or db.session.get_one(Room, post.room_id).key,
            "user_id": post.user_id,
            "user": author,
            "avatar_url": avatar_url,
            "bot": bot,
            "text": post.text,
            "created_at": created_at,
            "client_id": post.client_id,
            "edited_at": None,
            "deleted": False,
            "reply_to": parents.get(post.reply_to) if post.reply_to is not None else None,
            "reactions": [],
            "mentions": {user: names[user] for user in mentions.get(message_id, ())},
            "attachments": [files[attachment] for attachment in post.attachments],
            "preview": None,  # Fetched afterwards, and announced as a change.
        }
        for message_id, post, (author, avatar_url, bot) in zip(ids, posts, authors, strict=True)
    ]


def _author(post: MessageRow) -> tuple[str, str | None, bool]:
    """The post's author's name and picture and whether a bot: as given, else looked up."""
    if post.author is not None:
        return post.author, post.avatar_url, post.bot
    user = db.session.get_one(User, post.user_id)
    return user.name, user.avatar_url, user.is_bot


def searchable_names(names: Iterable[str]) -> str | None:
    """File names as words for the search index: "plan-v2.pdf" is "plan v2 pdf" (PostgreSQL's
    parser would keep it whole, as a file name), None for no file."""
    words = " ".join(_NOT_WORD.sub(" ", name).strip() for name in names)
    return words or None


_NOT_WORD = re.compile(r"[\W_]+")


class AttachmentTaken(Exception):
    """An upload a post carries is gone or already in a message (``realtime.commits`` checks
    before storing, under the order lock; only the sweep of old uploads can race it)."""


def _uploads_of(connection: Connection, posts: Sequence[MessageRow]) -> Sequence[Row[Any]]:
    """The rows of the uploads the posts carry, locked until the transaction ends (PostgreSQL:
    the sweep of old uploads waits; SQLite's single writer needs no lock)."""
    wanted = [attachment for post in posts for attachment in post.attachments]
    if not wanted:
        return []
    # In id order, as the sweep deletes them: two lockers never wait on each other in a ring.
    query = (
        select(Attachment.__table__)
        .where(Attachment.id.in_(wanted))
        .order_by(Attachment.id)
        .with_for_update()
    )
    return connection.execute(query).all()


def _check_claimable(rows: Sequence[Row[Any]], posts: Sequence[MessageRow]) -> None:
    """Raise ``AttachmentTaken`` unless every upload is its post's author's and unposted."""
    found = {row.id: row for row in rows}
    wanted = [attachment for post in posts for attachment in post.attachments]
    if len(set(wanted)) != len(wanted):
        raise AttachmentTaken("one upload in two posts")
    for post in posts:
        for attachment in post.attachments:
            row = found.get(attachment)
            if row is None or row.uploader_id != post.user_id or row.message_id is not None:
                raise AttachmentTaken(attachment)


def _claim(connection: Connection, message_ids: Sequence[int], posts: Sequence[MessageRow]) -> None:
    """Attach each post's uploads to its new message, in the order it gave them."""
    table = Attachment.__table__
    assert isinstance(table, Table)  # A mapped class's ``__table__`` is typed as any FromClause.
    claims = [
        {"attachment": attachment, "message": message_id, "place": place}
        for message_id, post in zip(message_ids, posts, strict=True)
        for place, attachment in enumerate(post.attachments)
    ]
    if claims:
        connection.execute(
            table.update()
            .where(table.c.id == bindparam("attachment"))
            .values(message_id=bindparam("message"), position=bindparam("place")),
            claims,
        )


def _members_among(connection: Connection, room_id: int, user_ids: Sequence[int]) -> list[int]:
    """Those of ``user_ids`` who are in the room, in the order given: the only ones mentioned."""
    if not user_ids:
        return []
    query = select(Membership.user_id).where(
        Membership.room_id == room_id, Membership.user_id.in_(user_ids)
    )
    members = set(connection.execute(query).scalars())
    return [user_id for user_id in user_ids if user_id in members]


def _names(user_ids: Iterable[int]) -> dict[int, str]:
    """``{user id: display name now}``."""
    wanted = set(user_ids)
    if not wanted:
        return {}
    return {
        user.id: user.name for user in db.session.scalars(select(User).where(User.id.in_(wanted)))
    }


def describe(messages: Sequence[Message]) -> list[MessageData]:
    """Each message as it is now, with its reply, reactions, mentions, files and link preview
    (a query for each that any of them has)."""
    ids = [message.id for message in messages]
    previews = _previews({m.preview_id for m in messages if m.preview_id and not m.deleted_at})
    reactions = _reactions(ids)
    mentions = _mentions(ids)
    files = attachments_of([m.id for m in messages if m.attachment_names is not None])
    quotes = _quotes({m.reply_to_id for m in messages if m.reply_to_id is not None})
    return [
        {
            "id": message.id,
            "room": message.room.key,
            "user_id": message.user_id,
            "user": message.author.name,
            "avatar_url": message.author.avatar_url,
            "bot": message.author.is_bot,
            "text": message.text,
            "created_at": as_utc(message.created_at),
            "client_id": message.client_id,
            "edited_at": as_utc(message.edited_at) if message.edited_at else None,
            "deleted": message.deleted_at is not None,
            "reply_to": quotes.get(message.reply_to_id) if message.reply_to_id else None,
            "reactions": reactions.get(message.id, []),
            "mentions": mentions.get(message.id, {}),
            "attachments": files.get(message.id, []),
            "preview": previews.get(message.preview_id) if message.preview_id else None,
        }
        for message in messages
    ]


def _previews(preview_ids: set[int]) -> dict[int, PreviewData]:
    """``{preview id: its data}`` of those worth showing (``ok``)."""
    if not preview_ids:
        return {}
    rows = db.session.scalars(
        select(LinkPreview).where(LinkPreview.id.in_(preview_ids), LinkPreview.ok.is_(True))
    )
    return {row.id: preview_data(row) for row in rows}


def attachments_of(message_ids: Sequence[int]) -> dict[int, list[AttachmentData]]:
    """``{message id: its files, in order}``."""
    if not message_ids:
        return {}
    rows = db.session.scalars(
        select(Attachment)
        .where(Attachment.message_id.in_(message_ids))
        .order_by(Attachment.message_id, Attachment.position)
    )
    found: dict[int, list[AttachmentData]] = {}
    for row in rows:
        assert row.message_id is not None  # The query asked for attached files only.
        found.setdefault(row.message_id, []).append(row.data())
    return found


def _reactions(message_ids: Sequence[int]) -> dict[int, list[ReactionData]]:
    """``{message id: its reactions}``, each emoji in order of first use."""
    if not message_ids:
        return {}
    rows = db.session.execute(
        select(Reaction.message_id, Reaction.emoji, Reaction.user_id)
        .where(Reaction.message_id.in_(message_ids))
        .order_by(Reaction.id)
    )
    found: dict[int, dict[str, ReactionData]] = {}
    for message_id, emoji, user_id in rows:
        entry = found.setdefault(message_id, {}).setdefault(
            emoji, {"emoji": emoji, "count": 0, "user_ids": []}
        )
        entry["count"] += 1
        entry["user_ids"].append(user_id)
    return {message_id: list(by_emoji.values()) for message_id, by_emoji in found.items()}


def _mentions(message_ids: Sequence[int]) -> dict[int, dict[int, str]]:
    """``{message id: {mentioned user id: their name now}}``."""
    if not message_ids:
        return {}
    rows = db.session.execute(
        select(Mention.message_id, User)
        .join(User, User.id == Mention.user_id)
        .where(Mention.message_id.in_(message_ids))
        .order_by(Mention.message_id, User.id)
    )
    found: dict[int, dict[int, str]] = {}
    for message_id, user in rows:
        found.setdefault(message_id, {})[user.id] = user.name
    return found


def _quotes(message_ids: Iterable[int]) -> dict[int, QuoteData]:
    """``{message id: how replies show it}``."""
    wanted = set(message_ids)
    if not wanted:
        return {}
    parents = db.session.scalars(select(Message).where(Message.id.in_(wanted))).all()
    mentions = _mentions([parent.id for parent in parents])
    return {parent.id: quote(parent, mentions.get(parent.id, {})) for parent in parents}


def quote(message: Message, mentions: Mapping[int, str]) -> QuoteData:
    """How replies show ``message``, whose mentions are ``mentions`` (id -> name)."""
    deleted = message.deleted_at is not None
    return {
        "id": message.id,
        "user": message.author.name,
        "user_id": message.user_id,
        "excerpt": "" if deleted else excerpt(message.text, mentions),
        "deleted": deleted,
    }


def quote_of(message: Message) -> QuoteData:
    """``quote`` with the message's mentions read from the database."""
    return quote(message, _mentions([message.id]).get(message.id, {}))


@cache
def _insert_returning_ids() -> ReturningInsert[int]:
    """``INSERT INTO messages … RETURNING id``, built once (building it cost a cache-key walk).

    On the Table, not the mapped class: the ORM's bulk-insert layer cost more than the INSERT.
    ``sort_by_parameter_order``: ids come back in the order of the rows, on every database.
    """
    table = Message.__table__
    assert isinstance(table, Table)  # A mapped class's ``__table__`` is typed as any FromClause.
    return insert(table).returning(table.c.id, sort_by_parameter_order=True)


# Built once: every greeting reads both, under the hub's lock (see core/rooms.py on why).
_LATEST_MESSAGE = select(func.max(Message.id))
_LATEST_CHANGE = select(func.max(MessageChange.id))


_AVATARS = select(User.id, User.avatar).where(User.id.in_(bindparam("user_ids", expanding=True)))


def avatar_urls_of(user_ids: Collection[int]) -> dict[int, str | None]:
    """``{user id: User.avatar_url}`` of several users in one query (a batch of greetings', at
    most ``realtime.arrivals.MAX_ARRIVALS`` ids)."""
    rows = db.session.connection().execute(_AVATARS, {"user_ids": sorted(user_ids)})
    return {user_id: f"/{avatar}" if avatar else None for user_id, avatar in rows}


def latest_message_id() -> int:
    """The id of the newest message in any room (0 when there is none)."""
    return db.session.connection().execute(_LATEST_MESSAGE).scalar() or 0


def latest_change_id() -> int:
    """The number of the latest change to any message (0 when there is none)."""
    return db.session.connection().execute(_LATEST_CHANGE).scalar() or 0


def messages_before(room_id: int, before: int | None = None, limit: int = 50) -> list[MessageData]:
    """Up to ``limit`` messages of a room older than id ``before`` (or the latest), oldest first."""
    query = select(Message).where(Message.room_id == room_id)
    if before is not None:
        query = query.where(Message.id < before)
    newest = db.session.scalars(query.order_by(Message.id.desc()).limit(limit)).all()
    return describe(list(reversed(newest)))


def messages_after(
    room_id: int, after: int, limit: int, up_to: int | None = None
) -> list[MessageData]:
    """Up to ``limit`` messages of a room newer than id ``after`` (and at most ``up_to``),
    oldest first."""
    query = select(Message).where(Message.room_id == room_id, Message.id > after)
    if up_to is not None:
        query = query.where(Message.id <= up_to)
    return describe(db.session.scalars(query.order_by(Message.id).limit(limit)).all())


def changed_since(
    room_id: int, after_change: int, up_to_message: int, limit: int, up_to_change: int
) -> list[int]:
    """Ids of up to ``limit`` messages of a room, of id at most ``up_to_message``, changed after
    change ``after_change`` and at or before ``up_to_change``, in the order of their latest such
    change: what a resume replays (later changes reach the socket live)."""
    latest = func.max(MessageChange.id)
    rows = db.session.execute(
        select(MessageChange.message_id, latest)
        .where(
            MessageChange.room_id == room_id,
            MessageChange.id > after_change,
            MessageChange.id <= up_to_change,
            MessageChange.message_id <= up_to_message,
        )
        .group_by(MessageChange.message_id)
        .order_by(latest)
        .limit(limit)
    )
    return [message_id for message_id, _ in rows]


def latest_changes(
    message_ids: Sequence[int], up_to: int | None = None
) -> dict[int, MessageChange]:
    """``{message id: its latest change}`` (the latest numbered at most ``up_to``)."""
    if not message_ids:
        return {}
    bound = [] if up_to is None else [MessageChange.id <= up_to]
    newest = (
        select(func.max(MessageChange.id))
        .where(MessageChange.message_id.in_(message_ids), *bound)
        .group_by(MessageChange.message_id)
    )
    rows = db.session.scalars(select(MessageChange).where(MessageChange.id.in_(newest)))
    return {change.message_id: change for change in rows}


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def init_app(app: Flask) -> None:
    """Bind the database and migrations to ``app``, tune SQLite, register ``flask init-db``."""
    db.init_app(app)
    # Batch mode lets Alembic alter SQLite tables (by copying them) as it alters PostgreSQL's.
    migrate.init_app(app, db, directory=str(MIGRATIONS), render_as_batch=True)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _tune_sqlite)
    app.cli.add_command(init_db_command)


def _tune_sqlite(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """WAL lets readers work during a write; foreign keys are off by default in SQLite."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create or upgrade the schema to the latest migration (data is kept), and ``general``."""
    upgrade(directory=str(MIGRATIONS))
    ensure_general()
    click.echo("Database ready.")


def ensure_general() -> int:
    """Return the id of the ``general`` room, creating it if needed."""
    room_id = db.session.scalar(select(Room.id).where(Room.key == GENERAL))
    if room_id is not None:
        return room_id
    room = Room(key=GENERAL, title=GENERAL, kind=PUBLIC)
    db.session.add(room)
    try:
        db.session.commit()
    except IntegrityError:  # Created by another worker meanwhile.
        db.session.rollback()
        return db.session.execute(select(Room.id).where(Room.key == GENERAL)).scalar_one()
    return room.id
