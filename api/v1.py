"""The REST API, ``/api/v1/``: personal API tokens only (``Authorization: Bearer chat_…``,
``accounts/api_tokens.py``), JSON in and out; docs/api.md describes every request.

Posting, editing, deleting and reacting go through ``realtime.outside``, the socket's own path
(parser, rate limit, committer, order of ids and changes): whoever follows the room on a socket
gets an API message in order, and a resume finds it exactly once.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l

from accounts import api_tokens
from api import files
from api.views import search_for
from core import rooms
from core.formatting import message_object
from extensions import csrf, db, limiter
from models import WRITE, ApiToken, User, messages_after
from realtime import outside
from realtime.commits import Author
from realtime.handlers import page
from realtime.protocol import (
    DEFAULT_PAGE,
    MAX_ID,
    MAX_PAGE,
    MAX_ROOM_KEY_CHARS,
    FrameError,
    StoredMessage,
)
from web.errors import json_error

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
PREFIX = "/api/v1/"

P = ParamSpec("P")
R = TypeVar("R")
Answer = Response | tuple[Response, int]

# What a refusal from the socket's path is over HTTP; any other code is the request's fault.
STATUS = {
    "forbidden": 403,
    "not_found": 404,
    "archived": 409,
    "too_many_reactions": 409,
    "rate_limited": 429,
    "unavailable": 503,
}
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
MAX_BODY_BYTES = 64 * 1024  # A JSON body, at most (a 413 past it, before it is read).
UNAUTHENTICATED = _l("Send a personal API token as 'Authorization: Bearer chat_…'.")
INVALID_TOKEN = _l("This API token is unknown or was revoked.")
DEACTIVATED = _l("This account is deactivated.")
INSUFFICIENT_SCOPE = _l("This token may only read: make a read and write token to change things.")
NOT_AN_OBJECT = _l("Send a JSON object as the body.")
FORBIDDEN = _l("You are not in this room.")


class Refused(Exception):
    """A request refused before its endpoint runs: the status, code and message to answer."""

    def __init__(self, status: int, code: str, message: object) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, str(message)


# ---- Who asks ---------------------------------------------------------------------------------


def _bearer() -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None (missing or malformed)."""
    scheme, _space, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def _authenticate() -> tuple[ApiToken, User]:
    """The live token of this request and its active owner, or ``Refused``."""
    cached = g.get("api_v1_auth")
    if cached is not None:
        return cached
    secret = _bearer()
    if secret is None:
        raise Refused(401, "unauthenticated", UNAUTHENTICATED)
    token = api_tokens.verify(secret)
    user = db.session.get(User, token.user_id) if token is not None else None
    if token is None or user is None:
        raise Refused(401, "invalid_token", INVALID_TOKEN)
    if not user.is_active:
        raise Refused(403, "deactivated", DEACTIVATED)
    g.api_v1_auth = (token, user)
    g.chat_locale = user.locale  # Errors in the person's language, as on their socket.
    return token, user


@bp.before_request
def _check_request() -> Answer | None:
    """Every request: a live token of an active account, and ``write`` scope for a change."""
    try:
        token, _user = _authenticate()
    except Refused as refused:
        return _refusal(refused)
    if request.method not in READ_METHODS and token.scope != WRITE:
        response, status = json_error(403, "insufficient_scope", str(INSUFFICIENT_SCOPE))
        response.headers["WWW-Authenticate"] = 'Bearer realm="api", error="insufficient_scope"'
        return response, status
    return None


def _refusal(refused: Refused) -> tuple[Response, int]:
    """A ``Refused`` as JSON; a 401 says how to authenticate (RFC 6750)."""
    response, status = json_error(refused.status, refused.code, refused.message)
    if status == 401:
        challenge = 'Bearer realm="api"'
        if refused.code == "invalid_token":
            challenge += ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = challenge
    return response, status


def _user() -> User:
    """The person this request acts for (``_check_request`` found them)."""
    return _authenticate()[1]


