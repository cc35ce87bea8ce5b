"""Avatars: a picture uploaded on the profile page, made a square of ``AVATAR_PX`` pixels with no
metadata, kept in the file store, and served to whoever is signed in.

The picture is read like an upload (``images.py``: sniffed, its size in pixels checked from the
header, turned by its EXIF orientation), then cropped to its centre square, resized and written
again from its pixels alone (WebP, or PNG where Pillow lacks WebP): no EXIF, XMP, comment or
colour profile. Its key, ``avatars/<user id>/<hash of its bytes>.webp``, changes with the
picture, so its address can be cached for good; the picture it replaces leaves the store.
"""

import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from PIL import Image, ImageOps, features
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from accounts.signals import announce, avatar_changed
from accounts.tokens import TokenError, verify_token
from extensions import csrf, db, limiter, login_manager
from files.images import ImageError, open_image, upright
from files.store import StoreError, store
from models import User
from web.errors import CSRF_HELP, json_error

bp = Blueprint("avatars", __name__)

AVATAR_PX = 256
# Room in a request for the multipart framing around the file (boundaries, part headers).
MULTIPART_SLACK = 16 * 1024
NAME = re.compile(r"[0-9a-f]{16}\.(?:webp|png)")
TYPES = {".webp": "image/webp", ".png": "image/png"}
# A key never changes its bytes: browsers keep the picture a year without asking again.
CACHE_CONTROL = "private, max-age=31536000, immutable"
FILE_CSP = "sandbox; default-src 'none'"
# The HTTP status of each refusal; the message is told in ``_message``.
STATUS = {
    "no_file": 400,
    "empty_file": 400,
    "not_an_image": 400,
    "bad_image": 400,
    "csrf_failed": 400,
    "unauthenticated": 401,
    "too_large": 413,
    "image_too_large": 413,
    "unavailable": 503,
}


