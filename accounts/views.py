"""Accounts: register, log in, log out, profile, password (changed, reset, forgotten), and the
session user loader."""

import secrets
from collections.abc import Callable, Mapping
from datetime import timedelta
from email.message import EmailMessage
from functools import cache, partial
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import force_locale, format_date, get_locale, ngettext, refresh
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_required, login_user, logout_user
from flask_login.config import COOKIE_DURATION
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

from accounts import invitations, mail
from accounts.forms import (
    DUPLICATE_EMAIL,
    ForgotForm,
    LoginForm,
    PasswordForm,
    ProfileForm,
    RegisterForm,
    ResetForm,
)
from accounts.policy import INVITE, OPEN, promote_if_first, registration_policy
from accounts.signals import announce, password_changed, user_renamed, user_signed_out
from accounts.tokens import reset_token, revoke, user_of_reset
from core import rooms
from core.signals import announce_added
from extensions import db, limiter, login_manager
from models import Invitation, Login, User, utcnow

bp = Blueprint("accounts", __name__)

INVALID_LOGIN = _l("Invalid email or password.")
INVITATION_GONE = _l("This invitation has just been used up, revoked or has expired.")
DEACTIVATED = _l("This account is deactivated. Ask an administrator of this server.")

P = ParamSpec("P")
R = TypeVar("R")


@cache
def _dummy_hash(method: str) -> str:
    """A hash to check against for unknown emails, so they take as long as known ones."""
    return generate_password_hash("not a real password", method=method)


def authenticate(email: str | None, password: str) -> User | None:
    """Return the user with these credentials, or None."""
    user = User.by_email(email) if isinstance(email, str) else None
    if user is None or user.is_bot:  # A bot has no password: refused as a wrong one.
        check_password_hash(_dummy_hash(current_app.config["CHAT_PASSWORD_HASH"]), password)
        return None
    return user if user.check_password(password) else None


def login_key() -> str:
    """Rate-limit key for login attempts on one account, whoever makes them."""
    data = request.get_json(silent=True) if request.is_json else request.form
    email = data.get("email") if isinstance(data, Mapping) else None
    if not isinstance(email, str) or not email.strip():
        return f"ip:{get_remote_address()}"
    return "email:" + email.strip().lower()[:254]


def limit_logins(view: Callable[P, R]) -> Callable[P, R]:
    """Throttle a login view per client address and per email (429 with Retry-After).

    The form and ``POST /api/token`` share the counters: two doors, one budget of guesses.
    """
    return _limit_posts(view, "login", "CHAT_LOGIN_LIMIT_PER_IP", "CHAT_LOGIN_LIMIT_PER_EMAIL")


def limit_forgot(view: Callable[P, R]) -> Callable[P, R]:
    """Throttle "forgot password" per client address and per email: each may send a mail, and
    nobody's mailbox is to be flooded from here."""
    return _limit_posts(view, "forgot", "CHAT_FORGOT_LIMIT_PER_IP", "CHAT_FORGOT_LIMIT_PER_EMAIL")


def _limit_posts(view: Callable[P, R], scope: str, per_ip: str, per_email: str) -> Callable[P, R]:
    """Limit the POSTs of ``view`` by the settings named ``per_ip`` and ``per_email``."""
    by_ip = limiter.shared_limit(
        lambda: current_app.config[per_ip], scope=f"{scope}-ip", methods=["POST"]
    )
    by_email = limiter.shared_limit(
        lambda: current_app.config[per_email],
        scope=f"{scope}-email",
        key_func=login_key,
        methods=["POST"],
    )
    return by_ip(by_email(view))


def load_user(session_id: str) -> User | None:
    """Flask-Login loader: the session holds ``"<id>.<session_version>.<login id>"``."""
    user_id, version, login_id = _split_session_id(session_id)
    if not (user_id.isdigit() and version.isdigit() and login_id):
        return None
    # The login row is what logging out deletes: a copy of the cookie is worthless after it.
    login = db.session.get(Login, login_id)
    if login is None or login.user_id != int(user_id):
        return None
    user = db.session.get(User, int(user_id))
    if user is None or user.session_version != int(version) or not user.is_active or user.is_bot:
        return None
    g.chat_user_id = user.id  # For the request's log lines (ops/logs.py).
    return user


