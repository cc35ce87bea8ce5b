"""The chat page, and the WebSocket ``/ws``: authenticate, greet (or resume), serve, say goodbye."""

import contextlib
import threading
import time

from babel import Locale
from flask import Blueprint, current_app, g, make_response, render_template, request
from flask_babel import force_locale, get_locale, gettext
from flask_login import current_user, login_required
from simple_websocket import ConnectionClosed
from sqlalchemy.exc import SQLAlchemyError

import commits
import handlers
import jscatalog
import protocol
import rooms
from backplane import BackplaneError, RedisBackplane
from errors import json_error
from extensions import db, sock
from hub import CLOSE_FLOOD, HUB_KEY, Connection, Hub, current_hub
from models import GENERAL, latest_message_id, messages_after
from poller import BATCH, POLLER_KEY, Poller
from reader import CLOSE_TIMEOUT, InlineReader
from throttle import TokenBucket
from tokens import TokenError, issue_token, verify_token

bp = Blueprint("chat", __name__)


@bp.get("/")
@login_required
def index():
    """The chat page, carrying a fresh token for the socket."""
    page = render_template(
        "chat.html",
        token=issue_token(current_user),
        config=current_app.config,
        js_catalog=jscatalog.catalog(),
    )
    response = make_response(page)
    response.headers["Cache-Control"] = "no-store"  # The page holds a token.
    return response


def _allowed_origins():
    """This app's own origin, plus ``CHAT_ALLOWED_ORIGINS``; compared exactly."""
    own = f"{request.scheme}://{request.host}"
    return {own, *current_app.config["CHAT_ALLOWED_ORIGINS"]}


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
    origin = request.headers.get("Origin")
    if origin is not None and origin not in _allowed_origins():
        # Cross-site WebSocket hijacking: a page elsewhere must not use a visitor's socket.
        return json_error(403, "forbidden_origin", "This origin may not open the chat socket.")
    token = _request_token()
    if token is None:
        return json_error(401, "missing_token", "Pass a token as ?token= or a Bearer header.")
    try:
        user = verify_token(token)
    except TokenError as error:
        return json_error(401, error.code, "Get a new token from /api/token.")
    hub = current_hub()
    hub.start()
    current_app.extensions[commits.COMMITS_KEY].start()
    poller = current_app.extensions[POLLER_KEY]
    poller.start()
    if len(poller) >= current_app.config["CHAT_MAX_SOCKETS"]:
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
    # Plain values only: no ORM object or connection is kept for the life of the socket.
    g.chat_user = (user.id, user.name)
    g.chat_locale = user.locale  # Error frames speak the user's language, even for a token.
    db.session.remove()
    return None


@sock.route("/ws", bp=bp)
def chat_socket(ws):
    """Greet the client, then hand its socket to the poller, which serves it from then on."""
    user_id, name = g.chat_user
    hub = current_hub()
    config = current_app.config
    # The language is chosen now, while the request can tell it (the user's, or the browser's).
    locale = str(get_locale() or "") or None
    conn = Connection(ws, user_id, name, config["CHAT_SEND_QUEUE_SIZE"], locale)
    greeted = False
    try:
        marks = _read_resume(ws, conn) if g.chat_resuming else {}
        greeted = _greet(hub, conn, marks)
    finally:
        if not greeted:
            _end(hub, conn)
    if not greeted:
        return
    session = Session(current_app._get_current_object(), hub, conn, ws)
    session.start()
    if not ws.thread.owns_socket:
        # Werkzeug (flask run, the tests) hangs up when the route returns: this thread waits.
        session.ended.wait()


def _end(hub, conn):
    """The socket is over: its last messages go out, then it is announced gone and closed."""
    try:
        handlers.settle(conn)  # Its last messages go out before it is announced gone.
        _say_goodbye(hub, conn)
    finally:
        conn.close()


