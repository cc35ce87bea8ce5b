"""The WebSocket ``/ws``: authenticate before the upgrade, greet (or resume), hand to the poller."""

import time

from flask import Blueprint, current_app, g, request
from flask.typing import ResponseReturnValue
from flask_babel import get_locale

from accounts.tokens import TokenError, verify_holder
from extensions import db, sock
from realtime import protocol, stats
from realtime.backplane import BackplaneError
from realtime.greeting import end, greet, read_resume
from realtime.protocol import CLOSE_GOING_AWAY
from realtime.runtime import current_runtime
from realtime.session import Session
from realtime.transport import adapter
from realtime.transport.connection import Connection
from web.errors import json_error

bp = Blueprint("realtime", __name__)


def _allowed_origins() -> set[str]:
    """This app's own origin, plus ``CHAT_ALLOWED_ORIGINS``; compared exactly."""
    own = f"{request.scheme}://{request.host}"
    return {own, *current_app.config["CHAT_ALLOWED_ORIGINS"]}


def _request_token() -> str | None:
    """The token from ``?token=`` or from ``Authorization: Bearer``."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.args.get("token", "").strip() or None


@bp.before_request
def authenticate_socket() -> ResponseReturnValue | None:
    """Refuse the upgrade with a JSON error unless the token is valid (101 is sent later)."""
    if request.endpoint != "realtime.chat_socket":
        return None
    origin = request.headers.get("Origin")
    if origin is not None and origin not in _allowed_origins():
        # Cross-site WebSocket hijacking: a page elsewhere must not use a visitor's socket.
        return json_error(403, "forbidden_origin", "This origin may not open the chat socket.")
    token = _request_token()
    if token is None:
        return json_error(401, "missing_token", "Pass a token as ?token= or a Bearer header.")
    try:
        user = verify_holder(token)
    except TokenError as error:
        return json_error(401, error.code, "Get a new token from /api/token.")
    g.chat_user_id = user.id  # For the request's log lines (ops/logs.py).
    runtime = current_runtime()
    if runtime.closing:  # It would never get its 1001: reconnect to another worker now.
        return json_error(503, "unavailable", "This server is restarting; please reconnect.")
    runtime.start()
    hub = runtime.hub
    if len(runtime.poller) >= current_app.config["CHAT_MAX_SOCKETS"]:
        return json_error(503, "server_full", "This server is full; please reconnect later.")
    try:
        # A worker's first socket starts the backplane, which subscribes in a few milliseconds.
        if not hub.ready(wait=1.0):
            raise BackplaneError("not subscribed yet")
        open_sockets = hub.sockets_of(user.id)
    except BackplaneError:
        return json_error(503, "unavailable", "The chat is unavailable; please reconnect later.")
    if open_sockets >= current_app.config["CHAT_MAX_SOCKETS_PER_USER"]:
        return json_error(429, "too_many_sockets", "Close another tab or device first.")
    if request.args.get("resume", "0") not in {"0", "1"}:
        return json_error(400, "bad_request", "resume must be 1 (a resume frame follows) or 0.")
    g.chat_resuming = request.args.get("resume") == "1"
    adapter.decline_compression(request.environ)
    # Plain values only: no ORM object or connection is kept for the life of the socket.
    g.chat_user = (user.id, user.name)
    g.chat_locale = user.locale  # Error frames speak the user's language, even for a token.
    db.session.remove()
    return None


@sock.route("/ws", bp=bp)
def chat_socket(_ws: object) -> None:
    """Greet the client, then hand its socket to the poller, which serves it from then on.

    Flask-Sock's ``_ws`` did the handshake; the connection is ours from here (``adapter``).
    """
    user_id, name = g.chat_user
    runtime = current_runtime()
    config = current_app.config
    # The language is chosen now, while the request can tell it (the user's, or the browser's).
    locale = str(get_locale() or "") or None
    conn = Connection(
        adapter.take_over(request.environ),
        user_id,
        name,
        config["CHAT_SEND_QUEUE_SIZE"],
        locale,
        max_message_bytes=config["CHAT_MAX_FRAME_BYTES"],
        ping_interval=config["CHAT_PING_INTERVAL"],
    )
    greeted = False
    started = time.monotonic()
    stats.greeting_started.send(runtime.hub)
    try:
        resume = read_resume(runtime.hub, conn) if g.chat_resuming else protocol.Resume({})
        greeted = greet(runtime.hub, runtime.arrivals, conn, resume)
    finally:
        seconds = time.monotonic() - started
        stats.greeting_ended.send(runtime.hub, seconds=seconds, greeted=greeted)
        if not greeted:
            try:
                end(runtime.hub, conn)
            finally:
                conn.release()
                runtime.hub.retire(conn)
    if greeted:
        if runtime.closing:
            # SIGTERM came while it was greeted: close_sockets may have missed it.
            conn.close_with(CLOSE_GOING_AWAY, "Server restarting")
        # The request ends now; the socket is the poller's until its session ends.
        Session(config, runtime.poller, runtime.hub, conn).start()
