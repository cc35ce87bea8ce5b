"""Outgoing webhooks: a message that mentions a bot with an ``outgoing_url`` is POSTed there,
signed, and a JSON answer with ``text`` is posted as the bot's reply.

The committer's ``messages_published`` only queues the new messages here (a bounded queue: when
it is full they are dropped and logged, never waited for). One thread picks out the messages
that mention such a bot (a query) and hands each call to a small pool of callers, so a target
that hangs holds one caller for at most ``CHAT_WEBHOOK_TIMEOUT`` seconds, never the chat nor
the other bots. Every request goes through ``net.guard`` (no private address, on any redirect
either). A failure is logged and kept in ``Bot.last_error`` for the admin page; nothing is
retried.

The request: ``X-Chat-Timestamp`` (Unix seconds) and ``X-Chat-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``Bot.outgoing_secret`` (docs/bots.md shows
how a receiver checks it).
"""

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from bots.manage import record_failure
from core.signals import messages_published
from extensions import db
from models import Bot, Room, User
from net import guard
from realtime import outside, protocol
from realtime.commits import Author

log = logging.getLogger(__name__)

EXTENSION_KEY = "chat_bots"
MAX_ANSWER_BYTES = 64 * 1024
MAX_REDIRECTS = 3
_STOP = object()  # Tells a thread to end.


@dataclass(frozen=True)
class Call:
    """One outgoing webhook call to make: to which bot, for which message."""

    bot_id: int
    name: str
    avatar_url: str | None
    url: str
    secret: str
    room: Mapping[str, str]  # {"key", "title"}
    message: Mapping[str, Any]  # The message object, as the socket sends it.


