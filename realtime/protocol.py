"""The wire protocol: parse and validate client frames, encode server frames. Pure, no I/O.

Every frame is a JSON object with a ``type``. See the protocol reference in README.md.
"""

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, NotRequired, TypeAlias, TypedDict, cast, overload

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l

from core import formatting
from core.rooms import (
    BAD_ROOM_NAME,
    FORBIDDEN,
    NO_SUCH_USER,
    RoomError,
    clean_topic,
    parse_room_name,
    room_key,
)
from core.text import has_control_characters, is_invisible, is_single_emoji, is_unicode

# Close codes the server sends (RFC 6455 7.4; 4000-4999 are ours to define). The page has the
# same list in static/js/protocol.js; README.md describes each.
CLOSE_GOING_AWAY = 1001  # The server is shutting down: reconnect.
CLOSE_RESTART = 1012  # The backplane was lost: reconnect (and resume).
CLOSE_TRY_AGAIN = 1013  # The greeting failed: reconnect later.
CLOSE_REVOKED = 4001  # Logged out or password changed: go to the login page, do not reconnect.
CLOSE_FLOOD = 4029  # Kept sending faster than the rate limit allows.

MAX_CLIENT_ID_CHARS = 64
MAX_ROOM_KEY_CHARS = 80
MAX_PAGE = 100
DEFAULT_PAGE = 50
MAX_ID = 2**53  # Larger ids would lose precision in JavaScript.

# Words for a person: a str, or a lazy string that ``str()`` translates when a frame is built.
Translatable: TypeAlias = str | LazyString
# A stored message's data, as ``models`` gives it (``models.MessageData``, from ``describe``).
StoredMessage = Mapping[str, Any]
# A room as ``rooms.summaries`` lists it: id, room, title, kind, unread, mentions, last_id,
# last_read_id.
RoomSummary = Mapping[str, Any]

# Lazy: each is translated when a frame is built, into the language of that socket's user.
ERROR_MESSAGES: dict[str, Translatable] = {
    "unsupported": _l("Binary frames are not supported; send text or a JSON object."),
    "unknown_type": _l("Unknown frame type."),
    "empty": _l("The message is empty."),
    "too_long": _l("The message is longer than {max_chars} characters."),
    "unavailable": _l("The message could not be saved; please send it again."),
    "forbidden": FORBIDDEN,
    "archived": _l("This room is archived: it can be read and searched, not changed."),
    "rate_limited": _l("You are sending too fast; wait a moment."),
    "no_such_user": NO_SUCH_USER,
    "bad_text": _l("The message contains control characters (such as NUL or terminal escapes)."),
    "bad_room_name": BAD_ROOM_NAME,
}


@dataclass(frozen=True)
class ChatMessage:
    """A message to post; ``room`` None means the socket's current room."""

    text: str
    client_id: str | None = None
    room: str | None = None
    reply_to: int | None = None  # The id of the message it answers, in the same room.
    attachments: tuple[int, ...] = ()  # Uploads of the sender's (``POST /api/uploads``).


@dataclass(frozen=True)
class Edit:
    """Replace the text of one's own message."""

    id: int
    text: str
    client_id: str | None = None


@dataclass(frozen=True)
class Delete:
    """Delete one's own message."""

    id: int
    client_id: str | None = None


@dataclass(frozen=True)
class React:
    """Add (``add``) or take back one's emoji on a message."""

    id: int
    emoji: str
    add: bool
    client_id: str | None = None


@dataclass(frozen=True)
class Unpreview:
    """Take the link preview off one's own message (``previews.changes``)."""

    id: int
    client_id: str | None = None


@dataclass(frozen=True)
class Members:
    """Who is in a room (for ``@`` completion)."""

    room: str
    client_id: str | None = None


@dataclass(frozen=True)
class Who:
    """Everyone online in a room (a room entry lists only the first of them)."""

    room: str
    client_id: str | None = None


@dataclass(frozen=True)
class Switch:
    """Make ``room`` the target of plain-text frames."""

    room: str
    client_id: str | None = None


@dataclass(frozen=True)
class CreateRoom:
    """Create a public or private room and join it."""

    name: str
    client_id: str | None = None
    private: bool = False


@dataclass(frozen=True)
class Invite:
    """A member brings someone into a room."""

    room: str
    user_id: int
    client_id: str | None = None


