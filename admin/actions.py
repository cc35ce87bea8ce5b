"""What administrators do to accounts and to the server, each written to the audit log in the
action's own transaction: roles, deactivation, the registration policy, password-reset links.

The admin page (``admin/views.py``) and the shell (``admin/cli.py``) both call these. An action
from the shell has no actor (``actor_id`` None) and may do what the page refuses, such as
demoting the last administrator: the shell is how a server is recovered.
"""

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from accounts.policy import POLICIES, REGISTRATION_KEY, registration_policy
from accounts.signals import announce, user_deactivated
from accounts.tokens import reset_token, revoke
from core.audit import audit
from extensions import db
from models import ADMIN, ROLES, Setting, User, utcnow


class AdminError(Exception):
    """An administrative action refused: ``code`` for scripts, ``message`` for people."""

    def __init__(self, code: str, message: LazyString | str) -> None:
        super().__init__(str(message))
        self.code = code
        self.message = message


def _active_admins() -> int:
    return (
        db.session.scalar(
            select(func.count(User.id)).where(
                User.role == ADMIN, User.deactivated_at.is_(None), User.is_bot.is_(False)
            )
        )
        or 0
    )


def _guard_last_admin(user: User, actor_id: int | None) -> None:
    """The page must never leave the server without an active administrator."""
    if actor_id is not None and user.is_admin and _active_admins() <= 1:
        raise AdminError(
            "last_admin", _l("This is the last administrator: make someone else one first.")
        )


def set_role(user: User, role: str, actor_id: int | None) -> bool:
    """Give ``user`` the ``role`` (``admin`` or ``member``); whether it changed."""
    if role not in ROLES:
        raise AdminError("bad_request", _l("A role is admin or member."))
    if user.is_bot:
        # A bot is not a person: it never runs the server (nor counts as its last admin).
        raise AdminError("bad_request", _l("A bot cannot be an administrator."))
    if user.role == role:
        return False
    if role != ADMIN:
        _guard_last_admin(user, actor_id)
    audit(actor_id, "set_role", "user", user.id, f"{user.email}: {user.role} → {role}")
    user.role = role
    db.session.commit()
    return True


def deactivate(user: User, actor_id: int | None) -> bool:
    """Deactivate ``user`` now: sessions, tokens and sockets (on every worker) end, logging in
    is refused; their messages stay. Whether it changed."""
    if user.deactivated_at is not None:
        return False
    if actor_id == user.id:
        raise AdminError("bad_request", _l("You cannot deactivate your own account."))
    _guard_last_admin(user, actor_id)
    user.deactivated_at = utcnow()
    audit(actor_id, "deactivate", "user", user.id, user.email)
    revoke(user, end_sessions=True)  # Commits, with the audit row.
    announce(user_deactivated, user.id)
    return True


def reactivate(user: User, actor_id: int | None) -> bool:
    """Let ``user`` log in again (with the same password); whether it changed."""
    if user.deactivated_at is None:
        return False
    user.deactivated_at = None
    audit(actor_id, "reactivate", "user", user.id, user.email)
    db.session.commit()
    return True


# ---- Registration and password resets ------------------------------------------------------


def set_registration_policy(policy: str, actor_id: int | None) -> bool:
    """Who may make an account from now on; whether it changed."""
    if policy not in POLICIES:
        raise AdminError("bad_request", _l("Registration is open, invite or closed."))
    before = registration_policy()
    if policy == before:
        return False
    db.session.merge(Setting(key=REGISTRATION_KEY, value=policy))
    audit(actor_id, "set_registration", "server", None, f"{before} → {policy}")
    db.session.commit()
    return True


def reset_link(user: User, actor_id: int | None) -> str:
    """A one-time link's token to set a new password for ``user`` (there may be no mail server:
    the administrator hands it over)."""
    audit(actor_id, "reset_link", "user", user.id, user.email)
    db.session.commit()
    return reset_token(user)