class Session:
    """A greeted socket, served frame by frame by the poller (``poller.py``): chat messages in
    its epoll thread, commands (which may wait) in its pool."""

    def __init__(self, app, hub, conn, ws):
        config = app.config
        self._hub = hub
        self._conn = conn
        self._ws = ws
        # Parsed once: forcing a locale given as a string parses it again on every frame.
        self._locale = Locale.parse(conn.locale) if conn.locale else None
        self._poller = app.extensions[POLLER_KEY]
        self._frames = TokenBucket(config["CHAT_FRAME_RATE"], config["CHAT_FRAME_BURST"])
        # Refusals a socket may collect before it counts as abuse; they come back at one a second.
        self._strikes = TokenBucket(1, config["CHAT_FLOOD_STRIKES"])
        # Closed for flooding: what it still sends is dropped until then, when it is cut off.
        self._discard_until = None
        self._pending = None  # A command handed to a pool thread with the session.
        self._fd = None
        self._mutex = threading.Lock()  # Guards the two flags below.
        self._running = False  # A thread is serving it.
        self._again = False  # It was woken while served: look again before arming the socket.
        self.ended = threading.Event()

    def start(self):
        """Hand the socket to the poller, and serve what arrived meanwhile; the request that
        opened it may end now."""
        self._fd = self._ws.thread.hand_off(detach=self._ws.mode == "gunicorn")
        self._conn.serve_without_waiting()
        self._running = True
        try:
            self._poller.adopt(self, self._fd)
        except (OSError, ValueError):  # The poller stopped: the worker is exiting.
            self._conn.abort()
            self._finish()
            return
        self._running = False
        self.wake()  # Frames that came with the greeting's may be read already: none may wait.

    def next_due(self):
        """When it must be served even without frames (a ping, a close or a flooder's timeout)."""
        times = [t for t in (self._ws.thread.next_due(), self._discard_until) if t is not None]
        return min(times, default=None)

    def wake(self):
        """Serve it in this thread (the epoll thread), unless it is being served elsewhere
        (which then looks again)."""
        with self._mutex:
            if self._running:
                self._again = True
                return
            self._running = True
        self._run(inline=True)

    def resume(self):
        """Serve it in a pool thread: the frame that may wait first, then the rest of its turn."""
        self._run(inline=False)

    def _run(self, inline):
        """Handle what has arrived, then arm the socket again; at the end, clean up after it."""
        while True:
            try:
                if self._serve(BATCH, inline):
                    return  # Handed to a pool thread, which goes on from here.
            except ConnectionClosed:
                # Saying goodbye may wait (for its last messages, for its writer): not on the
                # poller's threads. Nothing runs the session any more.
                self._poller.retire(self._finish)
                return
            except Exception:
                # A bug: the socket must still end properly, not linger unserved forever.
                current_app.logger.exception("serving a socket of user %s", self._conn.user_id)
                self._conn.abort()
                self._poller.retire(self._finish)
                return
            with self._mutex:
                if not self._again:
                    self._running = False
                    break
                self._again = False
        # What is still unread waits for the socket's next turn, behind the others ready now.
        self._poller.arm(self._fd)

    def _serve(self, budget, inline):
        """Handle the frames readable without waiting, in at most ``budget`` reads of the
        socket (which count pings and pieces of frames too, not just messages).

        ``inline`` (the epoll thread): a frame that may wait is not handled here; the session
        goes to a pool thread with it, and True is returned.
        """
        reader = self._ws.thread
        first = reader.reads
        if self._discard_until is not None and time.monotonic() >= self._discard_until:
            self._conn.abort()  # The flooder did not answer our close in time.
        if self._pending is not None:
            command, self._pending = self._pending, None
            self._in_locale(self._dispatch, command)
        while (data := reader.receive_nowait(read=reader.reads - first < budget)) is not None:
            if self._discard_until is None and self._in_locale(self._handle, data, inline):
                return True
        return False

    def _in_locale(self, step, *arguments):
        """``step(*arguments)`` in the user's language (no request here to tell it), and with the
        database session given back after it."""
        try:
            with force_locale(self._locale) if self._locale else contextlib.nullcontext():
                return step(*arguments)
        finally:
            db.session.remove()

    def _handle(self, data, inline):
        """Parse one frame and run its command; True if it went to a pool thread instead."""
        command = self._parse(data)
        if command is None:
            return False
        if inline and not isinstance(command, protocol.ChatMessage):
            # Commands read or write the database, or wait for this socket's messages.
            self._pending = command
            self._poller.hand_over(self)
            return True
        self._dispatch(command)
        return False

    def _parse(self, data):
        """The command in a frame, once the frame rate allows it; None (and an error) if not."""
        try:
            if not self._frames.take():
                message = protocol.ERROR_MESSAGES["rate_limited"]
                raise protocol.FrameError("rate_limited", message, None, self._frames.wait_time())
            return protocol.parse_frame(data, current_app.config["CHAT_MAX_MESSAGE_CHARS"])
        except protocol.FrameError as error:
            self._refuse(error)
            return None

    def _dispatch(self, command):
        """Run the command's handler; a refusal becomes an error frame."""
        try:
            handlers.handle(self._hub, self._conn, command)
        except protocol.FrameError as error:
            self._refuse(error)

    def _refuse(self, error):
        """Send the error; past ``CHAT_FLOOD_STRIKES`` rate-limit refusals, close the socket."""
        conn = self._conn
        _send_error(conn, error.code, error.message, error.client_id, error.retry_after)
        if error.code == "rate_limited" and not self._strikes.take():
            current_app.logger.warning("closing a flooding socket of user %s", conn.user_id)
            # Our close frame goes out after what is queued; its writer hangs up if the client
            # does not answer it in time. Until then its frames are read and dropped, and if
            # its writer is stuck behind a client that does not read, we hang up.
            conn.close_with(CLOSE_FLOOD, "Too many messages")
            self._discard_until = time.monotonic() + 2 * CLOSE_TIMEOUT

    def _finish(self):
        """Announce the socket gone, close it, and let go of it."""
        try:
            _end(self._hub, self._conn)
        finally:
            self._poller.forget(self._fd)
            if self._ws.thread.owns_socket:
                self._ws.sock.close()
            self.ended.set()


