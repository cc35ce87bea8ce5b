"""``GET /previews/<id>/image``: our copy of a preview's image, to the people who see it."""

from flask import Blueprint, Response, request
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from accounts.tokens import TokenError, verify_token
from extensions import db
from files.store import StoreError, store
from models import LinkPreview, Membership, Message
from previews.service import EXTENSIONS
from web.errors import json_error

bp = Blueprint("previews", __name__)

TYPES = {extension: kind for kind, extension in EXTENSIONS.items()}
# A preview's image never changes under its id (a refetch keeps it): kept a year, as avatars.
CACHE_CONTROL = "private, max-age=31536000, immutable"
FILE_CSP = "sandbox; default-src 'none'"


def _requester_id() -> int | None:
    """Who asks: the session's person, or a socket token's sent as ``Authorization: Bearer``."""
    scheme, _space, token = request.headers.get("Authorization", "").partition(" ")
    if scheme:
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            return verify_token(token.strip()).id
        except TokenError:
            return None
    return current_user.id if current_user.is_authenticated else None


def visible_image(user_id: int, preview_id: int) -> str | None:
    """The store's key of the preview's image if ``user_id`` is in a room where a live message
    shows that preview; None otherwise, as for no preview at all."""
    shown = (
        select(Message.id)
        .join(Membership, Membership.room_id == Message.room_id)
        .where(
            Membership.user_id == user_id,
            Message.preview_id == preview_id,
            Message.deleted_at.is_(None),
        )
        .limit(1)
    )
    if db.session.scalar(shown) is None:
        return None
    preview = db.session.get(LinkPreview, preview_id)
    if preview is None or not preview.ok:
        return None
    return preview.image_key


@bp.get("/previews/<int:preview_id>/image")
def image(preview_id: int) -> Response | tuple[Response, int]:
    """The image, re-encoded when it was fetched; 404 to anyone who does not see it."""
    user_id = _requester_id()
    if user_id is None:
        return json_error(401, "unauthenticated", _("Log in, or send a token as Bearer."))
    key = visible_image(user_id, preview_id)
    extension = key[key.rindex(".") :] if key and "." in key else ""
    if key is None or extension not in TYPES:
        return json_error(404, "not_found", _("There is no such image."))
    headers = {
        "Content-Disposition": f'inline; filename="preview{extension}"',
        "Content-Security-Policy": FILE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": CACHE_CONTROL,
    }
    try:
        return store().respond(key, TYPES[extension], headers)
    except StoreError:
        return json_error(503, "unavailable", _("The image could not be read. Try again."))
