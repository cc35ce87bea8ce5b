"""The JSON API: tokens for the WebSocket."""

from collections.abc import Mapping

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_login import current_user

from accounts.forms import MAX_EMAIL_CHARS, MAX_PASSWORD_CHARS
from accounts.tokens import issue_token
from accounts.views import authenticate, limit_logins
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
    return _token_response(user)


@bp.get("/token")
def refresh_token() -> Response | tuple[Response, int]:
    """A fresh token for the logged-in session (the chat page calls it before reconnecting)."""
    if not current_user.is_authenticated:
        return json_error(401, "unauthenticated", "Log in first.")
    return _token_response(current_user)


def init_app(app: Flask) -> None:
    """Register the blueprint; the token endpoint takes credentials, not cookies, so no CSRF."""
    app.register_blueprint(bp)
    csrf.exempt(create_token)
