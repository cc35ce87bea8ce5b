"""``/admin/bots``: administrators create bots, rename them, move them to another room, set
their outgoing webhook, rotate their secrets, give them a picture, and delete them. The list is
a section of the admin page (``templates/admin/_bots.html``, fed by ``bots_section``).

As on the rest of the admin page: small CSRF-protected POST forms that redirect back with a
flash; a secret made by an action is shown once, from the session, never from the URL.
"""

import tempfile
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf.csrf import CSRFError
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from admin import views
from bots import manage
from extensions import csrf, db
from files import avatars
from models import DIRECT, Bot, Room
from web.errors import CSRF_HELP

bp = Blueprint("admin_bots", __name__, url_prefix="/admin/bots")

SECRETS_KEY = "admin_bot_secrets"  # What the last action made, shown once on the page.

ACTIONS = {
    "create_bot": _l("Bot created"),
    "rename_bot": _l("Bot renamed"),
    "set_bot_room": _l("Bot moved to a room"),
    "rotate_bot_secret": _l("Bot webhook secret rotated"),
    "set_bot_url": _l("Bot outgoing URL set"),
    "rotate_bot_signing": _l("Bot signing secret regenerated"),
    "delete_bot": _l("Bot deleted"),
}


@bp.before_request
@login_required
def _administrators_only() -> None:
    """Every form here: 403 for anyone signed in who is not an administrator."""
    if not current_user.is_admin:
        abort(403)


def _back(message: str, category: str = "success") -> Response:
    flash(message, category)
    return redirect(url_for("admin.index") + "#bots-heading")


def _keep_secrets(bot: Bot, made: manage.Secrets) -> None:
    """Show what was made once, on the next page: the incoming URL, the signing secret."""
    shown: dict[str, Any] = {"bot": bot.user_id, "name": manage.user_of(bot).name}
    if made.hook:
        shown["hook_url"] = url_for("hooks.receive", secret=made.hook, _external=True)
    if made.outgoing:
        shown["signing"] = made.outgoing
    session[SECRETS_KEY] = shown


def _bot(user_id: int) -> Bot:
    bot = db.session.get(Bot, user_id)
    if bot is None:
        abort(404)
    return bot


def _room_id() -> int:
    raw = request.form.get("room", "")
    return int(raw) if raw.isdigit() and len(raw) < 12 else 0


@bp.post("/")
def create() -> Response:
    """A new bot: its incoming URL (and signing secret) are shown once."""
    form = request.form
    try:
        bot, made = manage.create(
            form.get("name", ""), _room_id(), form.get("outgoing_url", ""), current_user.id
        )
    except manage.BotError as error:
        db.session.rollback()
        return _back(str(error.message), "error")
    _keep_secrets(bot, made)
    return _back(_("The bot %(name)s is made.", name=manage.user_of(bot).name))


@bp.post("/<int:user_id>")
def update(user_id: int) -> Response:
    """Rename the bot, move it to another room, set its outgoing URL: what changed is saved."""
    bot, form = _bot(user_id), request.form
    try:
        changed, signing = manage.update(
            bot, form.get("name", ""), _room_id(), form.get("outgoing_url", ""), current_user.id
        )
    except manage.BotError as error:
        db.session.rollback()
        return _back(str(error.message), "error")
    name = manage.user_of(bot).name
    if signing:
        _keep_secrets(bot, manage.Secrets(outgoing=signing))
    if not changed:
        return _back(_("Nothing changed."), "info")
    return _back(_("The bot %(name)s is saved.", name=name))


@bp.post("/<int:user_id>/rotate")
def rotate(user_id: int) -> Response:
    """A new incoming URL; the old one stops working at once."""
    bot = _bot(user_id)
    _keep_secrets(bot, manage.Secrets(hook=manage.rotate_secret(bot, current_user.id)))
    name = manage.user_of(bot).name
    return _back(_("%(name)s has a new webhook URL: the old one no longer works.", name=name))


