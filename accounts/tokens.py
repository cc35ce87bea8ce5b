"""Short-lived signed tokens: to open the WebSocket, and to set a new password once (from an
administrator's link or a "forgot password" mail)."""

import hashlib
from typing import NamedTuple

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import bindparam, delete, select

from extensions import db
from models import Login, User, display_name


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


# Reset links, by who handed them over: an administrator (the admin page) or the mail a
# "forgot password" request sent, shorter-lived. A salt each, so neither passes for the other.
RESET_SALT = "chat-password-reset"
FORGOT_SALT = "chat-password-forgot"
RESET_AGES = {RESET_SALT: "CHAT_RESET_MAX_AGE", FORGOT_SALT: "CHAT_FORGOT_MAX_AGE"}


def reset_token(user: User, mailed: bool = False) -> str:
    """A token that sets a new password for ``user``, once, within ``CHAT_RESET_MAX_AGE``
    seconds (``CHAT_FORGOT_MAX_AGE`` when ``mailed``): it names the current password (a
    fingerprint of its hash), so any new password spends it."""
    salt = FORGOT_SALT if mailed else RESET_SALT
    return _reset_serializer(salt).dumps({"uid": user.id, "h": _fingerprint(user)})


def user_of_reset(token: str) -> User | None:
    """The active user a reset token was made for, if it is still good."""
    payload = None
    for salt, max_age in RESET_AGES.items():
        try:
            payload = _reset_serializer(salt).loads(token, max_age=current_app.config[max_age])
            break
        except BadSignature:  # SignatureExpired among them.
            continue
    if not isinstance(payload, dict) or type(payload.get("uid")) is not int:
        return None
    user = db.session.get(User, payload["uid"])
    if user is None or not user.is_active or _fingerprint(user) != payload.get("h"):
        return None
    return user


def _fingerprint(user: User) -> str:
    """Of the password's hash, so that a token (signed, not secret) shows nothing of it."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def _reset_serializer(salt: str) -> URLSafeTimedSerializer:
    """Password-reset links: the socket tokens' keys, a salt per kind of link."""
    config = current_app.config
    keys = [*config["SECRET_KEY_FALLBACKS"], config["SECRET_KEY"]]
    return URLSafeTimedSerializer(keys, salt=salt)


class Holder(NamedTuple):
    """Who a socket token was issued to: what the socket keeps of them (``verify_holder``)."""

    id: int
    name: str
    locale: str | None


def _payload(token: str) -> tuple[int, int]:
    """``(user id, token version)`` from a well-signed, unexpired token; else ``TokenError``."""
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
    return user_id, version


def verify_token(token: str) -> User:
    """Return the user ``token`` was issued to, or raise ``TokenError``."""
    user_id, version = _payload(token)
    user = db.session.get(User, user_id)
    # A deleted user or a bumped version (logout everywhere, password change) revokes the token.
    # A bot never has a token (it never logs in); one forged for it opens nothing either.
    if user is None or user.token_version != version or not user.is_active or user.is_bot:
        raise TokenError("invalid_token")
    return user


# The same checks as ``verify_token``'s, in one prebuilt query that loads no User: every socket
# (a restart storm opens thousands at once) pays for this one.
_HOLDER = select(User.id, User.display_name, User.email, User.locale).where(
    User.id == bindparam("user_id"),
    User.token_version == bindparam("version"),
    User.deactivated_at.is_(None),
    User.is_bot.is_(False),
)


def verify_holder(token: str) -> Holder:
    """Who ``token`` was issued to, as ``verify_token`` would tell; or ``TokenError``."""
    user_id, version = _payload(token)
    params = {"user_id": user_id, "version": version}
    # The engine's connection, not the session's: no Session is built and closed for one read.
    with db.engine.connect() as connection:
        row = connection.execute(_HOLDER, params).first()
    if row is None:
        raise TokenError("invalid_token")
    return Holder(row.id, display_name(row.display_name, row.email), row.locale)
