"""The chat page, and the WebSocket ``/ws``: authenticate, greet (or resume), serve, say goodbye."""

from flask import Blueprint, current_app, g, make_response, render_template, request
from flask_login import current_user, login_required
from sqlalchemy.exc import SQLAlchemyError

import handlers
import protocol
import rooms
from errors import json_error
from extensions import db, sock
from hub import Connection, Hub, ReaderThread
from models import GENERAL, messages_after
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
    """Refuse the upgrade with a JSON error unless the token is valid (101 is sent later)."""
    if request.endpoint != "chat.chat_socket":
        return None
    token = _request_token()
    if token is None:
        return json_error(401, "missing_token", "Pass a token as ?token= or a Bearer header.")
    try:
        user = verify_token(token)
    except TokenError as error:
        return json_error(401, error.code, "Get a new token from /api/token.")
    try:
        g.chat_resume = protocol.parse_resume(request.args.get("resume", "{}"))
    except protocol.FrameError as error:
        return json_error(400, error.code, error.message)
    # Plain values only: no ORM object or connection is kept for the life of the socket.
    g.chat_user = (user.id, user.name)
    db.session.remove()
    return None


@sock.route("/ws", bp=bp)
def chat_socket(ws):
    """Serve one client: greet it, then handle each frame it sends until it goes away."""
    user_id, name = g.chat_user
    hub = current_hub()
    conn = Connection(ws, user_id, name, current_app.config["CHAT_SEND_QUEUE_SIZE"])
    conn.start()
    try:
        if _greet(hub, conn, g.chat_resume):
            _serve(ws, hub, conn)
    finally:
        _say_goodbye(hub, conn)
        conn.close()


def _greet(hub, conn, resume):
    """Send ``hello``, replay what the client missed, and announce it; False if the DB failed."""
    # Every broadcast happens under hub.ordered(): reading what to send, hello and registration
    # form one step, so nothing falls between the history and the live stream or lands in both.
    with hub.ordered():
        try:
            rooms.join_general(conn.user_id)
            mine = rooms.summaries(conn.user_id)
            public = rooms.public_rooms()
            general = next(room for room in mine if room["room"] == GENERAL)
            history, has_more = (
                ([], False) if GENERAL in resume else handlers.page(general["id"], None)
            )
            replay = [
                _catch_up(room, resume[room["room"]]) for room in mine if room["room"] in resume
            ]
        except SQLAlchemyError:
            current_app.logger.exception("could not greet user %s", conn.user_id)
            _send_error(conn, "unavailable", "The chat is unavailable; please reconnect later.")
            return False
        finally:
            db.session.remove()
        conn.current = GENERAL
        first = hub.attach(conn, {room["id"]: room["room"] for room in mine})
        entries = [protocol.room_entry(room, hub.online(room["id"])) for room in mine]
        me = {"id": conn.user_id, "name": conn.name}
        hello = protocol.hello_frame(me, GENERAL, entries, public, history, has_more)
        conn.send(protocol.encode(hello))
        for frames in replay:
            for frame in frames:
                conn.send(protocol.encode(frame))
        if first:
            for room in mine:
                join = protocol.presence_frame("join", room["room"], conn.user_id, conn.name)
                hub.broadcast(room["id"], protocol.encode(join), exclude_user=conn.user_id)
    return True


def _catch_up(room, last_id):
    """Frames that bring a resuming client from ``last_id`` to now in one room, in order."""
    limit = current_app.config["CHAT_RESUME_LIMIT"]
    missed = messages_after(room["id"], last_id, limit + 1)
    if len(missed) <= limit:
        return [protocol.message_frame(message) for message in missed]
    # Too far behind to replay: the client replaces the room with its latest page.
    messages, has_more = handlers.page(room["id"], None)
    return [protocol.history_frame(room["room"], messages, has_more, reset=True)]


def _serve(ws, hub, conn):
    """Read frames until the socket closes (``ConnectionClosed`` ends the loop)."""
    max_chars = current_app.config["CHAT_MAX_MESSAGE_CHARS"]
    while True:
        data = ws.receive()
        try:
            command = protocol.parse_frame(data, max_chars)
            handlers.handle(hub, conn, command)
        except protocol.FrameError as error:
            _send_error(conn, error.code, error.message, error.client_id)
        finally:
            db.session.remove()


def _say_goodbye(hub, conn):
    """Unregister ``conn``; if it was its user's last socket, tell each of their rooms."""
    with hub.ordered():  # Presence frames keep one order with hello and with each other.
        last, where = hub.detach(conn)
        if last:
            for room_id, key in where.items():
                leave = protocol.presence_frame("leave", key, conn.user_id, conn.name)
                hub.broadcast(room_id, protocol.encode(leave))


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
