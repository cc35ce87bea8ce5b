"""Messages from outside a socket (the REST API, webhooks, bots), on the socket's own path.

A post goes through the group committer like a socket's: the same parser, rate limit, checks
under the order lock, one order of ids, the same publish, so the resume guarantee holds for it
as for any message. Edits, deletions and reactions take the order lock and publish their change
exactly as the socket's handlers do (``publish_change`` is theirs too). Every function raises
``protocol.FrameError`` for a refusal; the caller turns it into its own kind of answer.
"""

import json
from collections.abc import Callable, Mapping, Sequence

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from core import messages, rooms
from core.throttle import message_wait
from extensions import db
from models import Message, describe, quote
from realtime import commits, protocol
from realtime.backplane import BackplaneError
from realtime.commits import Author
from realtime.hub import Hub
from realtime.protocol import ChangeFrame, StoredMessage
from realtime.runtime import current_runtime

# Seconds a caller waits for the committer to store its message; past it, "unavailable" (the
# message may still be stored: a retry with the same client_id finds it, never a copy).
WAIT = 10.0


def post(
    author: Author,
    room: str,
    text: str,
    client_id: str | None = None,
    reply_to: int | None = None,
    attachments: Sequence[int] = (),
    locale: str | None = None,
) -> tuple[StoredMessage, bool]:
    """Store and publish a message in ``room`` (a key); ``(message, created)``: a retried
    ``client_id`` gets its original, with ``created`` False."""
    frame: dict[str, object] = {"type": "message", "room": room, "text": text}
    frame["client_id"] = client_id
    if reply_to is not None:
        frame["reply_to"] = reply_to
    if attachments:
        frame["attachments"] = list(attachments)
    command = parse(frame)
    if not isinstance(command, protocol.ChatMessage):  # The parser returns what it was given.
        raise TypeError("a message frame parses to a ChatMessage")
    config = current_app.config
    if len(command.attachments) > config["CHAT_MAX_ATTACHMENTS"]:
        raise protocol.FrameError("bad_request", protocol.ERROR_MESSAGES["bad_request"], client_id)
    wait = message_wait(author.user_id, config["CHAT_MESSAGE_RATE"], config["CHAT_MESSAGE_BURST"])
    if wait:
        message = protocol.ERROR_MESSAGES["rate_limited"]
        raise protocol.FrameError("rate_limited", message, client_id, wait)
    runtime = current_runtime()
    runtime.start()  # A process may hear from the API before any socket.
    queued = commits.Post(
        author, command.room, command.text, command.client_id, locale, command.reply_to,
        command.attachments,
    )  # fmt: skip
    unavailable = protocol.FrameError(
        "unavailable", protocol.ERROR_MESSAGES["unavailable"], client_id
    )
    if not runtime.commits.add(queued, WAIT) or not queued.done.wait(WAIT):
        raise unavailable
    if queued.result is not None:
        return queued.result
    if isinstance(queued.error, protocol.FrameError):
        raise queued.error
    raise unavailable


def parse(frame: Mapping[str, object]) -> protocol.Command:
    """A client frame through the socket's own parser: the same checks, the same errors."""
    return protocol.parse_frame(json.dumps(frame), current_app.config["CHAT_MAX_MESSAGE_CHARS"])


def edit(user_id: int, message_id: int, text: str, client_id: str | None = None) -> ChangeFrame:
    """Edit one's message (within the edit window); the change frame the room got."""
    command = parse({"type": "edit", "id": message_id, "text": text, "client_id": client_id})
    if not isinstance(command, protocol.Edit):
        raise TypeError("an edit frame parses to an Edit")
    window = current_app.config["CHAT_EDIT_WINDOW"]
    return _change(
        user_id,
        command.id,
        lambda message: messages.edit(message, user_id, command.text, client_id, window),
        client_id,
    )


def delete(user_id: int, message_id: int, client_id: str | None = None) -> ChangeFrame:
    """Delete one's message (or, an administrator, anyone's); the change frame the room got."""
    command = parse({"type": "delete", "id": message_id, "client_id": client_id})
    return _change(
        user_id,
        _id_of(command),
        lambda message: messages.remove(message, user_id, client_id),
        client_id,
    )


def react(
    user_id: int, message_id: int, emoji: str, add: bool, client_id: str | None = None
) -> ChangeFrame:
    """Add (or take back) an emoji on a message; the change frame the room got."""
    kind = "react" if add else "unreact"
    command = parse({"type": kind, "id": message_id, "emoji": emoji, "client_id": client_id})
    if not isinstance(command, protocol.React):
        raise TypeError("a reaction frame parses to a React")
    change = messages.react if add else messages.unreact
    return _change(
        user_id,
        command.id,
        lambda message: change(message, user_id, command.emoji, client_id),
        client_id,
    )


def _id_of(command: protocol.Command) -> int:
    """The message id a delete frame names."""
    if not isinstance(command, protocol.Delete):
        raise TypeError("a delete frame parses to a Delete")
    return command.id


def _change(
    user_id: int,
    message_id: int,
    apply: Callable[[Message], messages.Changed],
    client_id: str | None,
) -> ChangeFrame:
    """Find a message of the user's rooms and change it, in the hub's order of changes."""
    runtime = current_runtime()
    runtime.start()
    hub = runtime.hub
    try:
        with hub.ordered():
            message = messages.find(message_id, rooms.member_room_ids(user_id))
            return publish_change(hub, apply(message), user_id, client_id)
    except messages.MessageError as error:
        raise protocol.FrameError(error.code, error.message, client_id) from None
    except (SQLAlchemyError, BackplaneError):
        db.session.rollback()
        current_app.logger.exception("could not change message %s", message_id)
        unavailable = protocol.ERROR_MESSAGES["unavailable"]
        raise protocol.FrameError("unavailable", unavailable, client_id) from None


def publish_change(
    hub: Hub, changed: messages.Changed, user_id: int, client_id: str | None
) -> ChangeFrame:
    """The frame of a change, published to the message's room in the order of changes (the
    caller holds ``hub.ordered()``); a change that changed nothing is published to no one."""
    message = changed.message
    (data,) = describe([message])
    frame = protocol.change_frame(
        changed.change, changed.kind, user_id, data, quote(message, data["mentions"]), client_id
    )
    if changed.change is not None:
        hub.broadcast_change(message.room_id, changed.change, protocol.encode(frame))
    return frame