class AvatarError(Exception):
    """A picture refused, or not kept: ``code`` is a key of ``STATUS``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Made:
    """An avatar ready to store: its file, its type and the extension of its key."""

    path: Path
    content_type: str
    extension: str


# ---- The picture -------------------------------------------------------------------------------


def make_avatar(source: Path, work: Path, max_pixels: int) -> Made:
    """The avatar of the image in ``source``, written in ``work``; ``AvatarError`` for a file
    that is no image we read, a damaged one, or one over ``max_pixels`` (refused unopened)."""
    try:
        image = open_image(source)
    except ImageError as error:
        raise AvatarError(error.code) from None
    if image is None:
        raise AvatarError("not_an_image")
    with image:
        # Only the first frame is decoded (an animation's): its pixels are what counts.
        if image.width * image.height > max_pixels:
            raise AvatarError("image_too_large")
        try:
            square = _square(image)
        except Image.DecompressionBombError:
            raise AvatarError("image_too_large") from None
        except (OSError, ValueError, SyntaxError, EOFError, KeyError):
            raise AvatarError("bad_image") from None  # Truncated or corrupt past its header.
    return _save(square, work)


def _square(image: Image.Image) -> Image.Image:
    """The first frame, upright, cropped to its centre square, ``AVATAR_PX`` wide, in RGB(A),
    with nothing but its pixels."""
    turned = upright(image)
    if turned.mode not in {"RGB", "RGBA"}:
        has_alpha = turned.mode in {"LA", "PA", "RGBa", "La"} or "transparency" in turned.info
        turned = turned.convert("RGBA" if has_alpha else "RGB")
    square = ImageOps.fit(turned, (AVATAR_PX, AVATAR_PX), Image.Resampling.LANCZOS)
    square.info = {}  # Pillow writes what ``info`` holds: nothing about where it came from.
    return square


def _save(square: Image.Image, work: Path) -> Made:
    """Write the square as WebP, or as PNG when this Pillow was built without WebP."""
    if features.check("webp"):
        target = work / "avatar.webp"
        square.save(target, "WEBP", quality=85)
        return Made(target, "image/webp", ".webp")
    target = work / "avatar.png"
    square.save(target, "PNG", optimize=True)
    return Made(target, "image/png", ".png")


# ---- The store and the account -----------------------------------------------------------------


def replace_avatar(user_id: int, made: Made) -> str:
    """Store ``made`` as the user's picture, remove the one it replaces, tell the socket stack;
    return its address. ``AvatarError`` ``unavailable`` if the store or the database failed."""
    digest = hashlib.sha256(made.path.read_bytes()).hexdigest()[:16]
    key = f"avatars/{user_id}/{digest}{made.extension}"
    try:
        store().put(key, made.path, made.content_type)
    except StoreError as error:
        raise AvatarError("unavailable") from error
    # Bytes first, then the row: a failure leaves bytes no row names (the same picture again
    # may be the current one: never removed here), never a row naming nothing.
    return _set_key(user_id, key)


def remove_avatar(user_id: int) -> None:
    """Back to the initials: the picture leaves the account and the store."""
    _set_key(user_id, None)


def _set_key(user_id: int, key: str | None) -> str:
    """Point the account at ``key``, remove the picture it named before, announce the change;
    return the new address ("" for none)."""
    try:
        # Locked until the commit (PostgreSQL): two uploads at once each remove the one they saw.
        old = db.session.scalar(select(User.avatar).where(User.id == user_id).with_for_update())
        db.session.execute(update(User).where(User.id == user_id).values(avatar=key))
        db.session.commit()
    except SQLAlchemyError as error:
        db.session.rollback()
        raise AvatarError("unavailable") from error
    if old is not None and old != key:
        store().delete([old])
    url = db.session.get_one(User, user_id).avatar_url
    announce(avatar_changed, user_id, avatar_url=url)
    return url or ""


# ---- Routes ------------------------------------------------------------------------------------


def _wants_json() -> bool:
    """A script asked (``Accept: application/json``); a form post gets a page."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _message(code: str) -> str:
    """What to tell the person about a refusal, in their language."""
    config = current_app.config
    if code == "too_large":
        return _(
            "A picture may be at most %(size)s.", size=size_text(config["CHAT_MAX_AVATAR_BYTES"])
        )
    if code == "image_too_large":
        megapixels = config["CHAT_MAX_IMAGE_PIXELS"] / 1_000_000
        return _("A picture may have at most %(n)s megapixels.", n=f"{megapixels:g}")
    messages = {
        "no_file": _("Choose a picture to upload."),
        "empty_file": _("The file is empty."),
        "not_an_image": _("This file is not a picture: choose a JPEG, PNG, GIF or WebP image."),
        "bad_image": _("This picture could not be read: it may be damaged."),
        "csrf_failed": str(CSRF_HELP),
        "unauthenticated": _("Log in first."),
        "unavailable": _("The picture could not be saved. Try again in a moment."),
    }
    return messages[code]


