"""Hello and goodbye: a socket's greeting (or resume) and its departure, in the hub's order."""

from collections.abc import Mapping, Sequence
from typing import cast

from flask import current_app
from flask_babel import gettext
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from core import rooms
from extensions import db
from models import (
    GENERAL,
    Message,
    changed_since,
    describe,
    latest_changes,
    messages_after,
    quote,
)
from realtime import handlers, protocol
from realtime.arrivals import Arrivals
from realtime.backplane import BackplaneError
from realtime.hub import Hub
from realtime.transport import frames
from realtime.transport.connection import Connection


def end(hub: Hub, conn: Connection) -> None:
    """The socket is over: its last messages go out, then it is announced gone and closed."""
    try:
        handlers.settle(conn)  # Its last messages go out before it is announced gone.
        _say_goodbye(hub, conn)
    finally:
        conn.close()


def read_resume(hub: Hub, conn: Connection) -> protocol.Resume:
    """Where the client stands, from its first frame; a bad or late frame means nowhere."""
    data = conn.reader.receive(timeout=current_app.config["CHAT_RESUME_WAIT"])
    if data is None:
        return protocol.Resume({})
    try:
        return protocol.parse_resume(data)
    except protocol.FrameError as error:
        send_error(hub, conn, error.code, error.message)
        return protocol.Resume({})


def greet(hub: Hub, arrivals: Arrivals, conn: Connection, resume: protocol.Resume) -> bool:
    """Send ``hello``, replay what the client missed, and announce it; False if that failed."""
    try:
        arrival = arrivals.register(conn)
        _send_hello(hub, conn, resume, arrival.public_rooms)
    except (SQLAlchemyError, BackplaneError):
        current_app.logger.exception(
            "could not greet user %s", conn.user_id, extra={"user_id": conn.user_id}
        )
        conn.release_held([], keep=False)  # Live frames without their hello: dropped.
        send_error(
            hub, conn, "unavailable", gettext("The chat is unavailable; please reconnect later.")
        )
        return False
    finally:
        db.session.remove()
    if arrival.first:
        for room_id, key in arrival.rooms.items():
            hub.presence.note(room_id, key, conn.user_id, conn.name)
    return True


def _send_hello(
    hub: Hub, conn: Connection, resume: protocol.Resume, public: list[rooms.PublicRoom]
) -> None:
    """Read and send ``hello`` and the catch-up as of the socket's floors, then what it held;
    ``public`` and the socket's picture were read with its registration (``arrivals.py``)."""
    mine = rooms.summaries(conn.user_id, up_to=conn.floor)
    general = next(room for room in mine if room["room"] == GENERAL)
    resumed = GENERAL in resume.rooms
    before = conn.floor + 1
    history, has_more = ([], False) if resumed else handlers.page(general["id"], before)
    replay = _catch_up(mine, resume, conn.floor, conn.change_floor)
    db.session.remove()
    # Read after the registration too: presence frames the socket did not get are in it.
    limit = current_app.config["CHAT_ONLINE_LISTED"]
    online = hub.online_page([room["id"] for room in mine], limit)
    entries = [protocol.room_entry(room, *online.get(room["id"], ([], 0))) for room in mine]
    # ``avatar_url`` is not in protocol.Person yet (realtime/protocol.py is another change's).
    me = cast(
        protocol.Person, {"id": conn.user_id, "name": conn.name, "avatar_url": conn.avatar_url}
    )
    hello = protocol.hello_frame(me, GENERAL, entries, public, history, has_more, conn.change_floor)
    opening = [frames.message(protocol.encode(frame)) for frame in (hello, *replay)]
    conn.release_held(opening)


Replayed = protocol.MessageFrame | protocol.HistoryFrame | protocol.ChangeFrame | dict[str, object]