@bp.post("/<int:user_id>/signing")
def rotate_signing(user_id: int) -> Response:
    """A new signing secret for the outgoing webhook."""
    bot = _bot(user_id)
    try:
        signing = manage.rotate_outgoing_secret(bot, current_user.id)
    except manage.BotError as error:
        return _back(str(error.message), "error")
    _keep_secrets(bot, manage.Secrets(outgoing=signing))
    return _back(_("%(name)s has a new signing secret.", name=manage.user_of(bot).name))


@bp.post("/<int:user_id>/delete")
def delete(user_id: int) -> Response:
    """Delete the bot; its messages stay, under its name."""
    name = manage.delete_bot(_bot(user_id), current_user.id)
    return _back(_("The bot %(name)s is deleted; its messages stay.", name=name))


@bp.post("/<int:user_id>/avatar")
def avatar(user_id: int) -> Response:
    """The bot's picture, made as a person's is (``files.avatars``)."""
    bot = _bot(user_id)
    limit = current_app.config["CHAT_MAX_AVATAR_BYTES"]
    if (request.content_length or 0) > limit + avatars.MULTIPART_SLACK:
        return _back(_refusal("too_large"), "error")  # Before a byte of the body is read.
    request.max_content_length = limit + avatars.MULTIPART_SLACK
    try:
        csrf.protect()  # Reads the form: only now that its size is bounded.
        part = request.files.get("avatar")
    except RequestEntityTooLarge:
        return _back(_refusal("too_large"), "error")
    except CSRFError:
        return _back(_refusal("csrf_failed"), "error")
    if part is None or not part.filename:
        return _back(_refusal("no_file"), "error")
    with tempfile.TemporaryDirectory(prefix="chat-bot-avatar-") as work:
        source = Path(work) / "upload"
        part.save(source)
        size = source.stat().st_size
        if not 0 < size <= limit:
            return _back(_refusal("empty_file" if size == 0 else "too_large"), "error")
        try:
            made = avatars.make_avatar(
                source, Path(work), current_app.config["CHAT_MAX_IMAGE_PIXELS"]
            )
            avatars.replace_avatar(bot.user_id, made)
        except avatars.AvatarError as error:
            return _back(_refusal(error.code), "error")
    return _back(_("The picture of %(name)s was saved.", name=manage.user_of(bot).name))


def _refusal(code: str) -> str:
    """Why a picture was refused, in the profile page's words."""
    if code == "too_large":
        size = avatars.size_text(current_app.config["CHAT_MAX_AVATAR_BYTES"])
        return _("A picture may be at most %(size)s.", size=size)
    if code == "image_too_large":
        megapixels = current_app.config["CHAT_MAX_IMAGE_PIXELS"] / 1_000_000
        return _("A picture may have at most %(n)s megapixels.", n=f"{megapixels:g}")
    messages = {
        "no_file": _("Choose a picture to upload."),
        "empty_file": _("The file is empty."),
        "not_an_image": _("This file is not a picture: choose a JPEG, PNG, GIF or WebP image."),
        "bad_image": _("This picture could not be read: it may be damaged."),
        "csrf_failed": str(CSRF_HELP),
    }
    return messages.get(code, _("The picture could not be saved. Try again in a moment."))


def bots_section() -> dict[str, Any]:
    """What ``admin/_bots.html`` shows: the bots, the rooms to pick, a secret made just now."""
    rooms = db.session.scalars(
        select(Room).where(Room.kind != DIRECT, Room.archived_at.is_(None)).order_by(Room.key)
    ).all()
    return {"bots": manage.listed(), "rooms": rooms, "shown": session.pop(SECRETS_KEY, None)}


def init_app(app: Flask) -> None:
    """Register the forms, the page's section, and how the audit log names bot actions."""
    app.register_blueprint(bp)
    csrf.exempt(avatar)  # It checks the token itself, once the size is known.
    app.add_template_global(bots_section, "bots_section")
    views.ACTIONS.update(ACTIONS)
