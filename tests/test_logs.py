"""Logs: JSON lines with ``CHAT_LOG_FORMAT=json`` (ours and gunicorn's), readable text by
default, request ids, user ids, and never a token or a message's text."""

import http.cookiejar
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from types import SimpleNamespace

import pytest
from flask import g
from flask.logging import default_handler
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from websockets.sync.client import connect

from extensions import db
from helpers import PASSWORD, ChatClient, csrf_token, login, token_issued_at, wait_until
from models import User
from ops.logs import JsonHandler, gunicorn_logconfig

TEXT = "zebra quartz 4417 marmalade"  # What must never reach a log.
EMAIL = "dana@example.com"
FIELDS = {"time", "level", "logger", "message"}


class Browser:
    """An HTTP client with a cookie jar (urllib follows redirects)."""

    def __init__(self, base_url):
        self.base_url = base_url
        cookies = urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        self.opener = urllib.request.build_opener(cookies)

    def request(self, path, data=None, headers=None):
        """``(status, headers, body text)`` of a GET, or of a form POST when ``data`` is given."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base_url + path, body, headers or {})  # noqa: S310
        try:
            with self.opener.open(request, timeout=5) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.headers, error.read().decode()

    def submit(self, path, data):
        """GET a form, then POST ``data`` with its CSRF token."""
        _, _, page = self.request(path)
        return self.request(path, {**data, "csrf_token": csrf_token(SimpleNamespace(text=page))})


def json_lines(log):
    """Every line of ``log`` as a JSON object (fails on the first that is not one)."""
    lines = []
    for line in log.splitlines():
        if line.strip():
            record = json.loads(line)
            assert isinstance(record, dict), line
            lines.append(record)
    return lines


@pytest.fixture
def json_logs(app_config):
    """Serve with ``CHAT_LOG_FORMAT=json`` (request it before ``gunicorn_server``); gunicorn.conf.py
    then gives gunicorn ``gunicorn_logconfig()`` as its ``logconfig_dict``."""
    app_config["CHAT_LOG_FORMAT"] = "json"


def test_a_session_under_gunicorn_logs_json_lines_with_ids_and_no_secrets(
    app, json_logs, gunicorn_server
):
    browser = Browser(gunicorn_server.url)
    status, _, _ = browser.submit(
        "/register", {"email": EMAIL, "password": PASSWORD, "confirm": PASSWORD}
    )
    assert status == 200
    status, headers, body = browser.request("/api/token")
    assert status == 200
    token, request_id = json.loads(body)["token"], headers["X-Request-ID"]
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == EMAIL))
    host = gunicorn_server.url.removeprefix("http://")
    with connect(f"ws://{host}/ws?token={token}", open_timeout=5) as ws:
        chat = ChatClient(ws)
        chat.recv_type("hello")
        chat.send({"type": "message", "text": TEXT, "client_id": "c1"})
        assert chat.recv_type("message")["text"] == TEXT
        chat.send('{"type": "message", "text": "' + TEXT)  # A bad frame, with the text in it.
        assert chat.recv_type("error")["code"] == "bad_request"
    status, _, _ = Browser(gunicorn_server.url).submit(
        "/login", {"email": EMAIL, "password": "not the password"}
    )
    assert status == 401
    browser.request("/healthz", headers={"X-Request-ID": "lb-probe.42"})

    def logged(condition):
        return any(condition(line) for line in json_lines(gunicorn_server.log()))

    wait_until(lambda: logged(lambda line: "/healthz" in line["message"]), "the last access line")
    assert logged(lambda line: f"message from user {user_id}" in line["message"])
    lines = json_lines(gunicorn_server.log())
    for line in lines:
        assert line.keys() >= FIELDS, line
        assert datetime.fromisoformat(line["time"]).utcoffset().total_seconds() == 0
    assert any(line["logger"] == "gunicorn.error" for line in lines)  # "Booting worker"
    assert any(line["logger"] == "gunicorn.access" for line in lines)
    token_line = next(line for line in lines if line.get("request_id") == request_id)
    assert "GET /api/token " in token_line["message"]
    assert token_line["user_id"] == user_id
    message_line = next(line for line in lines if "message from user" in line["message"])
    assert message_line["user_id"] == user_id
    assert any(line.get("request_id") == "lb-probe.42" for line in lines)
    log = gunicorn_server.log()
    assert token not in log
    assert TEXT not in log
    assert "not the password" not in log
    assert PASSWORD not in log


def test_the_default_format_stays_readable_text(app, gunicorn_server, alice):
    host = gunicorn_server.url.removeprefix("http://")
    with connect(f"ws://{host}/ws?token={token_issued_at(app, alice)}", open_timeout=5) as ws:
        chat = ChatClient(ws)
        chat.recv_type("hello")
        chat.send({"type": "message", "text": TEXT, "client_id": "c1"})
        chat.recv_type("message")
    gunicorn_server.wait_for_log(f"message from user {alice}")
    line = next(line for line in gunicorn_server.log().splitlines() if "message from user" in line)
    assert re.match(r"\[\d{4}-\d\d-\d\d [\d:,]+\] INFO in handlers: message from user", line)
    assert TEXT not in gunicorn_server.log()


# ---- In this process ---------------------------------------------------------------------------


@pytest.fixture
def json_app(app_config, make_app):
    """An app logging JSON lines (to pytest's captured stderr: make it after ``capsys``)."""
    return lambda: make_app({**app_config, "CHAT_LOG_FORMAT": "json"})


def test_a_json_line_has_the_fields_and_nothing_secret(capsys, json_app):
    app = json_app()
    with app.test_request_context():
        g.request_id, g.chat_user_id = "req-1", 7
        try:
            raise ValueError("boom")
        except ValueError:
            app.logger.exception("failed on /ws?token=abc.def.ghi with %s", "redis://:pw@host/0")
    logging.getLogger("realtime.session").warning("slow", extra={"user_id": 9, "text": TEXT})
    first, second = json_lines(capsys.readouterr().err)
    assert first.pop("exc_info").endswith("ValueError: boom")
    assert datetime.fromisoformat(first.pop("time")).utcoffset().total_seconds() == 0
    assert first == {
        "level": "ERROR",
        "logger": "app",
        "message": "failed on /ws?token=[redacted] with redis://:[redacted]@host/0",
        "request_id": "req-1",
        "user_id": 7,
    }
    assert second.keys() == {"time", "level", "logger", "message", "user_id"}  # No "text".
    assert second["user_id"] == 9


def test_json_logging_is_set_up_once_however_many_apps(capsys, json_app, app_config, make_app):
    app = json_app()
    json_app()
    assert sum(isinstance(h, JsonHandler) for h in logging.getLogger().handlers) == 1
    assert default_handler not in app.logger.handlers
    app.logger.warning("once")
    assert len(json_lines(capsys.readouterr().err)) == 1
    make_app(app_config)  # Back to text: the JSON handler goes.
    assert not any(isinstance(h, JsonHandler) for h in logging.getLogger().handlers)


def test_text_lines_come_from_every_logger_once_and_readable(capsys, app_config, make_app):
    make_app(app_config)
    app = make_app(app_config)  # Twice: still one handler.
    app.logger.info("from the app")
    logging.getLogger("realtime.session").warning("closing ws?token=abc.def for user 3")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[[\d\- :,]+\] INFO in test_logs: from the app", lines[0])
    assert lines[1].endswith("WARNING in test_logs: closing ws?token=[redacted] for user 3")


def test_a_failed_statement_never_shows_its_values(app):
    # A failed insert's traceback is logged: it must not carry the message text it held.
    with app.app_context():
        with pytest.raises(SQLAlchemyError) as failed:
            db.session.execute(text("INSERT INTO no_such_table VALUES (:v)"), {"v": TEXT})
        db.session.rollback()
    assert "no_such_table" in str(failed.value)
    assert TEXT not in str(failed.value)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-123_DEF.4", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("has space", False),
        ("semi;colon", False),
        ("", False),
    ],
)
def test_a_sane_request_id_is_kept_and_any_other_replaced(client, given, kept):
    response = client.get("/healthz", headers={"X-Request-ID": given})
    if kept:
        assert response.headers["X-Request-ID"] == given
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_every_response_has_a_request_id_even_an_error(client):
    first, second = client.get("/nowhere"), client.get("/nowhere")
    assert first.status_code == 404
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_the_user_id_is_known_once_the_session_loads_the_user(client, alice):
    login(client)
    with client:
        client.get("/")
        assert g.chat_user_id == alice


def test_gunicorn_keeps_its_own_logging_in_text_format():
    assert gunicorn_logconfig({}) is None
    assert gunicorn_logconfig({"CHAT_LOG_FORMAT": "text"}) is None
    config = gunicorn_logconfig({"CHAT_LOG_FORMAT": "json", "CHAT_LOG_LEVEL": "WARNING"})
    assert config["root"] == {"level": "WARNING", "handlers": ["json"]}
    assert json.loads(json.dumps(config)) == config  # Also usable as --log-config-json.
