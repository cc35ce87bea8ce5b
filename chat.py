"""The chat page, and the WebSocket ``/ws``: authenticate, greet, persist, broadcast."""

from flask import Blueprint, current_app, g, make_response, render_template, request
from flask_login import current_user, login_required
from sqlalchemy.exc import SQLAlchemyError

import protocol
from errors import json_error
from extensions import db, sock
from hub import Connection, Hub, ReaderThread
from models import recent_messages, save_message
from tokens import TokenError, issue_token, verify_token

bp = Blueprint("chat", __name__)

HUB_KEY = "chat_hub"


def current_hub():
    """The hub of the current app."""
    return current_app.extensions[HUB_KEY]


@bp.get("/")
@login_required
def index():
    """The chat page, carrying a fresh token for the socket."""
    page = render_template("chat.html", token=issue_token(current_user), config=current_app.config)
    response = make_response(page)
    response.headers["Cache-Control"] = "no-store"  # The page holds a token.
    return response


def _request_token():
    """The token from ``?token=`` or from ``Authorization: Bearer``."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.args.get("token", "").strip() or None


@bp.before_request
def authenticate_socket():
    """Refuse the upgrade with 401 JSON unless the token is valid (Flask-Sock sends 101 later)."""
    if request.endpoint != "chat.chat_socket":
        return None
    token = _request_token()
    if token is None:
        return json_error(401, "missing_token", "Pass a token as ?token= or a Bearer header.")
    try:
        user = verify_token(token)
    except TokenError as error:
        return json_error(401, error.code, "Get a new token from /api/token.")
    # Plain values only: no ORM object or connection is kept for the life of the socket.
    g.chat_user = (user.id, user.name)
    db.session.remove()
    return None


@sock.route("/ws", bp=bp)
def chat_socket(ws):
    """Serve one client: greet it, then post each message it sends until it goes away."""
    user_id, name = g.chat_user
    hub = current_hub()
    conn = Connection(ws, user_id, name, current_app.config["CHAT_SEND_QUEUE_SIZE"])
    conn.start()
    try:
        if _greet(hub, conn):
            _serve(ws, hub, conn)
    finally:
        with hub.ordered():  # Presence frames keep one order with hello and with each other.
            if hub.detach(conn):
                hub.broadcast(protocol.encode(protocol.presence_frame("leave", user_id, name)))
        conn.close()


def _greet(hub, conn):
    """Send ``hello`` and announce the user's first socket; False if the database failed."""
    # Every broadcast happens under hub.ordered(): history, hello and registration form one step,
    # so no message falls between the history and the live stream, or lands in both.
    with hub.ordered():
        try:
            history = recent_messages(current_app.config["CHAT_HISTORY_SIZE"])
        except SQLAlchemyError:
            current_app.logger.exception("could not load history for user %s", conn.user_id)
            _send_error(conn, "unavailable", "The chat is unavailable; please reconnect later.")
            return False
        finally:
            db.session.remove()
        first = hub.attach(conn)
        hello = protocol.hello_frame(conn.user_id, conn.name, hub.online(), history)
        conn.send(protocol.encode(hello))
        if first:
            join = protocol.presence_frame("join", conn.user_id, conn.name)
            hub.broadcast(protocol.encode(join), exclude=conn)
    return True


def _serve(ws, hub, conn):
    """Read frames until the socket closes (``ConnectionClosed`` ends the loop)."""
    max_chars = current_app.config["CHAT_MAX_MESSAGE_CHARS"]
    while True:
        data = ws.receive()
        try:
            message = protocol.parse_frame(data, max_chars)
        except protocol.FrameError as error:
            _send_error(conn, error.code, error.message, error.client_id)
            continue
        _post(hub, conn, message)


def _post(hub, conn, message):
    """Persist ``message``, then broadcast it; a retried ``client_id`` gets the original back."""
    current_app.logger.info("message from user %s (%d chars)", conn.user_id, len(message.text))
    try:
        with hub.ordered():
            stored, created = save_message(conn.user_id, message.text, message.client_id)
            payload = protocol.encode(protocol.message_frame(stored))
            if created:
                hub.broadcast(payload)
    except SQLAlchemyError:
        current_app.logger.exception("could not save a message from user %s", conn.user_id)
        text = protocol.ERROR_MESSAGES["unavailable"]
        _send_error(conn, "unavailable", text, message.client_id)
        return
    finally:
        db.session.remove()
    if not created:
        conn.send(payload)


def _send_error(conn, code, message, client_id=None):
    """Queue an ``error`` frame for this client only."""
    conn.send(protocol.encode(protocol.error_frame(code, message, client_id)))


def init_app(app):
    """Register the page and the socket, and give the app its hub."""
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": app.config["CHAT_PING_INTERVAL"],
        "max_message_size": app.config["CHAT_MAX_FRAME_BYTES"],
        "thread_class": ReaderThread,
    }
    app.extensions[HUB_KEY] = Hub()
    app.register_blueprint(bp)
    sock.init_app(app)