@dataclass(frozen=True)
class InviteLink:
    """A member asks for an invitation link to a room."""

    room: str
    days: int | None = None  # Until it expires; None: never.
    uses: int | None = None  # None: any number.
    client_id: str | None = None


@dataclass(frozen=True)
class UpdateRoom:
    """Rename a room and/or set its topic (None: leave it)."""

    room: str
    title: str | None = None
    topic: str | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class Notify:
    """What tells the user about new messages in a room: all, mentions or nothing."""

    room: str
    level: str
    client_id: str | None = None


@dataclass(frozen=True)
class ArchiveRoom:
    """Archive a room (read-only) or make it writable again."""

    room: str
    archived: bool
    client_id: str | None = None


@dataclass(frozen=True)
class JoinRoom:
    """Join a public room."""

    room: str
    client_id: str | None = None


@dataclass(frozen=True)
class LeaveRoom:
    """Leave a public room."""

    room: str
    client_id: str | None = None


@dataclass(frozen=True)
class RemoveMember:
    """An administrator takes someone out of a public room (moderation)."""

    room: str
    user_id: int
    client_id: str | None = None


@dataclass(frozen=True)
class OpenDirect:
    """Open (or create) the direct-message room with another user."""

    user_id: int
    client_id: str | None = None


@dataclass(frozen=True)
class History:
    """A page of a room's messages: older than ``before``, newer than ``after``, around message
    ``around`` (a search result in its context), or the latest if none is given."""

    room: str
    before: int | None = None
    limit: int = DEFAULT_PAGE
    client_id: str | None = None
    after: int | None = None
    around: int | None = None


@dataclass(frozen=True)
class Typing:
    """The user is typing in a room."""

    room: str
    client_id: str | None = None


@dataclass(frozen=True)
class Read:
    """The user has read a room up to message ``id``."""

    room: str
    id: int
    client_id: str | None = None


@dataclass(frozen=True)
class Visibility:
    """Whether the page is visible now (``document.visibilityState``): Web Push skips a user
    with a visible tab. A socket that never says counts as not visible."""

    visible: bool
    client_id: str | None = None


# What a client frame asks for (``parse_frame``); ``handlers.handle`` runs it.
Command = (
    ChatMessage
    | Switch
    | CreateRoom
    | JoinRoom
    | LeaveRoom
    | RemoveMember
    | Invite
    | InviteLink
    | UpdateRoom
    | ArchiveRoom
    | Notify
    | OpenDirect
    | History
    | Typing
    | Read
    | Edit
    | Delete
    | React
    | Unpreview
    | Members
    | Who
    | Visibility
)


