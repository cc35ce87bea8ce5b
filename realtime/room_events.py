"""What the open tabs learn when a room changes: from a socket's frame (``handlers``) or from
outside one (``core.signals``: the admin page, an invitation link), through the same calls.

Every call here runs under ``hub.ordered()``, so that these frames and the room's messages
reach every socket in one order.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError

from core import rooms
from core.rooms import Deleted
from core.signals import members_added, room_deleted, room_updated
from extensions import db
from models import GENERAL, PUBLIC, Room
from realtime import protocol
from realtime.backplane import BackplaneError
from realtime.hub import Hub

log = logging.getLogger(__name__)
LISTENER_KEY = "chat.room_events"


def updated_frame(room: Room, by: int | None, client_id: str | None = None) -> dict[str, object]:
    """``room_updated``: a room's name, topic and archiving as they are now (``client_id``: of
    the frame that changed it, the sender's confirmation)."""
    return {
        "type": "room_updated",
        "room": room.key,
        "title": room.title,
        "topic": room.topic,
        "archived": room.archived_at is not None,
        "by": by,
        "client_id": client_id,
    }


def tell_updated(hub: Hub, room: Room, by: int | None, client_id: str | None = None) -> None:
    """Everyone who can see ``room`` learns its name, topic and archiving: a public room's
    title is in everyone's list of rooms to join; another's only its members see."""
    payload = protocol.encode(updated_frame(room, by, client_id))
    if room.kind == PUBLIC:
        hub.send_to_all(payload)
    else:
        hub.broadcast(room.id, payload)


def entry_frame(hub: Hub, room: Room, user_id: int) -> dict[str, object]:
    """The ``room`` frame describing ``room`` to ``user_id``, with who is online in it."""
    summary = rooms.summary(room, user_id)
    limit = current_app.config["CHAT_ONLINE_LISTED"]
    online, count = hub.online_page([room.id], limit)[room.id]
    return {"type": "room", **protocol.room_entry(summary, online, count)}


def tell_added(hub: Hub, room: Room, user_id: int, invited_by: int | None) -> None:
    """``user_id``'s sockets get ``room`` at once; its members see them arrive (presence)."""
    hub.subscribe(user_id, room.id, room.key)
    entry = entry_frame(hub, room, user_id)
    if invited_by is not None:
        entry["invited_by"] = invited_by
    hub.send_to_user(user_id, protocol.encode(entry))


def tell_deleted(hub: Hub, deleted: Deleted) -> None:
    """Every member's sockets drop the room; for a public one, every list of rooms to join."""
    for user_id in deleted.member_ids:
        hub.unsubscribe(user_id, deleted.room_id, deleted.key, GENERAL)
    payload = protocol.encode({"type": "room_deleted", "room": deleted.key})
    if deleted.kind == PUBLIC:
        hub.send_to_all(payload)
    else:
        for user_id in deleted.member_ids:
            hub.send_to_user(user_id, payload)


class Listener:
    """Carries ``core.signals`` of one app to its hub (the runtime holds it: blinker holds
    bound methods weakly)."""

    def __init__(self, app: Flask, hub: Hub) -> None:
        self._hub = hub
        room_updated.connect(self._on_updated, sender=app)
        room_deleted.connect(self._on_deleted, sender=app)
        members_added.connect(self._on_added, sender=app)

    def _on_updated(self, _app: Flask, room_id: int, by: int | None) -> None:
        with _telling(f"the update of room {room_id}"), self._hub.ordered():
            room = db.session.get(Room, room_id)
            if room is not None:
                tell_updated(self._hub, room, by)

    def _on_deleted(self, _app: Flask, deleted: Deleted, by: int | None) -> None:
        with _telling(f"the deletion of room {deleted.room_id}"), self._hub.ordered():
            tell_deleted(self._hub, deleted)

    def _on_added(self, _app: Flask, room_id: int, user_ids: list[int], by: int | None) -> None:
        with _telling(f"the new members of room {room_id}"), self._hub.ordered():
            room = db.session.get(Room, room_id)
            if room is None:  # Deleted meanwhile.
                return
            for user_id in user_ids:
                tell_added(self._hub, room, user_id, by)


@contextmanager
def _telling(what: str) -> Iterator[None]:
    """The change is stored: if the tabs cannot be told now, they learn it when they
    reconnect (a greeting reads the rooms from the database)."""
    try:
        yield
    except (SQLAlchemyError, BackplaneError):
        db.session.rollback()
        log.warning("could not announce %s", what)