class Dispatcher:
    """The queues and threads of one app's outgoing webhooks, started by the first message."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self._app = app
        self._messages: queue.Queue[object] = queue.Queue(config["CHAT_WEBHOOK_QUEUE"])
        self._calls: queue.Queue[object] = queue.Queue(config["CHAT_WEBHOOK_QUEUE"])
        self._callers = config["CHAT_WEBHOOK_WORKERS"]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # Guards the start alone.
        self._stopped = False

    def on_published(self, _app: Flask, messages: Sequence[Mapping[str, Any]]) -> None:
        """The committer's signal: queue what may mention a bot, never wait, never raise."""
        wanted = [m for m in messages if m.get("mentions") and not m.get("bot")]
        if not wanted:
            return
        try:
            self._start()
            self._messages.put_nowait(wanted)
        except queue.Full:
            log.warning("outgoing webhooks: queue full, %d messages not looked at", len(wanted))
        except Exception:  # A listener never fails the committer; the bug is logged.
            log.exception("outgoing webhooks: could not queue messages")

    def _start(self) -> None:
        """Start the threads once (after a fork: the first message of a worker does it)."""
        with self._lock:
            if self._threads or self._stopped:
                return
            self._threads.append(threading.Thread(target=self._sort, name="bots-sort", daemon=True))
            self._threads.extend(
                threading.Thread(target=self._call, name=f"bots-call-{n}", daemon=True)
                for n in range(self._callers)
            )
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the threads (a test's teardown); calls under way finish first."""
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
        if not threads:
            return
        self._messages.put(_STOP)
        for _ in range(self._callers):
            self._calls.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _sort(self) -> None:
        """Turn messages into calls: one query a batch, for the bots they mention."""
        with self._app.app_context():
            while (batch := self._messages.get()) is not _STOP:
                try:
                    for call in calls_for(batch):  # type: ignore[arg-type]
                        self._queue_call(call)
                except SQLAlchemyError:
                    db.session.rollback()
                    log.warning("outgoing webhooks: could not look up mentioned bots")
                except Exception:
                    log.exception("outgoing webhooks: a batch failed")
                finally:
                    db.session.remove()

    def _queue_call(self, call: Call) -> None:
        try:
            self._calls.put_nowait(call)
        except queue.Full:
            _failed(call, "too many calls waiting: this one was dropped")

    def _call(self) -> None:
        """Make calls one after another, until stopped."""
        with self._app.app_context():
            while isinstance(call := self._calls.get(), Call):
                try:
                    deliver(call)
                except Exception:
                    log.exception("outgoing webhook of bot %s: a bug", call.bot_id)
                finally:
                    db.session.remove()


def calls_for(messages: Sequence[Mapping[str, Any]]) -> list[Call]:
    """The calls these messages need: one per message and mentioned bot with an outgoing URL."""
    mentioned = {int(user_id) for m in messages for user_id in m["mentions"]}
    rows = db.session.execute(
        select(Bot, User)
        .join(User, User.id == Bot.user_id)
        .where(
            Bot.user_id.in_(mentioned),
            Bot.outgoing_url.is_not(None),
            User.deactivated_at.is_(None),
        )
    ).all()
    bots = {bot.user_id: (bot, user) for bot, user in rows}
    keys = {m["room"] for m in messages}
    titles = {key: title for key, title in db.session.execute(
        select(Room.key, Room.title).where(Room.key.in_(keys))
    )}  # fmt: skip
    calls = []
    for message in messages:
        for user_id in message["mentions"]:
            if (found := bots.get(int(user_id))) is None:
                continue
            bot, user = found
            room = {"key": message["room"], "title": titles.get(message["room"], "")}
            calls.append(
                Call(
                    bot.user_id,
                    user.name,
                    user.avatar_url,
                    bot.outgoing_url or "",
                    bot.outgoing_secret or "",
                    room,
                    protocol.message_frame(message),
                )
            )
    return calls


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Chat-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def request_of(call: Call) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a call."""
    message = call.message
    body = json.dumps(
        {
            "bot": {"id": call.bot_id, "name": call.name},
            "message": message,
            "room": dict(call.room),
            "user": {"id": message["user_id"], "name": message["user"]},
        },
        ensure_ascii=False,
    ).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "chat-webhook/1",
        "X-Chat-Timestamp": timestamp,
        "X-Chat-Signature": sign(call.secret, timestamp, body),
    }
    return body, headers


class Failure(Exception):
    """A call that did not end in a reply: ``reason`` as administrators read it."""


def deliver(call: Call) -> None:
    """Make one call and post its answer as the bot's reply; a failure is recorded."""
    try:
        text = _answer_text(call)
        if text is None:
            return
        author = Author(call.bot_id, call.name, call.avatar_url, bot=True)
        message_id = call.message["id"]
        try:
            outside.post(author, call.room["key"], text, f"reply:{message_id}", reply_to=message_id)
        except protocol.FrameError as error:
            raise Failure(f"the reply was refused: {error.code} ({error.message})") from None
    except Failure as failure:
        _failed(call, str(failure))


def _answer_text(call: Call) -> str | None:
    """The text the target answered; None for 204 No Content (no reply wanted)."""
    body, headers = request_of(call)
    try:
        answer = guard.fetch(
            "POST",
            call.url,
            body=body,
            headers=headers,
            timeout=current_app.config["CHAT_WEBHOOK_TIMEOUT"],
            max_bytes=MAX_ANSWER_BYTES,
            max_redirects=MAX_REDIRECTS,
        )
    except guard.Blocked as blocked:
        raise Failure(f"refused: {blocked.reason}") from None
    except guard.FetchError as error:
        raise Failure(f"the call failed: {error.reason}") from None
    if answer.status == 204:
        return None
    if not 200 <= answer.status < 300:
        raise Failure(f"the target answered HTTP {answer.status}")
    try:
        data = json.loads(answer.body)
    except ValueError:
        raise Failure("the answer is not JSON") from None
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise Failure('the answer has no "text" string')
    return text


def _failed(call: Call, reason: str) -> None:
    """Log a failure and keep it for the admin page (no retry)."""
    log.warning("outgoing webhook of bot %s failed: %s", call.bot_id, reason)
    try:
        record_failure(call.bot_id, reason)
    except SQLAlchemyError:
        db.session.rollback()
        log.warning("could not record the failure of bot %s", call.bot_id)


def init_app(app: Flask) -> None:
    """Listen to this app's published messages (the threads start with the first one)."""
    dispatcher = Dispatcher(app)
    app.extensions[EXTENSION_KEY] = dispatcher
    messages_published.connect(dispatcher.on_published, sender=app)


def dispatcher_of(app: Flask) -> Dispatcher:
    """The app's dispatcher."""
    return app.extensions[EXTENSION_KEY]
