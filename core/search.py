"""Full-text search of the messages a user may read: FTS5 on SQLite, a tsvector on PostgreSQL.

One interface (``search``) over two indexes that the migration ``7c1d2e3f4a5b`` creates: on
SQLite an FTS5 table kept by triggers, on PostgreSQL a generated ``tsvector`` column with a GIN
index. Both ignore case and accents (``ete`` finds ``été``) and stem nothing, so French and
English are treated alike. A query holds words, ``"phrases in quotes"``, prefixes (``deploy*``)
and the filters ``from:NAME`` and ``in:ROOM``; every part must match. Only messages of rooms the
user is in, and never deleted ones (their text is gone, and with it their index entries).
"""

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Subquery,
    TableClause,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
)
from sqlalchemy.sql.elements import ColumnElement

from core.formatting import excerpt
from core.rooms import direct_partners, room_key
from extensions import db
from models import DIRECT, Membership, Message, MessageData, Room, User, describe

MAX_QUERY_CHARS = 200
MAX_TERMS = 10  # Words, prefixes and phrases in one query; more is refused.
MIN_PREFIX_CHARS = 2  # "a*" would match half the index.
WALK = 5_000  # Newest messages that PostgreSQL tests one by one (``_postgres_ids``).
SNIPPET_WORDS = 24  # Around the first match.

# A part of a query: an optional filter name, then a quoted phrase or a run of non-spaces.
_PART = re.compile(r'(?:(from|in):)?(?:"([^"]*)"?|(\S+))', re.IGNORECASE)
_WORD = re.compile(r"\w+")


class SearchError(Exception):
    """A query that cannot be run; ``code`` becomes the JSON error's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Term:
    """Words that must appear in order (one word, or a phrase); ``prefix``: the last may go on."""

    words: tuple[str, ...]
    prefix: bool = False


@dataclass
class Query:
    """A parsed query: terms to match, and the names of authors and rooms to keep."""

    terms: list[Term] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Hit:
    """A message found, as it is now, and its snippet: escaped text with ``<mark>`` around the
    words that matched, safe to show as HTML."""

    message: MessageData
    snippet: str


def fold(text: str) -> str:
    """``text`` without accents and case, as both indexes see it."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def parse(query: str) -> Query:
    """The parts of ``query``; ``SearchError`` for one that cannot be searched."""
    if len(query) > MAX_QUERY_CHARS:
        raise SearchError("bad_request", f"A search is at most {MAX_QUERY_CHARS} characters.")
    parsed = Query()
    for match in _PART.finditer(query):
        name, phrase, bare = match.group(1), match.group(2), match.group(3)
        value = phrase if phrase is not None else bare or ""
        if name:
            target = parsed.authors if name.lower() == "from" else parsed.rooms
            if value.strip():
                target.append(value.strip().lstrip("@#"))
            continue
        prefix = phrase is None and value.endswith("*")
        words = tuple(_WORD.findall(fold(value)))
        if not words:
            continue
        if prefix and len(words[-1]) < MIN_PREFIX_CHARS:
            raise SearchError("bad_request", "A prefix needs at least two letters before '*'.")
        parsed.terms.append(Term(words, prefix))
    if len(parsed.terms) > MAX_TERMS:
        raise SearchError("bad_request", f"A search has at most {MAX_TERMS} words or phrases.")
    if not (parsed.terms or parsed.authors or parsed.rooms):
        raise SearchError("bad_request", "Search for at least one word.")
    return parsed


def search(
    user_id: int, query: str, room_id: int | None = None, before: int | None = None, limit: int = 20
) -> tuple[list[Hit], bool]:
    """The newest messages matching ``query`` that ``user_id`` may read (in ``room_id`` only,
    if given; older than id ``before``, to page), newest first; and whether there are more."""
    parsed = parse(query)
    rooms = _rooms(user_id, parsed.rooms, room_id)
    authors = _authors(parsed.authors) if parsed.authors else None
    if not rooms or authors == []:
        return [], False
    ids = _matching_ids(parsed.terms, rooms, authors, before, limit + 1)
    found = db.session.scalars(select(Message).where(Message.id.in_(ids[:limit]))).all()
    by_id = {message["id"]: message for message in describe(list(found))}
    hits = [Hit(by_id[i], snippet(by_id[i], parsed.terms)) for i in ids[:limit] if i in by_id]
    return hits, len(ids) > limit


