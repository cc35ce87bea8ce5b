"""The hub's events: what every worker must carry out, as published on the backplane.

Each is a small frozen dataclass with a wire name (``kind``); the hub dispatches them from a
table (``Hub.deliver``). Those that carry a frame travel with it beside them, not inside them
(the backplane sends the frame's JSON as it is, after a newline).
"""

import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class ToRoom:
    """A frame to every socket in a room, but ``exclude``'s (a user id)."""

    kind: ClassVar[str] = "room"
    room: int
    exclude: int | None = None


@dataclass(frozen=True, slots=True)
class Messages:
    """Chat messages of one room, in id order; their frames follow, one per line."""

    kind: ClassVar[str] = "messages"
    room: int
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """A change to a message of a room (an edit, deletion or reaction), numbered ``id``."""

    kind: ClassVar[str] = "change"
    room: int
    id: int


@dataclass(frozen=True, slots=True)
class ToUser:
    """A frame to every socket of one user."""

    kind: ClassVar[str] = "user"
    user: int


@dataclass(frozen=True, slots=True)
class ToAll:
    """A frame to every socket."""

    kind: ClassVar[str] = "all"


@dataclass(frozen=True, slots=True)
class CloseUser:
    """Close every socket of one user with an application close code."""

    kind: ClassVar[str] = "close"
    user: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """A user joined a room: their sockets get its frames."""

    kind: ClassVar[str] = "subscribe"
    user: int
    room: int
    key: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """A user left a room; their sockets whose current room it was go to ``fallback``."""

    kind: ClassVar[str] = "unsubscribe"
    user: int
    room: int
    key: str
    fallback: str


@dataclass(frozen=True, slots=True)
class Rename:
    """A user's display name changed."""

    kind: ClassVar[str] = "rename"
    user: int
    name: str


@dataclass(frozen=True, slots=True)
class Avatar:
    """A user's picture changed (``url`` None: removed, their initials again)."""

    kind: ClassVar[str] = "avatar"
    user: int
    url: str | None


Event = (
    ToRoom | Messages | Change | ToUser | ToAll | CloseUser | Subscribe | Unsubscribe | Rename
    | Avatar
)  # fmt: skip
KINDS: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        ToRoom, Messages, Change, ToUser, ToAll, CloseUser, Subscribe, Unsubscribe, Rename,
        Avatar,
    )
}  # fmt: skip


def encode(event: Event) -> str:
    """The event as one line of compact JSON, its wire name under ``kind``."""
    return json.dumps({"kind": event.kind, **asdict(event)}, separators=(",", ":"))


def decode(line: str) -> Event:
    """The event ``encode`` made. Raises ``ValueError`` for anything else (another program's
    message on our channel, or an event of a newer version)."""
    fields: Any = json.loads(line)
    if not isinstance(fields, dict):
        raise ValueError("an event is a JSON object")
    kind = fields.pop("kind", None)
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    try:
        if cls is Messages:
            fields["ids"] = tuple(fields["ids"])
        return cls(**fields)
    except (KeyError, TypeError) as error:
        raise ValueError(f"bad fields for {cls.kind}: {error}") from None