class FrameError(Exception):
    """A client frame that is refused; becomes an ``error`` frame for its sender."""

    def __init__(
        self,
        code: str,
        message: Translatable,
        client_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id
        self.retry_after = retry_after


def parse_frame(data: str | bytes, max_chars: int) -> Command:
    """Return the command in a received frame, or raise ``FrameError``."""
    if not isinstance(data, str):
        raise FrameError("unsupported", ERROR_MESSAGES["unsupported"])
    if not data.lstrip().startswith("{"):
        # Not a JSON object: the whole frame is the message text (Postman users just type).
        return ChatMessage(_validate_text(data, None, max_chars))
    frame = _load_object(data)
    client_id = _client_id(frame)
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise FrameError("bad_request", _l("The 'type' field must be a string."), client_id)
    parse = _PARSERS.get(kind)
    if parse is None:
        raise FrameError("unknown_type", ERROR_MESSAGES["unknown_type"], client_id)
    return parse(_Fields(frame, client_id), max_chars)


class _Fields:
    """Typed access to a frame's fields; a wrong one raises ``bad_request`` naming it."""

    def __init__(self, frame: Mapping[str, object], client_id: str | None) -> None:
        self.frame = frame
        self.client_id = client_id

    def fail(self, message: Translatable, code: str = "bad_request") -> NoReturn:
        """Refuse the frame."""
        raise FrameError(code, message, self.client_id)

    @overload
    def string(self, name: str, required: Literal[True] = ...) -> str: ...
    @overload
    def string(self, name: str, required: bool) -> str | None: ...
    def string(self, name: str, required: bool = True) -> str | None:
        """A string field that UTF-8 can carry."""
        value = self.frame.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not is_unicode(value):
            self.fail(_l("The '%(name)s' field must be a string.", name=name))
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        """A true/false field."""
        value = self.frame.get(name, default)
        if not isinstance(value, bool):
            self.fail(_l("The '%(name)s' field must be true or false.", name=name))
        return value

    @overload
    def room(self, required: Literal[True] = ...) -> str: ...
    @overload
    def room(self, required: bool) -> str | None: ...
    def room(self, required: bool = True) -> str | None:
        """A room key: a public room's name (any case) or a direct room's key."""
        value = self.string("room", required)
        if value is not None and not 0 < len(value) <= MAX_ROOM_KEY_CHARS:
            self.fail(_l("The 'room' field must be 1 to %(n)s characters.", n=MAX_ROOM_KEY_CHARS))
        return room_key(value) if value is not None else None

    @overload
    def integer(
        self, name: str, required: Literal[True] = ..., low: int = ..., high: int = ...
    ) -> int: ...
    @overload
    def integer(self, name: str, required: bool, low: int = ..., high: int = ...) -> int | None: ...
    def integer(
        self, name: str, required: bool = True, low: int = 1, high: int = MAX_ID
    ) -> int | None:
        """A whole number in ``[low, high]`` (booleans are not numbers)."""
        value = self.frame.get(name)
        if value is None and not required:
            return None
        if type(value) is not int or not low <= value <= high:
            message = "The '%(name)s' field must be a whole number from %(low)s to %(high)s."
            self.fail(_l(message, name=name, low=low, high=high))
        return value


def _parse_message(fields: _Fields, max_chars: int) -> ChatMessage:
    attachments = _attachments(fields)
    text = fields.string("text", required=not attachments) or ""
    # With files the text is a caption, and may be empty.
    if not (attachments and is_invisible(text.strip())):
        text = _validate_text(text, fields.client_id, max_chars)
    else:
        text = ""
    reply_to = fields.integer("reply_to", required=False)
    room = fields.room(required=False)
    return ChatMessage(text, fields.client_id, room, reply_to, attachments)


def _attachments(fields: _Fields) -> tuple[int, ...]:
    """A message's ``attachments``: distinct upload ids (checked against the database later)."""
    value = fields.frame.get("attachments")
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or not all(type(item) is int and 0 < item <= MAX_ID for item in value)
        or len(set(value)) != len(value)
    ):
        fields.fail(_l("The 'attachments' field must be a list of distinct upload ids."))
    return tuple(value)


def _parse_edit(fields: _Fields, max_chars: int) -> Edit:
    text = _validate_text(fields.string("text"), fields.client_id, max_chars)
    return Edit(fields.integer("id"), text, fields.client_id)


def _parse_reaction(add: bool) -> Callable[[_Fields, int], React]:
    def parse(fields: _Fields, _max_chars: int) -> React:
        symbol = fields.string("emoji")
        if not is_single_emoji(symbol):
            fields.fail(_l("The 'emoji' field must be one emoji."))
        return React(fields.integer("id"), symbol, add, fields.client_id)

    return parse


def _parse_create_room(fields: _Fields, _max_chars: int) -> CreateRoom:
    name = _room_name(fields, "name", required=True)
    assert name is not None  # Required: a missing one was refused.
    return CreateRoom(name, fields.client_id, fields.flag("private"))


def _room_name(fields: _Fields, name: str, required: bool) -> str | None:
    value = fields.string(name, required)
    if value is None:
        return None
    try:
        return parse_room_name(value)
    except RoomError as error:
        fields.fail(error.message, error.code)


def _parse_update_room(fields: _Fields, _max_chars: int) -> UpdateRoom:
    title = _room_name(fields, "title", required=False)
    topic = fields.string("topic", required=False)
    if topic is not None:
        try:
            topic = clean_topic(topic)
        except RoomError as error:
            fields.fail(error.message, error.code)
    if title is None and topic is None:
        fields.fail(_l("Give a 'title', a 'topic', or both."))
    return UpdateRoom(fields.room(), title, topic, fields.client_id)


def _parse_invite_link(fields: _Fields, _max_chars: int) -> InviteLink:
    days = fields.integer("days", required=False, high=365)
    uses = fields.integer("uses", required=False, high=1000)
    return InviteLink(fields.room(), days, uses, fields.client_id)


def _parse_history(fields: _Fields, _max_chars: int) -> History:
    before = fields.integer("before", required=False)
    after = fields.integer("after", required=False, low=0)
    around = fields.integer("around", required=False)
    if sum(value is not None for value in (before, after, around)) > 1:
        fields.fail(_l("Give at most one of 'before', 'after' and 'around'."))
    limit = fields.integer("limit", required=False, high=MAX_PAGE) or DEFAULT_PAGE
    return History(fields.room(), before, limit, fields.client_id, after, around)


