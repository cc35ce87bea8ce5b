"""Who may have an account and who runs the server: the registration policy, and the first
account on a new server becoming its administrator."""

from flask import current_app
from sqlalchemy import func, select

from extensions import db
from models import ADMIN, Setting, User

OPEN, INVITE, CLOSED = "open", "invite", "closed"
POLICIES = (OPEN, INVITE, CLOSED)
REGISTRATION_KEY = "registration"


def registration_policy() -> str:
    """``open``, ``invite`` or ``closed``: the admin page's choice, else ``CHAT_REGISTRATION``."""
    setting = db.session.get(Setting, REGISTRATION_KEY)
    return setting.value if setting is not None else current_app.config["CHAT_REGISTRATION"]


def promote_if_first(user: User) -> None:
    """Make ``user`` (just flushed) an administrator if it is the server's first account.

    Two accounts made at once on an empty server: only the smaller id is the first one.
    """
    first = db.session.scalar(select(func.min(User.id)))
    someone_runs_it = db.session.scalar(select(User.id).where(User.role == ADMIN).limit(1))
    if user.id == first and someone_runs_it is None:
        user.role = ADMIN
