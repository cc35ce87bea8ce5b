"""Database models: users and their messages."""

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Self, TypedDict

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from flask_login import UserMixin
from flask_migrate import upgrade
from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import ReturningInsert
from werkzeug.security import check_password_hash, generate_password_hash

from extensions import Model, db, migrate

MAX_DISPLAY_NAME_CHARS = 40


class MessageData(TypedDict):
    """A stored message as plain data (``Message.to_dict``): what the socket stack sends."""

    id: int
    room: str  # The room's key.
    user_id: int
    user: str  # The author's display name.
    text: str
    created_at: datetime  # Aware, in UTC.
    client_id: str | None


# What ``save_messages`` stores: ``(user_id, room_id, text, client_id, room_key, author)``.
MessageRow = tuple[int, int, str, str | None, str | None, str | None]


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Return ``moment`` as aware UTC (SQLite hands back naive datetimes)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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

    @property
    def default_name(self) -> str:
        """The part of the email before ``@``: the name of a user who chose none."""
        return self.email.split("@", 1)[0]

    @property
    def name(self) -> str:
        """Display name: the one chosen on the profile page, else ``default_name``."""
        return self.display_name or self.default_name

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


class Login(Model):
    """One signed-in browser: its session and remember-me cookie name it; logging out deletes it."""

    __tablename__ = "logins"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Random, unguessable.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Room(Model):
    """A public room anyone may join, or a direct-message thread between two users."""

    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # How frames name the room: a public room's name in lower case, or "dm:<low id>:<high id>".
    key: Mapped[str] = mapped_column(String(80), unique=True)
    title: Mapped[str] = mapped_column(String(64))  # The name as its creator wrote it.
    kind: Mapped[str] = mapped_column(String(16))  # PUBLIC or DIRECT
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


PUBLIC = "public"
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


class Message(Model):
    """A chat message in a room, stored before anyone sees it."""

    __tablename__ = "messages"
    # A client's retry of the same message finds the original instead of posting twice.
    __table_args__ = (
        UniqueConstraint("user_id", "client_id"),
        Index("ix_messages_room_id_id", "room_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    author: Mapped[User] = relationship(lazy="joined")
    room: Mapped[Room] = relationship(lazy="joined")

    def to_dict(self) -> MessageData:
        """Plain data for the wire, detached from the session."""
        return {
            "id": self.id,
            "room": self.room.key,
            "user_id": self.user_id,
            "user": self.author.name,
            "text": self.text,
            "created_at": as_utc(self.created_at),
            "client_id": self.client_id,
        }


def save_message(
    user_id: int,
    room_id: int,
    text: str,
    client_id: str | None = None,
    room_key: str | None = None,
    author: str | None = None,
) -> tuple[MessageData, bool]:
    """Persist a message; return ``(data, created)``. A repeated ``client_id`` gets the original.

    ``room_key`` and ``author`` (the author's display name), when given, spare two queries.
    """
    try:
        (data,) = save_messages([(user_id, room_id, text, client_id, room_key, author)])
    except IntegrityError:
        db.session.rollback()
        if client_id is None:
            raise
        original = db.session.scalar(
            select(Message).where(Message.user_id == user_id, Message.client_id == client_id)
        )
        if original is None:
            raise
        return original.to_dict(), False
    return data, True


def save_messages(rows: Sequence[MessageRow]) -> list[MessageData]:
    """Persist several new messages in one statement and one commit; their data, in id order.

    ``rows`` are ``(user_id, room_id, text, client_id, room_key, author)``; a ``room_key`` or
    ``author`` (display name) of None is looked up. This is the hot path: one Core ``INSERT …
    RETURNING``, not the ORM's unit of work. A ``client_id`` seen before raises
    ``IntegrityError`` for the whole batch (nothing is stored): the caller then stores them one
    by one with ``save_message``, which finds the originals.
    """
    created_at = utcnow()
    values = [
        {"user_id": u, "room_id": r, "text": t, "client_id": c, "created_at": created_at}
        for u, r, t, c, _key, _author in rows
    ]
    # A connection of its own, not the session: the session's bookkeeping cost more than the
    # INSERT. The transaction commits when the block ends, and rolls back on any error.
    with db.engine.begin() as connection:
        ids = connection.execute(_insert_returning_ids(), values).scalars().all()
    # Built after the commit, before the publish: if the publish fails, a client's retry (same
    # client_id) finds its row.
    data: list[MessageData] = [
        {
            "id": message_id,
            "room": key or db.session.get_one(Room, room_id).key,
            "user_id": user_id,
            "user": author or db.session.get_one(User, user_id).name,
            "text": text,
            "created_at": created_at,
            "client_id": client_id,
        }
        for message_id, (user_id, room_id, text, client_id, key, author) in zip(
            ids, rows, strict=True
        )
    ]
    return data


@cache
def _insert_returning_ids() -> ReturningInsert[int]:
    """``INSERT INTO messages … RETURNING id``, built once (building it cost a cache-key walk).

    On the Table, not the mapped class: the ORM's bulk-insert layer cost more than the INSERT.
    ``sort_by_parameter_order``: ids come back in the order of the rows, on every database.
    """
    table = Message.__table__
    assert isinstance(table, Table)  # A mapped class's ``__table__`` is typed as any FromClause.
    return insert(table).returning(table.c.id, sort_by_parameter_order=True)


def latest_message_id() -> int:
    """The id of the newest message in any room (0 when there is none)."""
    return db.session.scalar(select(func.max(Message.id))) or 0


def messages_before(room_id: int, before: int | None = None, limit: int = 50) -> list[MessageData]:
    """Up to ``limit`` messages of a room older than id ``before`` (or the latest), oldest first."""
    query = select(Message).where(Message.room_id == room_id)
    if before is not None:
        query = query.where(Message.id < before)
    newest = db.session.scalars(query.order_by(Message.id.desc()).limit(limit)).all()
    return [message.to_dict() for message in reversed(newest)]


def messages_after(room_id: int, after: int, limit: int) -> list[MessageData]:
    """Up to ``limit`` messages of a room newer than id ``after``, oldest first."""
    query = select(Message).where(Message.room_id == room_id, Message.id > after)
    return [m.to_dict() for m in db.session.scalars(query.order_by(Message.id).limit(limit))]


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
