"""Logs: readable text by default, JSON lines with ``CHAT_LOG_FORMAT=json``; request ids.

Every request gets an id (``X-Request-ID`` from nginx when it is sane, else a new one), sent
back on the response and put on the log lines of that request, with the user's id where our
code knows it (``g.chat_user_id``: the session's user loader, the socket route) or passes it
(``extra={"user_id": ...}`` from the socket threads). No token reaches a log: ``token=`` in a
URL and a password in a URL are redacted from every line; message text is never logged.
"""

import logging
import os
import re
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from flask import Flask, Response, g, has_app_context, request
from flask.logging import default_handler
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
# Copied into the WSGI environ, where gunicorn's access log finds them (``{name}e`` atoms).
ENVIRON_REQUEST_ID = "chat.request_id"
ENVIRON_USER_ID = "chat.user_id"
ATOM_REQUEST_ID, ATOM_USER_ID = f"{{{ENVIRON_REQUEST_ID}}}e", f"{{{ENVIRON_USER_ID}}}e"
# The only fields a JSON line has: a library's ``extra`` never adds one of its own.
FIELDS = ("time", "level", "logger", "message", "request_id", "user_id", "exc_info", "stack_info")
# Loggers whose own records can carry a request line, and whose handlers are not ours.
URL_LOGGERS = ("werkzeug", "gunicorn.error", "gunicorn.access")

# Flask's default_handler format, now for every logger.
TEXT_FORMAT = "[%(asctime)s] %(levelname)s in %(module)s: %(message)s"

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]+")
_PASSWORD_IN_URL = re.compile(r"(://[^/\s:@]*:)[^/\s@]+@")
_HOOK_IN_URL = re.compile(r"(/hooks/)[^/?\s\"]+")  # A bot's webhook: its path is its secret.


class RedactTokens(logging.Filter):
    """Replace ``token=...`` (browsers put the socket token in the URL) and URL passwords."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message in place; never drops a record."""
        message = record.getMessage()
        redacted = _redact(message)
        if redacted != message:
            if isinstance(record.args, Mapping):
                # gunicorn's access records keep their atoms (read by RequestContext below).
                record.msg = redacted.replace("%", "%%")
            else:
                record.msg, record.args = redacted, ()
        return True


def _redact(text: str) -> str:
    """``text`` with socket tokens, webhook secrets and URL passwords replaced by ``[redacted]``."""
    text = _HOOK_IN_URL.sub(r"\1[redacted]", _TOKEN_IN_URL.sub(r"\1[redacted]", text))
    return _PASSWORD_IN_URL.sub(r"\1[redacted]@", text)


class RequestContext(logging.Filter):
    """Put ``request_id`` and ``user_id`` on a record, where they are known and not given."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Read them from ``flask.g``, or from gunicorn's access atoms; never drops a record."""
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            request_id, user_id = record.args.get(ATOM_REQUEST_ID), record.args.get(ATOM_USER_ID)
        elif has_app_context():
            request_id, user_id = g.get("request_id"), g.get("chat_user_id")
        else:
            return True
        for name, value in (("request_id", request_id), ("user_id", user_id)):
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonLines(JsonFormatter):
    """One JSON object per record: the ``FIELDS``, time in ISO 8601 UTC."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``2026-12-03T11:38:25.123+00:00``."""
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        """Keep the known fields only."""
        return {key: value for key, value in log_data.items() if key in FIELDS}


class JsonHandler(logging.StreamHandler[TextIO]):
    """The root logger's one handler with ``CHAT_LOG_FORMAT=json``: JSON lines to stderr."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream or sys.stderr)
        self.setFormatter(JsonLines())
        self.addFilter(RedactTokens())
        self.addFilter(RequestContext())


class TextHandler(logging.StreamHandler[TextIO]):
    """The root logger's one handler by default: Flask's readable lines, for every logger."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream or sys.stderr)
        self.setFormatter(logging.Formatter(TEXT_FORMAT))
        self.addFilter(RedactTokens())


def init_app(app: Flask) -> None:
    """Set up logging for ``app``'s format and level; give every request an id."""
    level = app.config["CHAT_LOG_LEVEL"]
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, JsonHandler | TextHandler)]:
        root.removeHandler(handler)  # An earlier app's (tests), or the one gunicorn set up.
    # One handler on the root for both formats: the socket stack's loggers (realtime.*, core.*)
    # have none of their own, and Flask's default_handler would print the app's lines twice.
    app.logger.removeHandler(default_handler)
    json_lines = app.config["CHAT_LOG_FORMAT"] == "json"
    root.addHandler(JsonHandler() if json_lines else TextHandler())
    root.setLevel(level)
    app.logger.setLevel(level)
    for name in URL_LOGGERS:
        _add_filter(logging.getLogger(name), RedactTokens())
    app.before_request(_take_request_id)
    app.after_request(_send_request_id)


def _add_filter(target: logging.Filterer, new: logging.Filter) -> None:
    """Add ``new`` to ``target`` unless a filter of its class is there already."""
    if not any(isinstance(existing, type(new)) for existing in target.filters):
        target.addFilter(new)


def _take_request_id() -> None:
    """Keep the proxy's request id when it is a sane token, else make one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    request.environ[ENVIRON_REQUEST_ID] = g.request_id


def _send_request_id(response: Response) -> Response:
    """Every response names its request; the access log learns the user, if known."""
    request_id = g.get("request_id")
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    user_id = g.get("chat_user_id")
    if user_id is not None:
        request.environ[ENVIRON_USER_ID] = user_id
    return response


def gunicorn_logconfig(environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """gunicorn's ``logconfig_dict`` for ``CHAT_LOG_FORMAT=json`` (its own lines as JSON too).

    gunicorn updates its defaults with this dict key by key (``dict.update``), so each key
    given here replaces the default's whole: every handler named is defined here.
    """
    if environ.get("CHAT_LOG_FORMAT") != "json":
        return None
    # No level for gunicorn's loggers: they keep --log-level (gunicorn sets it before this).
    own = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"json": {"()": "ops.logs.JsonHandler"}},
        "root": {"level": environ.get("CHAT_LOG_LEVEL", "INFO"), "handlers": ["json"]},
        "loggers": {"gunicorn.error": own, "gunicorn.access": dict(own)},
    }