def _parse_read(fields: _Fields, _max_chars: int) -> Read:
    return Read(fields.room(), fields.integer("id"), fields.client_id)


def _parse_visibility(fields: _Fields, _max_chars: int) -> Visibility:
    if "visible" not in fields.frame:
        fields.fail(_l("The 'visible' field must be true or false."))
    return Visibility(fields.flag("visible"), fields.client_id)


_PARSERS: dict[str, Callable[[_Fields, int], Command]] = {
    "message": _parse_message,
    "switch": lambda fields, _: Switch(fields.room(), fields.client_id),
    "create_room": _parse_create_room,
    "join_room": lambda fields, _: JoinRoom(fields.room(), fields.client_id),
    "leave_room": lambda fields, _: LeaveRoom(fields.room(), fields.client_id),
    "remove_member": lambda fields, _: RemoveMember(
        fields.room(), fields.integer("user_id"), fields.client_id
    ),
    "invite": lambda fields, _: Invite(fields.room(), fields.integer("user_id"), fields.client_id),
    "invite_link": _parse_invite_link,
    "update_room": _parse_update_room,
    "archive_room": lambda fields, _: ArchiveRoom(
        fields.room(), fields.flag("archived", True), fields.client_id
    ),
    "notify": lambda fields, _: Notify(fields.room(), fields.string("level"), fields.client_id),
    "open_dm": lambda fields, _: OpenDirect(fields.integer("user_id"), fields.client_id),
    "history": _parse_history,
    "typing": lambda fields, _: Typing(fields.room(), fields.client_id),
    "read": _parse_read,
    "edit": _parse_edit,
    "delete": lambda fields, _: Delete(fields.integer("id"), fields.client_id),
    "react": _parse_reaction(add=True),
    "unreact": _parse_reaction(add=False),
    "unpreview": lambda fields, _: Unpreview(fields.integer("id"), fields.client_id),
    "members": lambda fields, _: Members(fields.room(), fields.client_id),
    "who": lambda fields, _: Who(fields.room(), fields.client_id),
    "visibility": _parse_visibility,
}


# Keeps a whole resume (hello, one frame per missed message up to the replay budget, one reset
# frame per room beyond it) well inside a socket's outbound queue.
MAX_RESUME_ROOMS = 200


@dataclass(frozen=True)
class Resume:
    """Where a resuming client stands: the last message id it has in each room, and the last
    change it saw (None: it replays no change)."""

    rooms: dict[str, int]
    changes: int | None = None


def parse_resume(data: str | bytes) -> Resume:
    """Parse the first frame of a resuming socket:
    ``{"type": "resume", "rooms": {key: id}, "changes": n}``."""
    frame = _load_object(data) if isinstance(data, str) and data.lstrip().startswith("{") else {}
    marks = frame.get("rooms")
    if frame.get("type") != "resume" or not isinstance(marks, dict):
        message = _l('The first frame must be {"type": "resume", "rooms": {…}}.')
        raise FrameError("bad_request", message)
    if len(marks) > MAX_RESUME_ROOMS:
        raise FrameError(
            "bad_request", _l("Resume at most %(n)s rooms at once.", n=MAX_RESUME_ROOMS)
        )
    for key, last_id in marks.items():
        if not (0 < len(key) <= MAX_ROOM_KEY_CHARS and is_unicode(key)):
            raise FrameError("bad_request", _l("resume names a room that cannot exist."))
        if type(last_id) is not int or not 0 <= last_id <= MAX_ID:
            raise FrameError("bad_request", _l("resume ids must be whole numbers."))
    changes = frame.get("changes")
    if changes is not None and (type(changes) is not int or not 0 <= changes <= MAX_ID):
        raise FrameError("bad_request", _l("resume's 'changes' must be a whole number."))
    return Resume({room_key(key): last_id for key, last_id in marks.items()}, changes)


def _load_object(data: str) -> dict[str, object]:
    """Decode a frame that starts with ``{``: it must be a valid JSON object."""
    try:
        frame = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers malformed JSON and integers too long to convert.
        frame = None
    if not isinstance(frame, dict):
        raise FrameError(
            "bad_request", _l("A frame starting with '{' must be a valid JSON object.")
        )
    return frame