def _read_resume(ws, conn):
    """The client's last seen ids, from its first frame; a bad or late frame means none."""
    data = ws.receive(timeout=current_app.config["CHAT_RESUME_WAIT"])
    if data is None:
        return {}
    try:
        return protocol.parse_resume(data)
    except protocol.FrameError as error:
        _send_error(conn, error.code, error.message)
        return {}


def _greet(hub, conn, resume):
    """Send ``hello``, replay what the client missed, and announce it; False if that failed."""
    try:
        with hub.ordered():
            _greet_in_order(hub, conn, resume)
    except (SQLAlchemyError, BackplaneError):
        current_app.logger.exception("could not greet user %s", conn.user_id)
        _send_error(
            conn, "unavailable", gettext("The chat is unavailable; please reconnect later.")
        )
        return False
    finally:
        db.session.remove()
    return True


def _greet_in_order(hub, conn, resume):
    """The body of ``_greet``, under ``hub.ordered()``.

    Every message is stored and published under that lock, so reading what to send, hello and
    registration form one step: nothing falls between the history and the live stream. Messages
    published before it but still in flight from the backplane are at most ``conn.floor``, and
    the hub skips them for this socket: nothing lands in both either.
    """
    generation = hub.generation()
    if not hub.ready():
        raise BackplaneError("the backplane was lost")
    rooms.join_general(conn.user_id)
    mine = rooms.summaries(conn.user_id)
    public = rooms.public_rooms()
    general = next(room for room in mine if room["room"] == GENERAL)
    history, has_more = ([], False) if GENERAL in resume else handlers.page(general["id"], None)
    replay = _catch_up(mine, resume)
    conn.floor = latest_message_id()
    db.session.remove()
    conn.current = GENERAL
    first = hub.attach(conn, {room["id"]: room["room"] for room in mine})
    if hub.generation() != generation:
        # The backplane was lost while we read: its "close everyone" may have missed this socket.
        raise BackplaneError("the backplane was lost during the greeting")
    online = hub.online_in([room["id"] for room in mine])
    entries = [protocol.room_entry(room, online[room["id"]]) for room in mine]
    me = {"id": conn.user_id, "name": conn.name}
    hello = protocol.hello_frame(me, GENERAL, entries, public, history, has_more)
    conn.send(protocol.encode(hello))
    for frame in replay:
        conn.send(protocol.encode(frame))
    if first:
        for room in mine:
            hub.presence.note(room["id"], room["room"], conn.user_id, conn.name)