def size_text(size: int) -> str:
    """``5242880`` as ``5 MiB``: the limit, as the profile page and its errors say it."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


def _refused(code: str) -> ResponseReturnValue:
    """A refusal: JSON with its status for a script, else back to the profile with a flash."""
    message = _message(code)
    if _wants_json():
        response, status = json_error(STATUS[code], code, message)
        if status == 413:
            response.headers["Connection"] = "close"  # The rest of the body is not wanted.
        return response, status
    if code == "unauthenticated":
        return login_manager.unauthorized()
    flash(message, "error")
    return redirect(url_for("accounts.profile"), 303)


def _done(url: str, message: str) -> ResponseReturnValue:
    """Success: the new address for a script, else back to the profile with a flash."""
    if _wants_json():
        response = jsonify({"avatar_url": url or None})
        response.headers["Cache-Control"] = "no-store"
        return response
    flash(message, "success")
    return redirect(url_for("accounts.profile"), 303)


def _uploader_key() -> str:
    """Rate-limit avatars per person, else per address (with uploads' limit)."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return f"ip:{request.remote_addr}"


@bp.post("/profile/avatar")
@limiter.limit(lambda: current_app.config["CHAT_UPLOAD_LIMIT"], key_func=_uploader_key)
def upload() -> ResponseReturnValue:
    """Make the part ``avatar`` the signed-in person's picture."""
    if not current_user.is_authenticated:
        return _refused("unauthenticated")
    limit = current_app.config["CHAT_MAX_AVATAR_BYTES"]
    announced = request.content_length
    if announced is not None and announced > limit + MULTIPART_SLACK:
        return _refused("too_large")  # Before a byte of the body is read.
    request.max_content_length = limit + MULTIPART_SLACK
    try:
        csrf.protect()  # Reads the form: only now that its size is known to be bounded.
        part = request.files.get("avatar")
    except RequestEntityTooLarge:
        return _refused("too_large")
    except CSRFError:
        return _refused("csrf_failed")
    if part is None or not part.filename:
        return _refused("no_file")
    with tempfile.TemporaryDirectory(prefix="chat-avatar-") as work:
        source = Path(work) / "upload"
        part.save(source)
        size = source.stat().st_size
        if size == 0:
            return _refused("empty_file")
        if size > limit:
            return _refused("too_large")
        try:
            made = make_avatar(source, Path(work), current_app.config["CHAT_MAX_IMAGE_PIXELS"])
            url = replace_avatar(current_user.id, made)
        except AvatarError as error:
            return _refused(error.code)
    return _done(url, _("Your picture was saved."))


@bp.post("/profile/avatar/delete")
def delete() -> ResponseReturnValue:
    """Remove the signed-in person's picture: their initials show again."""
    if not current_user.is_authenticated:
        return _refused("unauthenticated")
    try:
        csrf.protect()
        remove_avatar(current_user.id)
    except CSRFError:
        return _refused("csrf_failed")
    except AvatarError as error:
        return _refused(error.code)
    return _done("", _("Your picture was removed: your initials show instead."))


def _signed_in() -> bool:
    """Whether the request comes from someone signed in: the session, or a socket token sent
    as ``Authorization: Bearer …`` (as for files)."""
    scheme, _space, token = request.headers.get("Authorization", "").partition(" ")
    if scheme:
        if scheme.lower() != "bearer" or not token.strip():
            return False
        try:
            verify_token(token.strip())
        except TokenError:
            return False
        return True
    return bool(current_user.is_authenticated)


@bp.get("/avatars/<int:user_id>/<name>")
def serve(user_id: int, name: str) -> Response | tuple[Response, int]:
    """A person's current picture, to anyone signed in; 404 for any other address."""
    if not _signed_in():
        return json_error(401, "unauthenticated", _("Log in, or send a token as Bearer."))
    key = f"avatars/{user_id}/{name}"
    current = db.session.scalar(select(User.avatar).where(User.id == user_id))
    if not NAME.fullmatch(name) or current != key:
        return json_error(404, "not_found", _("There is no such picture."))
    extension = name[name.rindex(".") :]
    headers = {
        "Content-Disposition": f'inline; filename="avatar{extension}"',
        "Content-Security-Policy": FILE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": CACHE_CONTROL,
    }
    try:
        return store().respond(key, TYPES[extension], headers)
    except StoreError:
        return json_error(503, "unavailable", _("The picture could not be read. Try again."))


def init_app(app: Flask) -> None:
    """Register the routes; the views check the CSRF token themselves, once the size is known."""
    app.register_blueprint(bp)
    app.add_template_global(
        lambda: size_text(current_app.config["CHAT_MAX_AVATAR_BYTES"]), "avatar_size_text"
    )
    csrf.exempt(upload)
    csrf.exempt(delete)
