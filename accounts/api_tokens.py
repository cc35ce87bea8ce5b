"""Personal API tokens: made on the profile page, shown once, kept as a SHA-256 hash only,
revocable; ``/api/v1/`` (``api/v1.py``) accepts them as ``Authorization: Bearer chat_…``.

They are credentials of their own: changing the password or logging out everywhere leaves them
working (the profile lists them, to revoke); deactivating the account stops them at once.
"""

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import Blueprint, Flask, flash, g, redirect, render_template, session, url_for
from flask_babel import format_date, format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from werkzeug.wrappers import Response
from wtforms import RadioField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import ValidationError

from accounts.forms import ProfileForm
from core.text import has_control_characters, is_invisible, is_unicode
from extensions import db
from models import READ, WRITE, ApiToken, User, as_utc, utcnow

PREFIX = "chat_"
MAX_NAME_CHARS = 64
MAX_LIVE_TOKENS = 20  # Per person: revoking one makes room for another.
# ``last_used_at`` is written at most this often per token: not one write per request.
TOUCH_INTERVAL = timedelta(minutes=1)
SHOWN_KEY = "api_token_shown"  # In the session, from the creation's redirect to the page.
SCOPES = (READ, WRITE)
FORM_PREFIX = "api_token"  # The section's fields are named apart from the profile form's.

bp = Blueprint("api_tokens", __name__)


def hash_token(secret: str) -> str:
    """The SHA-256 (hex) a token is stored as: the secret itself is never kept."""
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenRefused(Exception):
    """A token that cannot be made; ``message`` says why, in the person's language."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def clean_name(name: str) -> str:
    """A token's name, trimmed: 1 to 64 characters, no control characters."""
    name = name.strip()
    if not name or is_invisible(name):
        raise TokenRefused("bad_name", _("Give the token a name."))
    if len(name) > MAX_NAME_CHARS:
        raise TokenRefused("bad_name", _("A name is at most %(n)s characters.", n=MAX_NAME_CHARS))
    if not is_unicode(name) or has_control_characters(name):
        raise TokenRefused("bad_name", _("A name cannot hold control characters."))
    return name


def create(user: User, name: str, scope: str) -> tuple[ApiToken, str]:
    """Make a token for ``user``; ``(row, secret)``: the secret is shown once, then only its
    hash remains."""
    name = clean_name(name)
    if scope not in SCOPES:
        raise TokenRefused("bad_scope", _("Choose read or read and write."))
    if count_live(user.id) >= MAX_LIVE_TOKENS:
        message = _("You have %(n)s tokens: revoke one first.", n=MAX_LIVE_TOKENS)
        raise TokenRefused("too_many_tokens", message)
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name, token_hash=hash_token(secret), scope=scope)
    db.session.add(token)
    db.session.commit()
    return token, secret


def count_live(user_id: int) -> int:
    """How many tokens of ``user_id`` are not revoked."""
    live = select(func.count(ApiToken.id)).where(
        ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)
    )
    return db.session.scalar(live) or 0


def live_tokens(user_id: int) -> list[ApiToken]:
    """The tokens of ``user_id`` that still work (revoked ones are kept, not listed), newest
    first."""
    query = (
        select(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.id.desc())
    )
    return list(db.session.scalars(query))


def revoke(user_id: int, token_id: int) -> ApiToken | None:
    """Revoke one of ``user_id``'s live tokens; None if there is no such token (or not theirs)."""
    token = db.session.get(ApiToken, token_id)
    if token is None or token.user_id != user_id or token.revoked_at is not None:
        return None
    token.revoked_at = utcnow()
    db.session.commit()
    return token


