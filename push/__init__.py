"""Web Push: when someone is mentioned or sent a direct message and none of their tabs is
visible, their subscribed browsers are notified (``sender.py``); the profile page manages the
subscriptions (``views.py``, ``templates/profile/_push.html``, ``static/js/push.js``) and the
service worker (``static/sw.js``) shows the notifications.
"""

from pathlib import Path
from typing import Any

from flask import Flask
from flask_login import current_user
from sqlalchemy import select

from core.signals import messages_published
from extensions import db
from models import PushSubscription
from push import views
from push.keys import KEY_FILE, load_keys
from push.sender import Sender

SENDER_KEY = "chat_push_sender"
DEFAULT_SUBJECT = "mailto:admin@localhost"


def init_app(app: Flask) -> None:
    """Load (or make) the VAPID keys, listen to new messages, register the endpoints."""
    config = app.config
    if not config["CHAT_VAPID_SUBJECT"]:
        sender = config.get("CHAT_MAIL_FROM")
        config["CHAT_VAPID_SUBJECT"] = f"mailto:{sender}" if sender else DEFAULT_SUBJECT
    if not config["CHAT_VAPID_SUBJECT"].startswith(("mailto:", "https://")):
        raise RuntimeError("CHAT_VAPID_SUBJECT must be a mailto: or https:// address")
    path = Path(config["CHAT_VAPID_KEY_FILE"] or Path(app.instance_path) / KEY_FILE)
    keys = load_keys(path)
    app.extensions[views.KEYS_KEY] = keys
    app.extensions[SENDER_KEY] = sender_ = Sender(app, keys)
    # A bound method, held weakly by blinker: the app holds the sender.
    messages_published.connect(sender_.on_published, sender=app)
    app.register_blueprint(views.bp)
    app.context_processor(_profile_context)


def sender_of(app: Flask) -> Sender:
    """The app's push sender."""
    return app.extensions[SENDER_KEY]


def _profile_context() -> dict[str, Any]:
    """``push_browsers()`` for ``templates/profile/_push.html``: this person's subscriptions."""

    def push_browsers() -> list[PushSubscription]:
        if not current_user.is_authenticated:
            return []
        return list(
            db.session.scalars(
                select(PushSubscription)
                .where(PushSubscription.user_id == current_user.id)
                .order_by(PushSubscription.created_at.desc())
            )
        )

    return {"push_browsers": push_browsers}
