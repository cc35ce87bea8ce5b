"""Web Push endpoints: the server's public key, a browser's subscription made and removed, and
the service worker, served from the root so that its scope is the whole site."""

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from extensions import db
from models import PushSubscription
from push.endpoints import AUTH_BYTES, endpoint_problem, is_browser_key, key_bytes
from push.keys import VapidKeys
from web.errors import json_error

bp = Blueprint("push", __name__)

KEYS_KEY = "chat_push_keys"
MAX_SUBSCRIPTIONS = 20  # Browsers per person; past it the oldest is dropped.
MAX_USER_AGENT_CHARS = 200


def _keys() -> VapidKeys:
    return current_app.extensions[KEYS_KEY]


def _unauthenticated() -> tuple[Response, int]:
    return json_error(401, "unauthenticated", _("Log in first."))


@bp.get("/push/key")
def public_key() -> Response | tuple[Response, int]:
    """The VAPID public key a browser subscribes with (``applicationServerKey``)."""
    if not current_user.is_authenticated:
        return _unauthenticated()
    return jsonify({"public_key": _keys().public_key})


@bp.post("/push/subscriptions")
def subscribe() -> Response | tuple[Response, int]:
    """Store this browser's ``PushSubscription`` (its JSON) for the current user; the same
    endpoint is updated, and moves to whoever is signed in now."""
    if not current_user.is_authenticated:
        return _unauthenticated()
    body = request.get_json(silent=True)
    parsed = _parse_subscription(body)
    if isinstance(parsed, tuple):
        return parsed
    endpoint, p256dh, auth = parsed.endpoint, parsed.p256dh, parsed.auth
    agent = request.headers.get("User-Agent", "")[:MAX_USER_AGENT_CHARS]
    row = db.session.scalar(select(PushSubscription).where(PushSubscription.endpoint == endpoint))
    created = row is None
    if row is None:
        row = PushSubscription(endpoint=endpoint, user_id=current_user.id)
        db.session.add(row)
    row.user_id, row.p256dh, row.auth, row.user_agent = current_user.id, p256dh, auth, agent
    try:
        db.session.flush()
        _drop_oldest(current_user.id)
        db.session.commit()
    except IntegrityError:  # The same browser, subscribing twice at once: the other one won.
        db.session.rollback()
        return json_error(409, "conflict", _("This browser is being subscribed: try again."))
    return jsonify({"id": row.id, "endpoint": endpoint}), 201 if created else 200


@bp.delete("/push/subscriptions")
def unsubscribe() -> Response | tuple[Response, int]:
    """Forget one of the current user's browsers, named by its endpoint."""
    if not current_user.is_authenticated:
        return _unauthenticated()
    body = request.get_json(silent=True)
    endpoint = body.get("endpoint") if isinstance(body, dict) else None
    if not isinstance(endpoint, str) or not endpoint:
        return json_error(400, "bad_request", _("Send a JSON object with the 'endpoint' field."))
    gone = db.session.execute(
        delete(PushSubscription)
        .where(PushSubscription.endpoint == endpoint, PushSubscription.user_id == current_user.id)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if not gone.rowcount:  # type: ignore[attr-defined]  # a CursorResult for a DELETE  # Someone else's, or none: the same answer.
        return json_error(404, "not_found", _("This browser is not subscribed."))
    return jsonify({"deleted": True})


@bp.get("/sw.js")
def service_worker() -> Response:
    """The service worker, from the root: its scope is every page of the site."""
    response = send_from_directory(current_app.static_folder or "static", "sw.js", max_age=0)
    response.headers["Content-Type"] = "text/javascript; charset=utf-8"
    response.headers["Cache-Control"] = "no-cache"
    return response


@dataclass(frozen=True)
class Browser:
    """What a ``PushSubscription``'s JSON says, checked."""

    endpoint: str
    p256dh: str
    auth: str


def _parse_subscription(body: Any) -> Browser | tuple[Response, int]:
    """The checked fields of a ``PushSubscription``'s JSON, or the error response."""
    if not isinstance(body, dict):
        return json_error(400, "bad_request", _("Send the browser's subscription as JSON."))
    endpoint, keys = body.get("endpoint"), body.get("keys")
    if not isinstance(endpoint, str) or not isinstance(keys, dict):
        message = _("The subscription needs an 'endpoint' and its 'keys'.")
        return json_error(400, "bad_request", message)
    problem = endpoint_problem(endpoint, bool(current_app.config["CHAT_FETCH_ALLOW_LOOPBACK"]))
    if problem is not None:
        return json_error(400, "bad_endpoint", problem)
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    if not is_browser_key(p256dh):
        message = _("'keys.p256dh' must be a P-256 public key in base64url (65 bytes).")
        return json_error(400, "bad_keys", message)
    if key_bytes(auth, AUTH_BYTES) is None:
        message = _("'keys.auth' must be 16 bytes in base64url.")
        return json_error(400, "bad_keys", message)
    return Browser(endpoint, str(p256dh).rstrip("="), str(auth).rstrip("="))


def _drop_oldest(user_id: int) -> None:
    """Keep at most ``MAX_SUBSCRIPTIONS`` browsers of one person: the oldest go first."""
    keep = (
        select(PushSubscription.id)
        .where(PushSubscription.user_id == user_id)
        .order_by(PushSubscription.created_at.desc(), PushSubscription.id.desc())
        .limit(MAX_SUBSCRIPTIONS)
    )
    db.session.execute(
        delete(PushSubscription)
        .where(
            PushSubscription.user_id == user_id,
            PushSubscription.id.not_in(keep.scalar_subquery()),
        )
        .execution_options(synchronize_session=False)
    )