def _rate_key() -> str:
    """Uploads are limited per person, as on ``/api/uploads``."""
    try:
        return f"user:{_user().id}"
    except Refused:
        return f"ip:{request.remote_addr}"


def _no_store(response: Response) -> Response:
    """No answer of this API is kept by a cache (unknown paths' and 405s' included)."""
    if request.path.startswith(PREFIX) or request.path == PREFIX.rstrip("/"):
        response.headers["Cache-Control"] = "no-store"
    return response


# ---- Helpers ----------------------------------------------------------------------------------


def _body() -> dict[str, Any]:
    """The JSON object of the body, or ``Refused`` (not JSON, or not an object)."""
    # Read at most this much: a message's 2000 characters fit many times over.
    request.max_content_length = MAX_BODY_BYTES
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise Refused(400, "bad_request", NOT_AN_OBJECT)
    return data


def answers(view: Callable[P, Answer]) -> Callable[P, Answer]:
    """Turn ``Refused`` and the socket path's ``FrameError`` into their JSON answers."""

    @wraps(view)
    def run(*args: P.args, **kwargs: P.kwargs) -> Answer:
        try:
            return view(*args, **kwargs)
        except Refused as refused:
            return _refusal(refused)
        except FrameError as error:
            return _frame_error(error)

    return run


def _frame_error(error: FrameError) -> tuple[Response, int]:
    """A refusal of the socket's path as HTTP: 400 unless ``STATUS`` says otherwise."""
    response, status = json_error(STATUS.get(error.code, 400), error.code, str(error.message))
    if error.code == "rate_limited" and error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response, status


def _member_room(key: str) -> int:
    """The id of room ``key`` (as the URL has it) if the person is in it; ``forbidden``
    otherwise, whether or not it exists."""
    room_id = None
    if 0 < len(key) <= MAX_ROOM_KEY_CHARS:
        room_id = rooms.member_room_id(_user().id, rooms.room_key(key))
    if room_id is None:
        raise Refused(403, "forbidden", FORBIDDEN)
    return room_id


def _id_arg(name: str) -> int | None:
    """An optional message id of the query string, checked."""
    value = request.args.get(name)
    if value is None:
        return None
    if not (value.isdecimal() and 0 <= int(value) <= MAX_ID):
        raise Refused(400, "bad_request", _l("'%(name)s' must be a message id.", name=name))
    return int(value)


def _limit() -> int:
    """The page size of the query string: 1 to 100, 50 by default."""
    value = request.args.get("limit")
    if value is None:
        return DEFAULT_PAGE
    if not (value.isdecimal() and 0 < int(value) <= MAX_PAGE):
        raise Refused(400, "bad_request", _l("'limit' must be 1 to %(n)s.", n=MAX_PAGE))
    return int(value)