def _split_session_id(session_id: str) -> tuple[str, str, str]:
    """``(user id, session version, login id)``, each an empty string where it is missing."""
    user_id, _, rest = session_id.partition(".")
    version, _, login_id = rest.partition(".")
    return user_id, version, login_id


def safe_next(target: str | None) -> str:
    """Return ``target`` if it is a path on this site, else the chat page."""
    fallback = url_for("chat.index")
    if not target or "\\" in target or any(ord(char) < 0x20 for char in target):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return fallback
    return target


def _start_session(user: User, remember: bool = False) -> None:
    """Log ``user`` in with a brand-new session (no session fixation) and a new login row."""
    session.clear()
    login_user(user, remember=remember)
    # The session id, which the remember-me cookie copies, also names a login row that logging
    # out deletes. Clearing the cookie alone is not enough: a response begun before the logout
    # can set the old cookie again, and a tab that navigates away drops the logout's response.
    session["_user_id"] = f"{user.get_id()}.{_open_login(user)}"


def _open_login(user: User) -> str:
    """Record a new login of ``user``, forget their logins too old to be in use; its id."""
    login = Login(id=secrets.token_urlsafe(32), user_id=user.id)
    db.session.add(login)
    too_old = utcnow() - _remember_duration()
    db.session.execute(delete(Login).where(Login.user_id == user.id, Login.created_at < too_old))
    db.session.commit()
    return login.id


def _remember_duration() -> timedelta:
    """How long a remember-me cookie lives (Flask-Login's setting: seconds or a timedelta)."""
    duration = current_app.config.get("REMEMBER_COOKIE_DURATION", COOKIE_DURATION)
    return timedelta(seconds=duration) if isinstance(duration, int) else duration


def _end_login() -> None:
    """Delete this browser's login row, so that no copy of its cookies logs anyone in again."""
    login_id = _split_session_id(session.get("_user_id", ""))[2]
    db.session.execute(delete(Login).where(Login.id == login_id))
    db.session.commit()


@bp.route("/register", methods=["GET", "POST"])
def register() -> Response | tuple[str, int]:
    """Create an account and log it in, if registration is open."""
    if current_user.is_authenticated:
        return redirect(url_for("chat.index"))
    policy = registration_policy()
    if policy != OPEN:
        return render_template("registration_closed.html", by_invitation=policy == INVITE), 403
    return _register(None)


@bp.route("/join/<secret>", methods=["GET", "POST"])
def join(secret: str) -> Response | tuple[str, int]:
    """An invitation link. An administrator's link to the server makes an account (whatever the
    policy) joined to its rooms; a member's link to a room lets a signed-in person in at once,
    and makes an account only while registration is open."""
    invitation = invitations.find(secret)
    if invitation is None:
        return render_template("link_invalid.html"), 404
    if current_user.is_authenticated:
        if invitation.makes_accounts:
            flash(_("You already have an account: this invitation is for someone new."), "info")
            return redirect(url_for("chat.index"))
        return _enter_rooms(invitation)
    if not invitation.makes_accounts and registration_policy() != OPEN:
        flash(_("Log in to join the room you were invited to."), "info")
        return redirect(url_for("accounts.login", next=request.path))
    return _register(invitation)


def _enter_rooms(invitation: Invitation) -> Response | tuple[str, int]:
    """A signed-in person uses a room link: they are in its room now, in every open tab. A use
    is counted only when it lets someone in: a member's click spends nothing."""
    user: User = current_user._get_current_object()
    keys = invitation.room_keys.split()
    there = url_for("chat.index", room=keys[0]) if keys else url_for("chat.index")
    if not invitations.rooms_to_enter(invitation, user):
        if rooms.rooms_of_member(keys, user.id):
            flash(_("You are already in this room."), "info")
            return redirect(there)
        return render_template("link_invalid.html"), 404  # Deleted or archived meanwhile.
    joined = invitations.use(invitation, user)
    if not joined:  # Used up, or the room went, between the two reads.
        db.session.rollback()
        flash(str(INVITATION_GONE), "error")
        return redirect(url_for("chat.index"))
    db.session.commit()
    for room in joined:
        # No ``invited_by``: the person opened the link themselves (the page goes to the room).
        announce_added(room.id, [user.id], None)
        flash(_("You joined %(room)s.", room=room.title), "success")
    return redirect(there)