def _reject_constant(name: str) -> NoReturn:
    """Refuse NaN and Infinity, which are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _client_id(frame: Mapping[str, object]) -> str | None:
    """Return the frame's optional ``client_id``, checked."""
    client_id = frame.get("client_id")
    if client_id is None:
        return None
    if (
        not isinstance(client_id, str)
        or not 0 < len(client_id) <= MAX_CLIENT_ID_CHARS
        or not is_unicode(client_id)
    ):
        raise FrameError(
            "bad_request",
            _l(
                "The 'client_id' field must be a string of 1 to %(n)s characters.",
                n=MAX_CLIENT_ID_CHARS,
            ),
        )
    return client_id


def _validate_text(text: str, client_id: str | None, max_chars: int) -> str:
    """Return ``text`` trimmed, checked neither empty, too long nor holding control characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if has_control_characters(text):
        raise FrameError("bad_text", ERROR_MESSAGES["bad_text"], client_id)
    if is_invisible(text):
        raise FrameError("empty", ERROR_MESSAGES["empty"], client_id)
    if len(text) > max_chars:
        message = ERROR_MESSAGES["too_long"].format(max_chars=max_chars)
        raise FrameError("too_long", message, client_id)
    return text


# ---- Server frames ----------------------------------------------------------------------------


class Person(TypedDict):
    """Someone online in a room (a room entry's ``online``, a hello's ``user``)."""

    id: int
    name: str
    avatar_url: NotRequired[str | None]  # hello's user: your uploaded picture; None: initials.


class PresenceUser(TypedDict):
    """Someone in a ``presence`` frame's ``online`` or ``offline``."""

    user_id: int
    user: str


class Quote(TypedDict):
    """How a reply shows the message it answers."""

    id: int
    user: str
    user_id: int
    excerpt: str
    deleted: bool


class Reactions(TypedDict):
    """One emoji on a message."""

    emoji: str
    count: int
    user_ids: list[int]


class AttachmentObject(TypedDict):
    """A file of a message, with where to fetch it."""

    id: int
    name: str
    size: int
    content_type: str
    url: str
    thumbnail_url: str | None
    width: int | None
    height: int | None


class MessageFrame(TypedDict):
    """A chat message, as it is now."""

    type: Literal["message"]
    id: int
    room: str
    user: str
    user_id: int
    avatar_url: str | None  # The author's uploaded picture (immutable address); None: initials.
    bot: bool  # The author is a bot.
    text: str  # As typed; "" once deleted.
    html: str | None  # ``text``'s Markdown as sanitized HTML; None: nothing to format.
    ts: str
    client_id: str | None
    edited_at: str | None
    deleted: bool
    reply_to: Quote | None
    reactions: list[Reactions]
    mentions: list[int]
    attachments: list[AttachmentObject]
    preview: dict[str, object] | None  # ``models.PreviewData`` of its first link, once fetched.


class ChangeFrame(TypedDict):
    """A message was edited, deleted or reacted to (``change`` None: nothing changed)."""

    type: Literal["message_changed"]
    change: int | None
    kind: str
    room: str
    user_id: int
    message: MessageFrame
    quoted: Quote
    client_id: str | None


class RoomEntry(TypedDict):
    """A room as the page lists it."""

    room: str
    title: str
    kind: str
    topic: str
    archived: bool
    created_by: int | None
    notify: str
    unread: int
    last_id: int
    last_read_id: int
    mentions: int
    online: list[Person]
    online_count: int


class HelloFrame(TypedDict):
    """The first frame of every connection."""

    type: Literal["hello"]
    user: Person
    current: str
    online: list[str]
    rooms: list[RoomEntry]
    public_rooms: Sequence[Mapping[str, Any]]  # ``rooms.public_rooms``: room, title, members.
    history: list[MessageFrame]
    history_has_more: bool
    changes: int


class HistoryFrame(TypedDict):
    """A page of a room's messages."""

    type: Literal["history"]
    room: str
    messages: list[MessageFrame]
    has_more: bool
    has_newer: bool
    reset: bool


class PresenceFrame(TypedDict):
    """Who came online in a room and who went offline."""

    type: Literal["presence"]
    room: str
    online: list[PresenceUser]
    offline: list[PresenceUser]
    count: int


class TypingFrame(TypedDict):
    """Someone is typing in a room."""

    type: Literal["typing"]
    room: str
    user: str
    user_id: int
    expires_in: float