def _rooms(user_id: int, names: Sequence[str], room_id: int | None) -> list[int]:
    """The ids of the user's rooms to search: all, or those named (``in:``), or ``room_id``."""
    mine = select(Membership.room_id).where(Membership.user_id == user_id)
    ids = set(db.session.scalars(mine))
    if room_id is not None:
        ids &= {room_id}
    if names:
        keys = {room_key(name) for name in names}
        folded = {fold(name) for name in names}
        rows = db.session.execute(select(Room.id, Room.key, Room.kind).where(Room.id.in_(ids)))
        partners = direct_partners(user_id)
        ids = {
            rid
            for rid, key, kind in rows
            if key in keys or (kind == DIRECT and fold(partners.get(rid, "")) in folded)
        }
    return sorted(ids)


def _authors(names: Sequence[str]) -> list[int]:
    """The ids of the users known by any of ``names`` (display name, or email before "@")."""
    conditions: list[ColumnElement[bool]] = []
    for name in names:
        # LIKE's wildcards in a name are letters like any other.
        literal = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(User.display_name.ilike(literal, escape="\\"))
        email = User.email.ilike(f"{literal}@%", escape="\\")
        conditions.append(User.display_name.is_(None) & email)
    return list(db.session.scalars(select(User.id).where(or_(*conditions))))


def _matching_ids(
    terms: Sequence[Term],
    rooms: list[int],
    authors: list[int] | None,
    before: int | None,
    limit: int,
) -> list[int]:
    """Ids of live messages of ``rooms`` (by ``authors``, older than ``before``) matching every
    term, newest first, at most ``limit``."""
    conditions: list[ColumnElement[bool]] = [
        Message.deleted_at.is_(None),
        Message.room_id.in_(rooms),
    ]
    if authors is not None:
        conditions.append(Message.user_id.in_(authors))
    if before is not None:
        conditions.append(Message.id < before)
    if not terms:
        query = select(Message.id).where(*conditions).order_by(Message.id.desc())
    elif db.engine.dialect.name == "sqlite":
        # FTS5 walks its index newest first and stops at the limit: no sort of every match.
        match = literal_column(FTS_TABLE.name).op("MATCH")(_fts5_match(terms))
        query = (
            select(FTS_TABLE.c.rowid)
            .join(Message, Message.id == FTS_TABLE.c.rowid)
            .where(match, *conditions)
            .order_by(FTS_TABLE.c.rowid.desc())
        )
    else:
        return _postgres_ids(_tsquery(terms), rooms, authors, before, limit)
    return list(db.session.scalars(query.limit(limit)))


# The columns of messages that PostgreSQL's search reads, ``search`` (the tsvector) included.
_MESSAGES = table(
    "messages",
    column("id"),
    column("room_id"),
    column("user_id"),
    column("deleted_at"),
    column("search"),
)


def _postgres_ids(
    tsquery: ColumnElement[Any],
    rooms: list[int],
    authors: list[int] | None,
    before: int | None,
    limit: int,
) -> list[int]:
    """``_matching_ids`` on PostgreSQL, in two steps whose cost does not hang on estimates.

    Why: over every id, the planner either walks the primary key backwards testing each row
    (fast for a frequent word, the whole table for one that is rare in the user's rooms) or
    reads every match from the GIN index and sorts them (fast for a rare word, hundreds of ms
    for a common one over a million messages); it picks by its statistics, and picks wrong
    without them or for a word common elsewhere but not in the user's rooms. So: first test
    the newest ``WALK`` messages one by one (a LIMITed subquery: always the backward walk),
    which answers frequent words; only if they hold fewer than ``limit`` matches, read the
    older ones through the index (OFFSET 0 keeps the subquery unordered: a GIN read), which is
    cheap then, as the matches are few in the user's rooms."""
    older = [_MESSAGES.c.id < before] if before is not None else []
    newest = select(_MESSAGES).where(*older).order_by(_MESSAGES.c.id.desc())
    recent = newest.limit(WALK).subquery()
    matching = select(recent.c.id).where(*_conditions(recent, tsquery, rooms, authors))
    ids = list(db.session.scalars(matching.order_by(recent.c.id.desc()).limit(limit)))
    if len(ids) == limit:
        return ids
    # The oldest id walked (an index-only read): the rest is below it; none, nothing is.
    walked = newest.with_only_columns(_MESSAGES.c.id).limit(WALK).subquery()
    oldest = db.session.scalar(select(func.min(walked.c.id)))
    if oldest is None:
        return ids
    # OFFSET 0: planned apart from the outer ORDER BY ... LIMIT, the conditions are a GIN read.
    rest = select(_MESSAGES.c.id).where(
        _MESSAGES.c.id < oldest, *_conditions(_MESSAGES, tsquery, rooms, authors)
    )
    found = rest.offset(0).subquery()
    older_ids = select(found.c.id).order_by(found.c.id.desc()).limit(limit - len(ids))
    return ids + list(db.session.scalars(older_ids))


