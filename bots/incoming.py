"""``POST /hooks/<secret>``: a bot's incoming webhook posts into its room.

The body is JSON ``{"text": "...", "client_id": "..."}``, or, as Slack-style senders post it,
a form with ``payload={"text": ...}``. The message goes through ``realtime.outside.post``, so
the socket's parser, rate limit and checks apply, in the socket's order. The secret is the whole
credential: an unknown one gets 404, whatever else is wrong with the request.
"""

import json
import math
from collections.abc import Mapping

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from bots.manage import hook_hash
from extensions import csrf, db
from models import Bot, Room, User
from realtime import outside, protocol
from realtime.commits import Author
from web.errors import json_error

bp = Blueprint("hooks", __name__, url_prefix="/hooks")

# The HTTP status of each refusal the socket's checks make (``protocol.FrameError.code``).
STATUS = {
    "bad_request": 400,
    "empty": 400,
    "bad_text": 400,
    "too_long": 413,
    "forbidden": 403,
    "archived": 409,
    "rate_limited": 429,
    "unavailable": 503,
}


def _bot(secret: str) -> tuple[Bot, User] | None:
    """The bot whose secret this is, and its account, or None."""
    if len(secret) > 100:
        return None
    query = select(Bot, User).join(User, User.id == Bot.user_id)
    row = db.session.execute(
        query.where(Bot.hook_hash == hook_hash(secret), User.deactivated_at.is_(None))
    ).first()
    return (row[0], row[1]) if row is not None else None


def _body() -> Mapping[str, object] | None:
    """The JSON object sent, or the one in a form's ``payload`` field; None if neither."""
    if request.mimetype == "application/x-www-form-urlencoded":
        payload = request.form.get("payload")
        try:
            data = json.loads(payload) if payload is not None else None
        except ValueError:
            return None
    else:
        data = request.get_json(silent=True, force=True)
    return data if isinstance(data, Mapping) else None


@bp.post("/<secret>")
def receive(secret: str) -> tuple[Response, int] | Response:
    """Post the body's text as the bot, into the bot's room."""
    found = _bot(secret)
    if found is None:
        return json_error(404, "not_found", "There is no webhook at this address.")
    bot, user = found
    room = db.session.get(Room, bot.room_id) if bot.room_id is not None else None
    if room is None:
        return json_error(410, "gone", "The bot's room was deleted.")
    if room.archived_at is not None:
        return json_error(409, "archived", str(protocol.ERROR_MESSAGES["archived"]))
    request.max_content_length = current_app.config["CHAT_MAX_FRAME_BYTES"]
    try:
        data = _body()
    except RequestEntityTooLarge:
        return json_error(413, "too_large", "The body is too large.")
    if data is None:
        return json_error(
            400, "bad_request", 'Send {"text": "..."} as JSON, or as a form\'s payload.'
        )
    text, client_id = data.get("text"), data.get("client_id")
    if not isinstance(text, str):
        return json_error(400, "bad_request", "'text' must be a string.")
    if client_id is not None and not isinstance(client_id, str):
        return json_error(400, "bad_request", "'client_id' must be a string.")
    author = Author(user.id, user.name, user.avatar_url, bot=True)
    key = room.key
    db.session.remove()  # Waiting for the committer holds no connection.
    try:
        stored, _created = outside.post(author, key, text, client_id)
    except protocol.FrameError as error:
        return _refused(error)
    return jsonify(ok=True, id=stored["id"])


def _refused(error: protocol.FrameError) -> tuple[Response, int]:
    """The socket's refusal as an HTTP answer (429 with ``Retry-After``)."""
    status = STATUS.get(error.code, 400)
    response, status = json_error(status, error.code, str(error.message))
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response, status


def init_app(app: Flask) -> None:
    """Register the route: senders are programs holding a secret, not browsers (no CSRF)."""
    app.register_blueprint(bp)
    csrf.exempt(receive)