class ErrorFrame(TypedDict):
    """A refusal, for one client."""

    type: Literal["error"]
    code: str
    message: str
    client_id: str | None
    retry_after: NotRequired[float]


def encode(frame: Mapping[str, object]) -> str:
    """Serialize a server frame compactly."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


format_ts = formatting.format_ts


def message_frame(message: StoredMessage) -> MessageFrame:
    """The ``message`` frame for a stored message as it is now (see ``models.describe``)."""
    return cast(MessageFrame, formatting.message_object(message))


def change_frame(
    change: int | None,
    kind: str,
    user_id: int,
    message: StoredMessage,
    quoted: Quote,
    client_id: str | None,
) -> ChangeFrame:
    """A change to a message by ``user_id``: the message as it is now, and how replies quote it."""
    return {
        "type": "message_changed",
        "change": change,
        "kind": kind,
        "room": message["room"],
        "user_id": user_id,
        "message": message_frame(message),
        "quoted": quoted,
        "client_id": client_id,
    }


def members_frame(room: str, members: list[Person]) -> dict[str, object]:
    """The people in a room, sorted by name."""
    return {"type": "members", "room": room, "members": members}


def online_frame(room: str, online: list[Person]) -> dict[str, object]:
    """Everyone online in a room, sorted by name (the answer to ``who``)."""
    return {"type": "online", "room": room, "online": online, "count": len(online)}


def room_entry(summary: RoomSummary, online: list[Person], count: int) -> RoomEntry:
    """A room as the page lists it (see ``rooms.summaries``), with the first people online in
    it by name (``online``) and how many are (``count``)."""
    return {
        "room": summary["room"],
        "title": summary["title"],
        "kind": summary["kind"],
        "topic": summary["topic"],
        "archived": summary["archived"],
        "created_by": summary["created_by"],
        "notify": summary["notify"],
        "unread": summary["unread"],
        "last_id": summary["last_id"],
        "last_read_id": summary["last_read_id"],
        "mentions": summary["mentions"],
        "online": online,
        "online_count": count,
    }


def hello_frame(
    user: Person,
    current: str,
    rooms: list[RoomEntry],
    public_rooms: Sequence[Mapping[str, Any]],
    history: Iterable[StoredMessage],
    has_more: bool = False,
    changes: int = 0,
) -> HelloFrame:
    """The first frame of every connection: who you are, your rooms, who is here, history."""
    here = next((room["online"] for room in rooms if room["room"] == current), [])
    return {
        "type": "hello",
        "user": user,
        "current": current,
        "online": [person["name"] for person in here],
        "rooms": rooms,
        "public_rooms": public_rooms,
        "history": [message_frame(message) for message in history],
        "history_has_more": has_more,
        "changes": changes,
    }


def history_frame(
    room: str,
    messages: Iterable[StoredMessage],
    has_more: bool,
    reset: bool = False,
    has_newer: bool = False,
) -> HistoryFrame:
    """A page of a room's messages, oldest first; ``reset`` replaces what the client has;
    ``has_newer``: newer messages than the page's exist (a page asked ``around`` or ``after``)."""
    return {
        "type": "history",
        "room": room,
        "messages": [message_frame(message) for message in messages],
        "has_more": has_more,
        "has_newer": has_newer,
        "reset": reset,
    }


def presence_frame(
    room: str, online: list[PresenceUser], offline: list[PresenceUser], count: int
) -> PresenceFrame:
    """Who came online in a room and who went offline (or joined and left it), in one frame,
    and how many are online there now.

    ``online`` and ``offline`` are lists of ``{"user_id", "user"}``; a user already shown as
    online with another name has been renamed.
    """
    return {"type": "presence", "room": room, "online": online, "offline": offline, "count": count}


def typing_frame(room: str, user_id: int, name: str, expires_in: float) -> TypingFrame:
    """Someone is typing in a room; the indicator ends by itself after ``expires_in`` seconds."""
    return {
        "type": "typing",
        "room": room,
        "user": name,
        "user_id": user_id,
        "expires_in": expires_in,
    }


def error_frame(
    code: str,
    message: Translatable,
    client_id: str | None = None,
    retry_after: float | None = None,
) -> ErrorFrame:
    """An ``error`` frame for one client; ``retry_after`` (seconds) only for ``rate_limited``."""
    frame: ErrorFrame = {
        "type": "error",
        "code": code,
        "message": str(message),
        "client_id": client_id,
    }
    if retry_after is not None:
        frame["retry_after"] = round(retry_after, 1)
    return frame
