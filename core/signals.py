"""What happened to a room outside any socket (the admin page, an invitation link, the shell),
announced to whoever listens: the socket stack tells the open tabs.

Like ``accounts.signals``: pages never reach into the socket stack. Blinker ships with Flask.
"""

from typing import cast

from blinker import Namespace
from flask import Flask, current_app
from werkzeug.local import LocalProxy

from core.rooms import Deleted

_signals = Namespace()

#: ``room_id``, ``by``: a room's name, topic or archiving changed.
room_updated = _signals.signal("room-updated")
#: ``deleted`` (``core.rooms.Deleted``), ``by``: an administrator deleted a room.
room_deleted = _signals.signal("room-deleted")
#: ``room_id``, ``user_ids``, ``by``: people were added to a room (an invitation link's use).
members_added = _signals.signal("members-added")
#: ``messages`` (``models.MessageData``, in id order): new messages were stored and published
#: by this worker's committer, from its thread. Listeners (Web Push, bots, link previews) only
#: queue their work: the committer stores the next batch once they return.
messages_published = _signals.signal("messages-published")


def _app() -> Flask:
    # The app itself, not the proxy: the socket stack subscribed with the app as sender.
    return cast("LocalProxy[Flask]", current_app)._get_current_object()


def announce_update(room_id: int, by: int | None) -> None:
    """Tell the listeners that room ``room_id`` changed (``by`` None: the shell)."""
    room_updated.send(_app(), room_id=room_id, by=by)


def announce_deleted(deleted: Deleted, by: int | None) -> None:
    """Tell the listeners that a room is gone."""
    room_deleted.send(_app(), deleted=deleted, by=by)


def announce_added(room_id: int, user_ids: list[int], by: int | None) -> None:
    """Tell the listeners that ``user_ids`` are now in room ``room_id``."""
    if user_ids:
        members_added.send(_app(), room_id=room_id, user_ids=user_ids, by=by)