def verify(secret: str) -> ApiToken | None:
    """The live token whose secret this is, or None (unknown, malformed or revoked); notes its
    use, at most once a minute. Whether its owner may still act is the caller's to check."""
    if not secret.startswith(PREFIX) or len(secret) > 200 or not secret.isascii():
        return None
    token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    if token is None or token.revoked_at is not None:
        return None
    now = utcnow()
    if token.last_used_at is None or now - as_utc(token.last_used_at) >= TOUCH_INTERVAL:
        token.last_used_at = now
        db.session.commit()
    return token


# ---- The profile page's section ---------------------------------------------------------------


class TokenForm(FlaskForm):
    """A new token: its name and what it may do."""

    name = StringField(
        _l("Token name"), description=_l("What it is for, such as “deploy bot” or “laptop”.")
    )
    scope = RadioField(
        _l("Access"),
        choices=[SelectChoice(READ, _l("Read only")), SelectChoice(WRITE, _l("Read and write"))],
        default=READ,
    )
    submit = SubmitField(_l("Create token"))

    def validate_name(self, field: StringField) -> None:
        """1 to 64 characters once trimmed."""
        try:
            field.data = clean_name(field.data or "")
        except TokenRefused as refused:
            raise ValidationError(refused.message) from None


@dataclass
class Panel:
    """What ``profile/_tokens.html`` shows."""

    form: TokenForm
    tokens: list[ApiToken] = field(default_factory=list)
    secret: str | None = None  # The token just made, shown this once.
    error: str | None = None  # Why it could not be made (beyond the form's own errors).


def tokens_panel() -> Panel:
    """The section's data for the signed-in person; takes the new secret out of the session."""
    form = g.pop("api_token_form", None) or TokenForm(formdata=None, prefix=FORM_PREFIX)
    panel = Panel(form, live_tokens(current_user.id), session.pop(SHOWN_KEY, None))
    panel.error = g.pop("api_token_error", None)
    if panel.secret:
        g.api_token_shown = True  # The page must not be kept by the browser (``_no_store``).
    return panel


def _no_store(response: Response) -> Response:
    """A page showing a token's secret is never cached, so Back does not show it again."""
    if g.get("api_token_shown"):
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/profile/tokens")
@login_required
def create_token() -> Response | tuple[str, int]:
    """Make a token; the profile page then shows its secret, once."""
    form = TokenForm(prefix=FORM_PREFIX)
    if form.validate_on_submit():
        try:
            _token, secret = create(current_user, form.name.data or "", form.scope.data or "")
        except TokenRefused as refused:
            g.api_token_error = refused.message
        else:
            # Through the signed session to the page it redirects to, which takes it out.
            session[SHOWN_KEY] = secret
            return redirect(url_for("accounts.profile") + "#api-tokens")
    g.api_token_form = form
    return _profile_page(), 400


def _profile_page() -> str:
    """The profile page, as ``accounts.views.profile`` shows it, with this section's errors."""
    user: User = current_user._get_current_object()
    form = ProfileForm(formdata=None)
    form.display_name.data = user.display_name or ""
    form.locale.data = user.locale or ""
    member_since = format_date(user.created_at, format="long")
    return render_template(
        "profile.html", form=form, member_since=member_since, default_name=user.default_name
    )


@bp.post("/profile/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int) -> Response | tuple[str, int]:
    """Revoke a token at once: the next request with it is refused."""
    token = revoke(current_user.id, token_id)
    if token is None:
        flash(_("There is no such token (it may be revoked already)."), "error")
    else:
        flash(_("The token “%(name)s” was revoked.", name=token.name), "success")
    return redirect(url_for("accounts.profile") + "#api-tokens")


def _when(moment: datetime | None) -> str:
    """A token's date as the page shows it, in the person's language."""
    return format_datetime(as_utc(moment), format="medium") if moment else _("Never")


def init_app(app: Flask) -> None:
    """Register the profile routes and the section's template helpers."""
    app.register_blueprint(bp)
    app.add_template_global(tokens_panel, "api_tokens_panel")
    app.add_template_global(_when, "api_token_when")
    app.after_request(_no_store)