def _register(invitation: Invitation | None) -> Response | tuple[str, int]:
    form = RegisterForm()
    if form.validate_on_submit():
        user = _create_account(form, invitation)
        if user is not None:
            _start_session(user)
            flash(_("Welcome, %(name)s!", name=user.name), "success")
            return redirect(url_for("chat.index"))
    status = 400 if form.is_submitted() else 200
    return render_template("register.html", form=form, invited=invitation is not None), status


def _create_account(form: RegisterForm, invitation: Invitation | None) -> User | None:
    """Save the account the form describes; None if the email was taken meanwhile, or the
    invitation used up."""
    user = User(email=form.email.data)
    user.set_password(form.password.data)
    db.session.add(user)
    try:
        db.session.flush()
        if invitation is not None and invitations.use(invitation, user) is None:
            db.session.rollback()
            form.form_errors.append(INVITATION_GONE)
            return None
        promote_if_first(user)
        db.session.commit()
    except IntegrityError:
        # Someone registered the same email between validation and commit.
        db.session.rollback()
        form.email.errors.append(DUPLICATE_EMAIL)
        return None
    return user


@bp.route("/login", methods=["GET", "POST"])
@limit_logins
def login() -> Response | tuple[str, int]:
    """Log in with email and password."""
    target = safe_next(request.args.get("next"))
    if current_user.is_authenticated:
        return redirect(target)
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        user = authenticate(form.email.data, form.password.data)
        if user is not None and user.is_active:
            _start_session(user, remember=form.remember.data)
            return redirect(target)
        # Only the right password learns that the account exists and is deactivated.
        form.form_errors.append(INVALID_LOGIN if user is None else DEACTIVATED)
        status = 401 if user is None else 403
    elif form.is_submitted():
        status = 400
    open_ = registration_policy() == OPEN
    forgot = mail.outbox() is not None
    return render_template("login.html", form=form, registration_open=open_, forgot=forgot), status


@bp.post("/logout")
def logout() -> Response:
    """End this login and revoke the user's socket tokens (the form carries a CSRF token)."""
    if current_user.is_authenticated:
        # Before revoke closes the sockets: a page sent to the login page by its socket's 4001
        # can get there before this response, with the old cookie.
        _end_login()
        # A token copied from the page must not open sockets after its owner logged out.
        revoke(current_user)
        announce(user_signed_out, current_user.id, everywhere=False)
    return _sign_out(_("You have been logged out."))


def _sign_out(message: str) -> Response:
    """End this browser's session and send it to the login page with ``message``."""
    session.clear()
    # After the clear, which would drop its mark: logout_user asks to delete the remember-me cookie.
    logout_user()
    flash(message, "info")
    return redirect(url_for("accounts.login"))


@bp.route("/password", methods=["GET", "POST"])
@login_required
def change_password() -> Response | tuple[str, int]:
    """Change the password; every other session, token and socket of the user ends."""
    form = PasswordForm(current_user)
    if form.validate_on_submit():
        user: User = current_user._get_current_object()
        user.set_password(form.password.data)
        revoke(user, end_sessions=True)
        announce(password_changed, user.id)
        _start_session(user)  # This browser stays signed in, with a new session.
        flash(_("Your password was changed; you were signed out everywhere else."), "success")
        return redirect(url_for("chat.index"))
    status = 400 if form.is_submitted() else 200
    return render_template("password.html", form=form), status


