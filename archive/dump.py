"""The chat as JSON Lines: a header, then one object per row, table after table in the order
their references need (people before rooms, rooms before messages, messages before what hangs
on them).

Each row line is ``{"table": name, "row": {column: value}}``, every column the models define,
with its own ids, so that every reference (a reply, a reaction, a read marker, a change number)
survives the trip. Times are ISO 8601 in UTC. Sessions (``logins``) are left out: nobody stays
signed in across a move. Password hashes and API tokens are left out unless asked for;
without them every account needs a new password (``flask create-user`` sets one) and new tokens.
"""

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import DateTime, Table, func, insert, select, text
from sqlalchemy.engine import Connection

from models import (
    ApiToken,
    Attachment,
    AuditEntry,
    Bot,
    Invitation,
    LinkPreview,
    Membership,
    Mention,
    Message,
    MessageChange,
    PushSubscription,
    Reaction,
    Room,
    Setting,
    User,
)

FORMAT = "chat-export"
VERSION = 1
BATCH = 1000  # Rows per INSERT on import, and per fetch on export.
# In the order an import needs them.
MODELS = (
    User,
    Room,
    Membership,
    LinkPreview,
    Message,
    Attachment,
    Reaction,
    Mention,
    MessageChange,
    Invitation,
    AuditEntry,
    Setting,
    Bot,
    ApiToken,
    PushSubscription,
)
# Credentials, like password hashes: API tokens are exported only with them (a token hash opens
# the API as surely as a password).
CREDENTIAL_TABLES = {"api_tokens"}
NO_PASSWORD = "!"  # noqa: S105 - not a hash of anything: no password ever matches it


class ArchiveError(Exception):
    """A file that cannot be imported, or a database that cannot take it."""


def tables() -> list[Table]:
    """The tables exported, in order."""
    found = []
    for model in MODELS:
        table = model.__table__
        assert isinstance(table, Table)  # A mapped class's ``__table__`` is typed as FromClause.
        found.append(table)
    return found


def _plain(value: object) -> object:
    """A column's value as JSON can hold it."""
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.isoformat()
    return value


def export(connection: Connection, out: IO[str], with_password_hashes: bool = False) -> int:
    """Write every row to ``out``; return how many. One read transaction: a consistent copy."""
    header = {
        "kind": "header",
        "format": FORMAT,
        "version": VERSION,
        "exported_at": datetime.now(UTC).isoformat(),
        "password_hashes": with_password_hashes,
    }
    out.write(json.dumps(header) + "\n")
    count = 0
    for table in tables():
        primary = list(table.primary_key.columns)
        result = connection.execution_options(yield_per=BATCH).execute(
            select(table).order_by(*primary)
        )
        if table.name in CREDENTIAL_TABLES and not with_password_hashes:
            continue
        for row in result.mappings():
            values = {name: _plain(value) for name, value in row.items()}
            if table.name == "users" and not with_password_hashes:
                values["password_hash"] = None
            out.write(json.dumps({"table": table.name, "row": values}, ensure_ascii=False) + "\n")
            count += 1
    return count


def _rows(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(table, row)`` of each line after the header, checked to be an object of a table."""
    known = {table.name for table in tables()}
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise ArchiveError(f"line {number}: not JSON") from None
        if not (
            isinstance(entry, dict)
            and entry.get("table") in known
            and isinstance(entry.get("row"), dict)
        ):
            raise ArchiveError(f"line {number}: not a row of a known table")
        yield entry["table"], entry["row"]


def _header(line: str) -> Mapping[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not (isinstance(header, dict) and header.get("format") == FORMAT):
        raise ArchiveError("not a chat export (no header line)")
    if header.get("version") != VERSION:
        raise ArchiveError(f"export version {header.get('version')!r}; this chat reads {VERSION}")
    return header


def _typed(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of ``table`` with only its columns, times as aware datetimes."""
    values: dict[str, Any] = {}
    for column in table.columns:
        value = row.get(column.name)
        if value is not None and isinstance(column.type, DateTime):
            value = datetime.fromisoformat(value)
        values[column.name] = value
    if table.name == "users" and not values.get("password_hash"):
        values["password_hash"] = NO_PASSWORD
    return values


def load(connection: Connection, lines: Iterator[str]) -> int:
    """Insert an export into an empty database (in the caller's transaction); return the rows.

    Rows keep their ids; on PostgreSQL each table's id sequence then moves past the largest, so
    new rows never collide with imported ones.
    """
    _header(next(lines, ""))
    for table in tables():
        if connection.scalar(select(func.count()).select_from(table)):
            raise ArchiveError(
                f"the database is not empty (table {table.name}): import into a new one"
            )
    by_name = {table.name: table for table in tables()}
    order = [table.name for table in tables()]
    pending: list[dict[str, Any]] = []
    current: str | None = None
    count = 0
    for name, row in _rows(lines):
        if current is not None and name != current:
            if order.index(name) < order.index(current):
                raise ArchiveError(f"table {name} after {current}: not in export order")
            _insert(connection, by_name[current], pending)
            pending = []
        current = name
        pending.append(_typed(by_name[name], row))
        count += 1
        if len(pending) >= BATCH:
            _insert(connection, by_name[name], pending)
            pending = []
    if current is not None:
        _insert(connection, by_name[current], pending)
    if connection.dialect.name == "postgresql":
        _advance_sequences(connection)
    return count


def _insert(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(insert(table), rows)


def _advance_sequences(connection: Connection) -> None:
    """Move each table's id sequence past the ids imported."""
    for table in tables():
        if "id" not in table.columns or len(table.primary_key.columns) != 1:
            continue
        sequence = connection.scalar(
            text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": table.name}
        )
        if sequence is None:
            continue
        largest = connection.scalar(select(func.max(table.c.id)))
        if largest:
            connection.execute(
                text("SELECT setval(:sequence, :value)"), {"sequence": sequence, "value": largest}
            )
