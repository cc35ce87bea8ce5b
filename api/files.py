"""HTTP for files: ``POST /api/uploads``, and fetching a file or its thumbnail (``files/`` holds
the rest: the store, the images, who may read what).

Refusals come as early as they can: who asks, then the size the request announces, before a
byte of the body is read; then the body, read into a temporary file at most the limit long.
"""

import tempfile
from pathlib import Path
from urllib.parse import quote

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge

from accounts.tokens import TokenError, verify_token
from core.formatting import attachment_object
from extensions import csrf, limiter
from files import uploads
from files.images import ImageError, prepare
from files.store import StoreError, store
from models import Attachment, User
from web.errors import json_error

bp = Blueprint("files", __name__)

# Room in a request for the multipart framing around the file (boundaries, part headers).
MULTIPART_SLACK = 16 * 1024
FILE_CSP = "sandbox; default-src 'none'"


def _requester() -> tuple[User | None, bool]:
    """Who asks, and whether by the session cookie (which needs a CSRF token) or a Bearer token
    (which does not: another site's page cannot set the header)."""
    scheme, _space, token = request.headers.get("Authorization", "").partition(" ")
    if scheme:
        if scheme.lower() != "bearer" or not token.strip():
            return None, False
        try:
            return verify_token(token.strip()), False
        except TokenError:
            return None, False
    if current_user.is_authenticated:
        return current_user, True
    return None, False


def _uploader_key() -> str:
    """Rate-limit uploads per person (the session's or the token's), else per address."""
    user, _by_session = _requester()
    return f"user:{user.id}" if user is not None else f"ip:{request.remote_addr}"


def _too_large(code: str) -> tuple[Response, int]:
    """A 413 told before the body is read; the connection closes (the rest is not wanted)."""
    limit = current_app.config["CHAT_MAX_UPLOAD_BYTES"]
    messages = {
        "too_large": _("A file may be at most %(size)s.", size=human_size(limit)),
        "quota_exceeded": _(
            "Your files would take more than your %(size)s. Delete some messages with files first.",
            size=human_size(current_app.config["CHAT_UPLOAD_QUOTA_BYTES"]),
        ),
    }
    response, status = json_error(413, code, messages[code])
    response.headers["Connection"] = "close"
    return response, status


def human_size(size: int) -> str:
    """``26214400`` as ``25 MiB``: sizes in error messages."""
    if size < 1024:
        return f"{size} bytes"
    amount = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        amount /= 1024
        if amount < 1024 or unit == "GiB":
            break
    return f"{amount:.3g} {unit}"


@bp.post("/api/uploads")
# Shared with ``POST /api/v1/uploads`` (api/v1.py): one budget per person.
@limiter.shared_limit(
    lambda: current_app.config["CHAT_UPLOAD_LIMIT"], "uploads", key_func=_uploader_key
)
def upload() -> tuple[Response, int]:
    """Store the file of the part ``file``; answer its description (201)."""
    user, by_session = _requester()
    if user is None:
        return json_error(401, "unauthenticated", _("Log in, or send a token as Bearer."))
    return receive(user, by_session)


