"""The wire protocol: parse and validate client frames, encode server frames. Pure, no I/O.

Every frame is a JSON object with a ``type``. See the protocol reference in README.md.
"""

import json
import unicodedata
from dataclasses import dataclass

MAX_CLIENT_ID_CHARS = 64

ERROR_MESSAGES = {
    "unsupported": "Binary frames are not supported; send text or a JSON object.",
    "unknown_type": "Unknown frame type; the only client frame type is 'message'.",
    "empty": "The message is empty.",
    "too_long": "The message is longer than {max_chars} characters.",
    "unavailable": "The message could not be saved; please send it again.",
}


@dataclass(frozen=True)
class ChatMessage:
    """A validated message a client wants to post."""

    text: str
    client_id: str | None = None


class FrameError(Exception):
    """A client frame that is refused; becomes an ``error`` frame for its sender."""

    def __init__(self, code, message, client_id=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id


def parse_frame(data, max_chars):
    """Return the ``ChatMessage`` in a received frame, or raise ``FrameError``."""
    if not isinstance(data, str):
        raise FrameError("unsupported", ERROR_MESSAGES["unsupported"])
    if not data.lstrip().startswith("{"):
        # Not a JSON object: the whole frame is the message text (Postman users just type).
        return _validate(data, None, max_chars)
    frame = _load_object(data)
    client_id = _client_id(frame)
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise FrameError("bad_request", "The 'type' field must be a string.", client_id)
    if kind != "message":
        raise FrameError("unknown_type", ERROR_MESSAGES["unknown_type"], client_id)
    text = frame.get("text")
    if not isinstance(text, str) or not is_unicode(text):
        raise FrameError("bad_request", "The 'text' field must be a string.", client_id)
    return _validate(text, client_id, max_chars)


def _load_object(data):
    """Decode a frame that starts with ``{``: it must be a valid JSON object."""
    try:
        frame = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers malformed JSON and integers too long to convert.
        frame = None
    if not isinstance(frame, dict):
        raise FrameError("bad_request", "A frame starting with '{' must be a valid JSON object.")
    return frame


def is_unicode(value):
    """False for strings JSON can carry but UTF-8 cannot: lone surrogates such as ``\\ud800``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(name):
    """Refuse NaN and Infinity, which are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _client_id(frame):
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
            f"The 'client_id' field must be a string of 1 to {MAX_CLIENT_ID_CHARS} characters.",
        )
    return client_id


def _validate(text, client_id, max_chars):
    """Trim ``text`` and check it is neither empty nor too long."""
    text = text.strip()
    if not any(_is_visible(char) for char in text):
        raise FrameError("empty", ERROR_MESSAGES["empty"], client_id)
    if len(text) > max_chars:
        message = ERROR_MESSAGES["too_long"].format(max_chars=max_chars)
        raise FrameError("too_long", message, client_id)
    return ChatMessage(text, client_id)


def _is_visible(char):
    """Whitespace and invisible format characters (zero-width space, BOM…) show nothing."""
    return not char.isspace() and unicodedata.category(char) != "Cf"


def encode(frame):
    """Serialize a server frame compactly."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def format_ts(moment):
    """ISO-8601 UTC with milliseconds and a ``Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_frame(message):
    """The ``message`` frame for a stored message (see ``models.Message.to_dict``)."""
    return {
        "type": "message",
        "id": message["id"],
        "user": message["user"],
        "user_id": message["user_id"],
        "text": message["text"],
        "ts": format_ts(message["created_at"]),
        "client_id": message["client_id"],
    }


def hello_frame(user_id, name, online, history):
    """The first frame of every connection: who you are, who is here, recent history."""
    return {
        "type": "hello",
        "user": {"id": user_id, "name": name},
        "online": online,
        "history": [message_frame(message) for message in history],
    }


def presence_frame(kind, user_id, name):
    """A ``join`` or ``leave`` frame."""
    return {"type": kind, "user": name, "user_id": user_id}


def error_frame(code, message, client_id=None):
    """An ``error`` frame for one client."""
    return {"type": "error", "code": code, "message": message, "client_id": client_id}
