"""The JSON API: tokens for the WebSocket, and search (files: ``api/files.py``)."""

from collections.abc import Mapping

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_login import current_user

from accounts.forms import MAX_EMAIL_CHARS, MAX_PASSWORD_CHARS
from accounts.tokens import TokenError, issue_token, verify_token
from accounts.views import DEACTIVATED, authenticate, limit_logins
from core import rooms, search
from core.formatting import message_object
from core.text import is_unicode
from extensions import csrf
from models import User
from web.errors import json_error

bp = Blueprint("api", __name__, url_prefix="/api")


def _token_response(user: User) -> Response:
    """``{"token", "expires_in"}`` for ``user``, never cached."""
    response = jsonify(token=issue_token(user), expires_in=current_app.config["CHAT_TOKEN_MAX_AGE"])
    response.headers["Cache-Control"] = "no-store"
    return response


def _credentials() -> tuple[str, str] | None:
    """Return ``(email, password)`` from a JSON body or form fields, or None if malformed."""
    data = request.get_json(silent=True) if request.is_json else request.form
    if not isinstance(data, Mapping):  # A JSON array, string or number, or no JSON at all.
        return None
    email, password = data.get("email"), data.get("password")
    if not (isinstance(email, str) and isinstance(password, str)):
        return None
    if not (is_unicode(email) and is_unicode(password)):
        return None
    if len(email) > MAX_EMAIL_CHARS or len(password) > MAX_PASSWORD_CHARS:
        return None
    return email, password


@bp.post("/token")
@limit_logins
def create_token() -> Response | tuple[Response, int]:
    """Exchange an email and password for a token (for Postman and scripts)."""
    credentials = _credentials()
    if credentials is None:
        return json_error(
            400, "bad_request", 'Send {"email": "...", "password": "..."} as JSON or form fields.'
        )
    user = authenticate(*credentials)
    if user is None:
        return json_error(401, "invalid_credentials", "Invalid email or password.")
    if not user.is_active:
        return json_error(403, "deactivated", str(DEACTIVATED))
    return _token_response(user)


@bp.get("/token")
def refresh_token() -> Response | tuple[Response, int]:
    """A fresh token for the logged-in session (the chat page calls it before reconnecting)."""
    if not current_user.is_authenticated:
        return json_error(401, "unauthenticated", "Log in first.")
    return _token_response(current_user)  # The loader refuses a deactivated account's session.


MAX_ID = 2**53  # As on the socket: larger ids would lose precision in JavaScript.


def api_user() -> User | None:
    """Who asks: the page's session, or a socket token as ``Authorization: Bearer`` (scripts)."""
    if current_user.is_authenticated:
        return current_user
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return verify_token(token.strip())
    except TokenError:
        return None


@bp.get("/search")
def search_messages() -> Response | tuple[Response, int]:
    """``?q=…&room=…&before=…``: messages the user may read that match, newest first."""
    user = api_user()
    if user is None:
        return json_error(401, "unauthenticated", "Log in, or send a token as Bearer.")
    return search_for(user)


def search_for(user: User) -> Response | tuple[Response, int]:
    """The answer to this request's search, for ``user`` (``GET /api/v1/search`` too)."""
    before = request.args.get("before")
    if before is not None and not (before.isdecimal() and 0 < int(before) <= MAX_ID):
        return json_error(400, "bad_request", "'before' must be a message id.")
    room_id = None
    if (key := request.args.get("room")) is not None:
        room = rooms.find_room(rooms.room_key(key))
        if room is None or not rooms.is_member(room.id, user.id):
            # The same answer whether it exists or not: nothing leaks.
            return json_error(403, "forbidden", "You are not in this room.")
        room_id = room.id
    try:
        hits, has_more = search.search(
            user.id, request.args.get("q", ""), room_id, int(before) if before else None
        )
    except search.SearchError as error:
        return json_error(400, error.code, error.message)
    results = [{"message": message_object(hit.message), "snippet": hit.snippet} for hit in hits]
    response = jsonify(results=results, has_more=has_more)
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    """Register the blueprint; the token endpoint takes credentials, not cookies, so no CSRF."""
    app.register_blueprint(bp)
    csrf.exempt(create_token)