def _catch_up(mine, resume):
    """Frames that bring a resuming client from its last seen ids to now, room by room, in order.

    At most ``CHAT_RESUME_LIMIT`` messages are replayed in all; a room that would go past the
    budget gets its latest page with ``reset: true`` instead, so a long absence cannot flood the
    socket's queue.
    """
    budget = current_app.config["CHAT_RESUME_LIMIT"]
    frames = []
    for room in mine:
        if room["room"] not in resume:
            continue
        missed = messages_after(room["id"], resume[room["room"]], budget + 1)
        if len(missed) <= budget:
            budget -= len(missed)
            frames.extend(protocol.message_frame(message) for message in missed)
        else:
            messages, has_more = handlers.page(room["id"], None)
            frames.append(protocol.history_frame(room["room"], messages, has_more, reset=True))
    return frames


def _say_goodbye(hub, conn):
    """Unregister ``conn``; if it was its user's last socket anywhere, tell each of their rooms."""
    try:
        with hub.ordered():  # Presence frames keep one order with hello and with each other.
            last, where = hub.detach(conn)
            if last:
                _announce_departure(hub, conn.user_id, conn.name, where)
    except (SQLAlchemyError, BackplaneError):
        # The lock or the backplane is down: still forget the socket here. Other workers learn
        # of it when their clients resume, or when this worker's presence expires.
        current_app.logger.warning("could not announce user %s leaving", conn.user_id)
        _announce_departure(hub, conn.user_id, conn.name, hub.forget(conn))


def _announce_departure(hub, user_id, name, rooms_left):
    """Tell each of ``rooms_left`` ({id: key}), in the next presence batch, that a user left."""
    for room_id, key in rooms_left.items():
        hub.presence.note(room_id, key, user_id, name)


def rename_everywhere(user_id, name):
    """A user changed their display name: their sockets, and everyone in their rooms, learn it.

    The next ``presence`` batch lists them as online with the new name, which the page shows
    from then on; their messages from now on carry the new name (older ones keep the one they
    were shown with).
    """
    hub = current_hub()
    try:
        with hub.ordered():
            hub.rename(user_id, name)
            for room_id, key in hub.rooms_of(user_id).items():
                hub.presence.note(room_id, key, user_id, name, echo=True)
    except (SQLAlchemyError, BackplaneError):
        current_app.logger.warning("could not announce the new name of user %s", user_id)


def _send_error(conn, code, message, client_id=None, retry_after=None):
    """Queue an ``error`` frame for this client only."""
    conn.send(protocol.encode(protocol.error_frame(code, message, client_id, retry_after)))


def init_app(app):
    """Register the page and the socket, and give the app its hub."""
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": app.config["CHAT_PING_INTERVAL"],
        "max_message_size": app.config["CHAT_MAX_FRAME_BYTES"],
        # No reader thread per socket: the handler's thread reads its own socket (reader.py).
        "thread_class": InlineReader,
    }
    backplane = _backplane(app.config, lambda gone: _bury(hub, gone))
    app.extensions[HUB_KEY] = hub = Hub(backplane, app.config["CHAT_PRESENCE_BATCH"])
    app.extensions[commits.COMMITS_KEY] = commits.GroupCommit(app, hub)
    app.extensions[POLLER_KEY] = Poller(app.config["CHAT_SERVE_THREADS"], app.app_context)
    app.register_blueprint(bp)
    sock.init_app(app)


def _backplane(config, on_departed):
    """Redis pub/sub when ``REDIS_URL`` is set (several workers or hosts), else in memory."""
    if not config.get("REDIS_URL"):
        return None
    return RedisBackplane(
        config["REDIS_URL"],
        config["CHAT_REDIS_PREFIX"],
        config["CHAT_PRESENCE_HEARTBEAT"],
        config["CHAT_PRESENCE_TTL"],
        on_departed,
        engine=lambda: db.engine,
    )


def _bury(hub, gone):
    """Announce the users of a dead worker as gone ([(user id, name, {room id: key})])."""
    for user_id, name, rooms_left in gone:
        _announce_departure(hub, user_id, name, rooms_left)