def _catch_up(
    mine: Sequence[protocol.RoomSummary], resume: protocol.Resume, floor: int, latest_change: int
) -> list[Replayed]:
    """Frames that bring a resuming client from where it stands to message ``floor`` and change
    ``latest_change`` (what follows comes live), room by room, in order.

    For each room: the messages it missed, as they are now, then each message it had that
    changed since (``resume.changes``), as it is now, in the order of their latest change. At
    most ``CHAT_RESUME_LIMIT`` of both are replayed in all; a room that would go past the
    budget gets its latest page with ``reset: true`` instead, so a long absence cannot flood the
    socket's queue. ``resumed`` ends it when the client gave where its changes stand.
    """
    budget = current_app.config["CHAT_RESUME_LIMIT"]
    replay: list[Replayed] = []
    for room in mine:
        last_id = resume.rooms.get(room["room"])
        if last_id is None:
            continue
        # A restart storm's clients mostly missed nothing: then nothing is read (the summary
        # has the room's last id, the floor the latest change).
        missed = (
            messages_after(room["id"], last_id, budget + 1, up_to=floor)
            if room["last_id"] > last_id
            else []
        )
        changed: list[int] = []
        since = resume.changes
        if since is not None and since < latest_change and len(missed) <= budget:
            left = budget + 1 - len(missed)
            changed = changed_since(room["id"], since, last_id, left, latest_change)
        if len(missed) + len(changed) <= budget:
            budget -= len(missed) + len(changed)
            replay.extend(protocol.message_frame(message) for message in missed)
            replay.extend(_changed_frames(changed, latest_change))
        else:
            messages, has_more = handlers.page(room["id"], floor + 1)
            replay.append(protocol.history_frame(room["room"], messages, has_more, reset=True))
    if resume.changes is not None:
        replay.append({"type": "resumed", "changes": latest_change})
    return replay


def _changed_frames(message_ids: Sequence[int], up_to: int) -> list[protocol.ChangeFrame]:
    """A ``message_changed`` frame per message, as it is now, under its latest change up to
    ``up_to`` (a later one reaches the socket live)."""
    if not message_ids:
        return []
    found = db.session.scalars(select(Message).where(Message.id.in_(message_ids))).all()
    by_id = {message.id: message for message in found}
    data = {item["id"]: item for item in describe(found)}
    latest = latest_changes(message_ids, up_to)
    frames = []
    for message_id in message_ids:
        change, message = latest[message_id], by_id[message_id]
        quoted = quote(message, data[message_id]["mentions"])
        frames.append(
            protocol.change_frame(
                change.id, change.kind, change.user_id, data[message_id], quoted, change.client_id
            )
        )
    return frames


def _say_goodbye(hub: Hub, conn: Connection) -> None:
    """Unregister ``conn``; if it was its user's last socket anywhere, tell each of their rooms."""
    try:
        with hub.ordered():  # Presence frames keep one order with hello and with each other.
            last, where = hub.detach(conn)
            if last:
                _announce_departure(hub, conn.user_id, conn.name, where)
    except (SQLAlchemyError, BackplaneError):
        # The lock or the backplane is down: still forget the socket here. Other workers learn
        # of it when their clients resume, or when this worker's presence expires.
        current_app.logger.warning(
            "could not announce user %s leaving", conn.user_id, extra={"user_id": conn.user_id}
        )
        _announce_departure(hub, conn.user_id, conn.name, hub.forget(conn))


def _announce_departure(hub: Hub, user_id: int, name: str, rooms_left: Mapping[int, str]) -> None:
    """Tell each of ``rooms_left`` ({id: key}), in the next presence batch, that a user left."""
    for room_id, key in rooms_left.items():
        hub.presence.note(room_id, key, user_id, name)


def send_error(
    hub: Hub,
    conn: Connection,
    code: str,
    message: protocol.Translatable,
    client_id: str | None = None,
    retry_after: float | None = None,
) -> None:
    """Send an ``error`` frame to this client only."""
    hub.send(conn, protocol.encode(protocol.error_frame(code, message, client_id, retry_after)))
