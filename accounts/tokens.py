"""Short-lived signed tokens that let a logged-in user open the WebSocket."""

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete

from extensions import db
from models import Login, User


class TokenError(Exception):
    """A token that must be refused; ``code`` is the error name sent to the client."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _serializer() -> URLSafeTimedSerializer:
    """The serializer for socket tokens: its own salt, current key plus fallbacks."""
    config = current_app.config
    # itsdangerous signs with the last key and verifies with any of them.
    keys = [*config["SECRET_KEY_FALLBACKS"], config["SECRET_KEY"]]
    return URLSafeTimedSerializer(keys, salt=config["CHAT_TOKEN_SALT"])


def issue_token(user: User) -> str:
    """Return a token for ``user``, valid for ``CHAT_TOKEN_MAX_AGE`` seconds."""
    return _serializer().dumps({"uid": user.id, "v": user.token_version})


def revoke(user: User, end_sessions: bool = False) -> None:
    """Invalidate the user's tokens (and with ``end_sessions`` their sessions).

    Open sockets are the socket stack's: the caller announces why (``accounts.signals``).
    """
    user.token_version += 1
    if end_sessions:
        user.session_version += 1
        db.session.execute(delete(Login).where(Login.user_id == user.id))
    db.session.commit()


def verify_token(token: str) -> User:
    """Return the user ``token`` was issued to, or raise ``TokenError``."""
    try:
        payload = _serializer().loads(token, max_age=current_app.config["CHAT_TOKEN_MAX_AGE"])
    except SignatureExpired:
        raise TokenError("expired_token") from None
    except BadSignature:
        raise TokenError("invalid_token") from None
    if not isinstance(payload, dict):
        raise TokenError("invalid_token")
    user_id, version = payload.get("uid"), payload.get("v")
    if type(user_id) is not int or type(version) is not int:
        raise TokenError("invalid_token")
    user = db.session.get(User, user_id)
    # A deleted user or a bumped version (logout everywhere, password change) revokes the token.
    if user is None or user.token_version != version:
        raise TokenError("invalid_token")
    return user