@bp.route("/forgot", methods=["GET", "POST"])
@limit_forgot
def forgot_password() -> Response | tuple[str, int]:
    """Mail a reset link to an address, if an account has it: the answer is the same either
    way, and comes before anything is looked up (the outbox's thread does it)."""
    outbox = mail.outbox()
    if outbox is None:
        abort(404)  # No mail server: an administrator hands out reset links (admin page).
    form = ForgotForm()
    if form.validate_on_submit():
        base_url = current_app.config["CHAT_PUBLIC_URL"] or request.host_url
        outbox.submit(partial(_forgot_mail, form.email.data, str(get_locale()), base_url))
        sent = ngettext(
            "If an account has this address, we sent it a link to set a new password. It works"
            " once, within %(num)s minute.",
            "If an account has this address, we sent it a link to set a new password. It works"
            " once, within %(num)s minutes.",
            _forgot_minutes(),
        )
        flash(sent, "info")
        return redirect(url_for("accounts.login"))
    status = 400 if form.is_submitted() else 200
    return render_template("forgot.html", form=form), status


def _forgot_mail(email: str, locale: str, base_url: str) -> EmailMessage | None:
    """The mail with a reset link for the active account of ``email``, in its language (else
    the request's); None when there is no such account. Run by the outbox's thread."""
    user = User.by_email(email)
    if user is None or not user.is_active or user.is_bot:  # A bot's address is never mailed.
        return None
    token = reset_token(user, mailed=True)
    link = mail.external_url(base_url, "accounts.reset_password", token=token)
    with force_locale(user.locale or locale):
        subject = _("Set a new password for the chat")
        return mail.compose(
            user.email, subject, "forgot_password", user=user, link=link, minutes=_forgot_minutes()
        )


def _forgot_minutes() -> int:
    """How long a mailed reset link is valid, in whole minutes (at least one)."""
    return max(1, current_app.config["CHAT_FORGOT_MAX_AGE"] // 60)


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str) -> Response | tuple[str, int]:
    """A password-reset link, from the admin page or a "forgot password" mail: set a new
    password, once; every session, token and socket of the account ends, and the new password
    logs in."""
    user = user_of_reset(token)
    if user is None:
        return render_template("link_invalid.html"), 404
    form = ResetForm(user)
    if form.validate_on_submit():
        user.set_password(form.password.data)  # Spends this link, and any other.
        revoke(user, end_sessions=True)
        announce(password_changed, user.id)
        if current_user.is_authenticated:
            logout_user()
        flash(_("Your password is set: log in with it."), "success")
        return redirect(url_for("accounts.login"))
    status = 400 if form.is_submitted() else 200
    return render_template("reset.html", form=form, email=user.email), status


@bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile() -> Response | tuple[str, int]:
    """Display name and language; links to the password page and to log out everywhere."""
    user: User = current_user._get_current_object()
    form = ProfileForm()
    if request.method == "GET":
        form.display_name.data = user.display_name or ""
        form.locale.data = user.locale or ""
    if form.validate_on_submit():
        old_name = user.name
        user.display_name = form.display_name.data or None
        user.locale = form.locale.data or None
        db.session.commit()
        if user.name != old_name:
            announce(user_renamed, user.id, name=user.name)
        # Flashed after the commit, so it is already in the language just chosen.
        refresh()
        flash(_("Your profile was saved."), "success")
        return redirect(url_for("accounts.profile"))
    status = 400 if form.is_submitted() else 200
    member_since = format_date(user.created_at, format="long")
    return render_template(
        "profile.html", form=form, member_since=member_since, default_name=user.default_name
    ), status


@bp.post("/logout-everywhere")
@login_required
def logout_everywhere() -> Response:
    """End every session and socket of this user, on every device."""
    revoke(current_user, end_sessions=True)
    announce(user_signed_out, current_user.id, everywhere=True)
    return _sign_out(_("You have been logged out on every device."))


def init_app(app: Flask) -> None:
    """Register the blueprint, the session loader and the outbox (with ``CHAT_SMTP_URL``)."""
    app.register_blueprint(bp)
    mail.init_app(app)
    login_manager.init_app(app)
    login_manager.user_loader(load_user)
    login_manager.login_view = "accounts.login"
    login_manager.login_message = _l("Please log in to chat.")
    login_manager.login_message_category = "info"