def receive(user: User, by_session: bool) -> tuple[Response, int]:
    """Take the upload of ``user`` in this request (checked for CSRF if ``by_session``); its
    description (201), or why not. ``POST /api/v1/uploads`` comes here too."""
    config = current_app.config
    limit, quota = config["CHAT_MAX_UPLOAD_BYTES"], config["CHAT_UPLOAD_QUOTA_BYTES"]
    announced = request.content_length
    if announced is not None and announced > limit + MULTIPART_SLACK:
        return _too_large("too_large")
    uploads.sweep(config["CHAT_UPLOAD_TTL"])
    used = uploads.used_bytes(user.id)
    if quota and announced is not None and used + announced - MULTIPART_SLACK > quota:
        return _too_large("quota_exceeded")
    request.max_content_length = limit + MULTIPART_SLACK
    try:
        if by_session:
            csrf.protect()  # Reads the form: only now that its size is known to be bounded.
        part = request.files.get("file")
    except RequestEntityTooLarge:
        return _too_large("too_large")
    if part is None:
        return json_error(400, "no_file", _("Send the file as the multipart field 'file'."))
    with tempfile.TemporaryDirectory(prefix="chat-upload-") as work:
        source = Path(work) / "upload"
        part.save(source)
        size = source.stat().st_size
        if size == 0:
            return json_error(400, "empty_file", _("The file is empty."))
        if size > limit:
            return _too_large("too_large")
        if quota and used + size > quota:
            return _too_large("quota_exceeded")
        try:
            prepared = prepare(source, Path(work), config["CHAT_MAX_IMAGE_PIXELS"])
        except ImageError as error:
            return _image_refused(error.code)
        try:
            attachment = uploads.create(user.id, uploads.clean_name(part.filename), prepared)
        except uploads.UploadError as error:
            return json_error(error.status, error.code, error.message)
    response = jsonify(attachment_object(attachment.data()))
    response.headers["Cache-Control"] = "no-store"
    return response, 201


def _image_refused(code: str) -> tuple[Response, int]:
    """An image that will not be served, and why."""
    if code == "image_too_large":
        megapixels = current_app.config["CHAT_MAX_IMAGE_PIXELS"] / 1_000_000
        message = _("An image may have at most %(n)s megapixels.", n=f"{megapixels:g}")
        return json_error(413, code, message)
    return json_error(400, code, _("This image could not be read: it may be damaged."))


@bp.get("/files/<int:attachment_id>/<path:_name>")
def download(attachment_id: int, _name: str) -> Response | tuple[Response, int]:
    """The file itself (the name in the path is for people and browsers; the id decides)."""
    return _serve(attachment_id, thumbnail=False)


@bp.get("/thumbnails/<int:attachment_id>")
def thumbnail(attachment_id: int) -> Response | tuple[Response, int]:
    """An image's thumbnail."""
    return _serve(attachment_id, thumbnail=True)


def _serve(attachment_id: int, thumbnail: bool) -> Response | tuple[Response, int]:
    """Send a file to someone who may read it; 404 to anyone else, as for no file at all."""
    user, _by_session = _requester()
    if user is None:
        return json_error(401, "unauthenticated", _("Log in, or send a token as Bearer."))
    attachment = uploads.readable(user.id, attachment_id)
    key = None
    if attachment is not None:
        key = attachment.thumbnail_key if thumbnail else attachment.key
    if attachment is None or key is None:
        return json_error(404, "not_found", _("There is no such file."))
    inline = attachment.width is not None
    content_type = _served_type(attachment, thumbnail)
    try:
        return store().respond(key, content_type, _file_headers(attachment, inline, thumbnail))
    except StoreError:
        return json_error(503, "unavailable", _("The file could not be read. Try again."))


def _served_type(attachment: Attachment, thumbnail: bool) -> str:
    """Only the images we decoded go out as what they are; anything else is opaque bytes."""
    if attachment.width is None:
        return "application/octet-stream"
    if thumbnail and attachment.thumbnail_key != attachment.key:
        return "image/webp"
    return attachment.content_type


def _file_headers(attachment: Attachment, inline: bool, thumbnail: bool) -> dict[str, str]:
    """Headers of every file response: how to save it, and that it never runs as a page."""
    name = attachment.name if not thumbnail else f"{attachment.name}.webp"
    return {
        "Content-Disposition": content_disposition("inline" if inline else "attachment", name),
        "Content-Security-Policy": FILE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        # Files never change under an id; only the reader's own browser may keep them.
        "Cache-Control": "private, max-age=86400",
    }


def content_disposition(kind: str, name: str) -> str:
    """``kind; filename="…"; filename*=UTF-8''…`` (RFC 6266): an ASCII fallback, then the name."""
    plain = (c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    fallback = "".join(plain)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def init_app(app: Flask) -> None:
    """Register the routes; an upload by Bearer token needs no CSRF token (the view checks the
    session's)."""
    app.register_blueprint(bp)
    csrf.exempt(upload)