def _optional(body: Mapping[str, Any], name: str, kind: type, what: object) -> Any:
    """Field ``name`` of a body if it is of ``kind`` (bools are not ints) or absent (None)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Refused(400, "bad_request", what)
    return value


def _required_text(body: Mapping[str, Any], name: str) -> str:
    """A string field the request must have."""
    value = body.get(name)
    if not isinstance(value, str):
        raise Refused(400, "bad_request", _l("The '%(name)s' field must be a string.", name=name))
    return value


def _client_id(body: Mapping[str, Any]) -> str | None:
    return _optional(body, "client_id", str, _l("The 'client_id' field must be a string."))


def _locale() -> str:
    return str(get_locale() or "en")


def _changed(frame: Mapping[str, Any]) -> Response:
    """A change's answer: the message as it is now, the change's number and its kind."""
    return jsonify(change=frame["change"], kind=frame["kind"], message=frame["message"])


# ---- Endpoints --------------------------------------------------------------------------------


@bp.get("/me")
@answers
def me() -> Answer:
    """Who the token acts for."""
    token, user = _authenticate()
    return jsonify(
        id=user.id, name=user.name, email=user.email, avatar_url=user.avatar_url, scope=token.scope
    )


@bp.get("/rooms")
@answers
def list_rooms() -> Answer:
    """The person's rooms, as the socket's ``room`` entries give them (without who is online)."""
    entries = []
    for summary in rooms.summaries(_user().id):
        entry = dict(summary)
        entry.pop("id")
        entries.append(entry)
    return jsonify(rooms=entries)


@bp.get("/rooms/<key>/messages")
@answers
def room_messages(key: str) -> Answer:
    """A page of a room's messages, oldest first: before an id (or the latest), or after one."""
    room_id = _member_room(key)
    before, after, limit = _id_arg("before"), _id_arg("after"), _limit()
    if before is not None and after is not None:
        raise Refused(400, "bad_request", _l("Send 'before' or 'after', not both."))
    shown: Sequence[StoredMessage]
    if after is not None:
        newer = messages_after(room_id, after, limit + 1)
        shown, has_more, has_newer = newer[:limit], False, len(newer) > limit
    else:
        older, has_more = page(room_id, before, limit)
        shown, has_newer = older, False
    return jsonify(
        room=rooms.room_key(key),
        messages=[message_object(message) for message in shown],
        has_more=has_more,
        has_newer=has_newer,
    )


@bp.post("/rooms/<key>/messages")
@answers
def post_message(key: str) -> Answer:
    """Post a message through the socket's path; a retried ``client_id`` gets its original."""
    body = _body()
    user = _user()
    text = _optional(body, "text", str, _l("The 'text' field must be a string.")) or ""
    reply_to = _optional(body, "reply_to", int, _l("The 'reply_to' field must be a message id."))
    attachments = _optional(
        body, "attachments", list, _l("The 'attachments' field must be a list of upload ids.")
    )
    author = Author(user.id, user.name, user.avatar_url, user.is_bot)
    if not 0 < len(key) <= MAX_ROOM_KEY_CHARS:
        raise Refused(403, "forbidden", FORBIDDEN)
    stored, created = outside.post(
        author, key, text, _client_id(body), reply_to, attachments or (), _locale()
    )
    return jsonify(message_object(stored)), 201 if created else 200


@bp.patch("/messages/<int:message_id>")
@answers
def edit_message(message_id: int) -> Answer:
    """Edit one's message (within the edit window)."""
    body = _body()
    text = _required_text(body, "text")
    return _changed(outside.edit(_user().id, message_id, text, _client_id(body)))


@bp.delete("/messages/<int:message_id>")
@answers
def delete_message(message_id: int) -> Answer:
    """Delete one's message (an administrator: anyone's)."""
    return _changed(outside.delete(_user().id, message_id))


@bp.post("/messages/<int:message_id>/reactions")
@answers
def add_reaction(message_id: int) -> Answer:
    """Add an emoji to a message (again: nothing changes, ``change`` is null)."""
    body = _body()
    emoji = _required_text(body, "emoji")
    return _changed(outside.react(_user().id, message_id, emoji, True, _client_id(body)))


@bp.delete("/messages/<int:message_id>/reactions/<emoji>")
@answers
def remove_reaction(message_id: int, emoji: str) -> Answer:
    """Take one's emoji back."""
    return _changed(outside.react(_user().id, message_id, emoji, False))


@bp.get("/search")
@answers
def search() -> Answer:
    """Messages of the person's rooms that match, newest first, as ``/api/search`` answers."""
    return search_for(_user())


@bp.post("/uploads")
@limiter.shared_limit(
    lambda: current_app.config["CHAT_UPLOAD_LIMIT"], "uploads", key_func=_rate_key
)
@answers
def upload() -> Answer:
    """Store a file (multipart field ``file``) for a message's ``attachments``."""
    return files.receive(_user(), by_session=False)


def init_app(app: Flask) -> None:
    """Register the API: tokens, not cookies, so no CSRF; every answer ``no-store``."""
    app.register_blueprint(bp)
    csrf.exempt(bp)
    app.after_request(_no_store)