def _conditions(
    rows: Subquery | TableClause,
    tsquery: ColumnElement[Any],
    rooms: list[int],
    authors: list[int] | None,
) -> list[ColumnElement[bool]]:
    """What a message of ``rows`` must be to be found: matching, live, in a room, by an author."""
    conditions: list[ColumnElement[bool]] = [
        rows.c.search.op("@@")(tsquery),
        rows.c.deleted_at.is_(None),
        rows.c.room_id.in_(rooms),
    ]
    if authors is not None:
        conditions.append(rows.c.user_id.in_(authors))
    return conditions


# The FTS5 table of the SQLite index (not a model: see the migration).
FTS_TABLE = table("messages_search", column("rowid"))


def _fts5_match(terms: Sequence[Term]) -> str:
    """An FTS5 query: each term a quoted string (words are ``\\w+``: no quote to escape)."""
    return " AND ".join(f'"{" ".join(t.words)}"' + ("*" if t.prefix else "") for t in terms)


def _tsquery(terms: Sequence[Term]) -> ColumnElement[Any]:
    """One tsquery for every term: a phrase each, the last word of a prefix term a prefix."""
    queries: list[ColumnElement[Any]] = []
    for term in terms:
        if term.prefix:
            # to_tsquery's syntax: each word quoted (they are \\w+), the last one a prefix.
            words = " <-> ".join(f"'{word}'" for word in term.words) + ":*"
            queries.append(func.to_tsquery("simple", func.chat_unaccent(words)))
        else:
            queries.append(
                func.phraseto_tsquery("simple", func.chat_unaccent(" ".join(term.words)))
            )
    combined = queries[0]
    for query in queries[1:]:
        combined = combined.op("&&")(query)
    return combined


def snippet(message: MessageData, terms: Sequence[Term]) -> str:
    """The message's text around its first match, escaped, the matching words in ``<mark>``.
    Its files' names follow the text: a match in a name shows (and a file alone has a snippet)."""
    line = excerpt(message["text"], message["mentions"], limit=10_000)
    names = [attachment["name"] for attachment in message["attachments"]]
    line = " · ".join(([line] if line else []) + [f"📎 {name}" for name in names])
    words = list(_WORD.finditer(line))
    marked = [_matches(fold(word.group()), terms) for word in words]
    first = next((n for n, hit in enumerate(marked) if hit), 0)
    start = max(0, first - SNIPPET_WORDS // 3)
    end = min(len(words), start + SNIPPET_WORDS)
    if not words:
        return html.escape(line[:200])
    begin = words[start].start() if start else 0
    finish = words[end - 1].end() if end < len(words) else len(line)
    pieces = ["…" if begin else ""]
    cursor = begin
    for word, hit in zip(words[start:end], marked[start:end], strict=True):
        if hit:
            pieces.append(html.escape(line[cursor : word.start()]))
            pieces.append(f"<mark>{html.escape(word.group())}</mark>")
            cursor = word.end()
    pieces.append(html.escape(line[cursor:finish]))
    pieces.append("…" if finish < len(line) else "")
    return "".join(pieces)


def _matches(word: str, terms: Sequence[Term]) -> bool:
    """Whether a folded word of a message is one that a term asks for."""
    for term in terms:
        if word in term.words[:-1] or word == term.words[-1]:
            return True
        if term.prefix and word.startswith(term.words[-1]):
            return True
    return False
