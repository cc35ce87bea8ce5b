"""Bots (issue 21): incoming webhooks into a room, outgoing webhooks when a bot is mentioned,
and the admin forms that manage them.

Real servers throughout: the app on a threaded Werkzeug server with real WebSocket clients,
webhook targets on 127.0.0.1 (``http.server`` in a thread) that answer, hang, answer garbage
or redirect to a private address. Waits are on frames, on the target's events, or on the row
that records a failure.
"""

import hashlib
import hmac
import http.client
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest
from PIL import Image
from sqlalchemy import func, select

from bots import manage
from bots.outgoing import dispatcher_of
from core import rooms
from extensions import db
from helpers import PASSWORD, csrf_token, login, rejected, token_issued_at, wait_until
from models import ADMIN, AuditEntry, Bot, Membership, Message, Room, User

# ---- Fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def webhook_timeout():
    """Seconds an outgoing call may take (a test parametrizes it to wait less for a hang)."""
    return 7.0


@pytest.fixture
def webhook_workers():
    """Callers of outgoing webhooks (a test parametrizes it to 1 to have calls in order)."""
    return 4


@pytest.fixture(autouse=True)
def _bot_settings(app_config, webhook_timeout, webhook_workers):
    """Targets live on 127.0.0.1: the guard lets tests (never production) reach it."""
    app_config["CHAT_FETCH_ALLOW_LOOPBACK"] = True
    app_config["CHAT_WEBHOOK_TIMEOUT"] = webhook_timeout
    app_config["CHAT_WEBHOOK_WORKERS"] = webhook_workers


@pytest.fixture(autouse=True)
def _stop_callers(_bot_settings, app):
    """The outgoing webhooks' threads end with the test (before the app's committer)."""
    yield
    dispatcher_of(app).stop()


class Target:
    """A webhook receiver on 127.0.0.1: records each POST, answers as ``behaviour`` says."""

    def __init__(self, behaviour, answer=b'{"text": "pong"}'):
        self.behaviour, self.answer = behaviour, answer
        self.requests = []  # (headers, body), in order of arrival
        self.arrived = threading.Event()
        self.release = threading.Event()  # Lets a hanging answer go.
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                target.requests.append((dict(self.headers), body))
                target.arrived.set()
                target.respond(self)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?key=abc"

    def respond(self, handler):
        if self.behaviour == "hang":
            self.release.wait(30)
        if self.behaviour == "redirect":
            handler.send_response(302)
            handler.send_header("Location", "http://10.0.0.1/")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        status = {"error": 500, "silent": 204}.get(self.behaviour, 200)
        body = b"" if status == 204 else self.answer
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def target():
    """``target(behaviour, answer)``: a receiver, closed at the end of the test."""
    made = []

    def make(behaviour="pong", answer=b'{"text": "pong"}'):
        made.append(Target(behaviour, answer))
        return made[-1]

    yield make
    for each in made:
        each.close()


def make_bot(app, name, room_id, url=""):
    """``(bot's user id, incoming secret, signing secret)``."""
    with app.app_context():
        bot, made = manage.create(name, room_id, url, None)
        return bot.user_id, made.hook, made.outgoing


def hook(live_server, secret, data=None, form=None, raw=None, content_type=None):
    """POST to a bot's webhook on the live server: ``(status, headers, JSON answer)``."""
    if form is not None:
        body, content_type = urlencode(form).encode(), "application/x-www-form-urlencoded"
    elif data is not None:
        body, content_type = json.dumps(data).encode(), "application/json"
    else:
        body = raw
    host, port = live_server.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request("POST", f"/hooks/{secret}", body, headers)
        response = connection.getresponse()
        return response.status, response.headers, json.loads(response.read() or b"null")
    finally:
        connection.close()


def message_count(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Message))


def bot_row(app, user_id):
    with app.app_context():
        bot = db.session.get(Bot, user_id)
        if bot is not None:
            db.session.expunge(bot)
        return bot


def last_error(app, user_id):
    """The bot's recorded failure, once there is one."""
    wait_until(lambda: bot_row(app, user_id).last_error, f"bot {user_id} to record a failure")
    return bot_row(app, user_id)


def admin_client(app, user_id, email="alice@example.com"):
    with app.app_context():
        db.session.get(User, user_id).role = ADMIN
        db.session.commit()
    client = app.test_client()
    assert login(client, email).status_code == 302
    return client


def post_on_page(client, path, data=None):
    """POST an admin form with the page's CSRF token; the admin page it redirects to."""
    token = csrf_token(client.get("/admin/"))
    response = client.post(path, data={**(data or {}), "csrf_token": token})
    assert response.status_code == 302, response.text
    return client.get("/admin/")


def private_room(app, owner, name="ops"):
    with app.app_context():
        return rooms.create_room(name, owner, private=True).id


def png():
    data = io.BytesIO()
    Image.new("RGB", (64, 40), (200, 30, 30)).save(data, "PNG")
    return data.getvalue()


# ---- Accounts --------------------------------------------------------------------------------


@pytest.mark.database
def test_a_bot_is_an_account_no_one_logs_in_to(app, live_server, general, alice):
    bot_id, _, _ = make_bot(app, "Deploy bot", general)
    with app.app_context():
        user = db.session.get(User, bot_id)
        assert user.is_bot
        assert user.role == "member"
        assert user.name == "Deploy bot"
        assert re.fullmatch(r"bot-[0-9a-f]{16}@bots\.invalid", user.email)
        assert not user.check_password("")
        assert not user.check_password("!bot")
        assert rooms.is_member(general, bot_id)
        email = user.email
    client = app.test_client()
    for password in (PASSWORD, "!bot", "x"):
        page = login(client, email, password)
        assert page.status_code == 401  # As a wrong password: nothing says it exists.
        assert "Invalid email or password." in page.text
    assert client.get("/api/token").status_code == 401  # No session came of it.
    answer = client.post("/api/token", json={"email": email, "password": "!bot"})
    assert answer.status_code == 401
    assert answer.json["error"] == "invalid_credentials"
    # A token signed for it anyway (a leaked key, a bug elsewhere) opens no socket.
    token = token_issued_at(app, bot_id)
    assert rejected(live_server, f"?token={token}").status_code == 401


# ---- Incoming --------------------------------------------------------------------------------


def test_incoming_json_and_slack_payloads_reach_the_room_in_order(
    app, live_server, ws_connect, alice, general
):
    bot_id, secret, _ = make_bot(app, "Deploy bot", general)
    chat = ws_connect(alice)
    first = hook(live_server, secret, {"text": "build **42** is green"})
    slack = {"text": "second, Slack style", "username": "ignored", "icon_emoji": ":x:"}
    second = hook(live_server, secret, form={"payload": json.dumps(slack)})
    third = hook(live_server, secret, {"text": "third"})
    frames = [chat.recv_type("message") for _ in range(3)]
    assert [frame["text"] for frame in frames] == [
        "build **42** is green",
        "second, Slack style",
        "third",
    ]
    assert [answer[0] for answer in (first, second, third)] == [200, 200, 200]
    assert [frame["id"] for frame in frames] == [
        answer[2]["id"] for answer in (first, second, third)
    ]
    assert all(answer[2]["ok"] is True for answer in (first, second, third))
    assert frames[0]["id"] < frames[1]["id"] < frames[2]["id"]
    for frame in frames:
        assert frame["bot"] is True
        assert (frame["user_id"], frame["user"], frame["room"]) == (bot_id, "Deploy bot", "general")
    assert "<strong>42</strong>" in frames[0]["html"]
    # The mention picker lists the bot with the room's people.
    chat.send({"type": "members", "room": "general"})
    members = chat.recv_type("members")["members"]
    assert bot_id in [person["id"] for person in members]


@pytest.mark.database
def test_a_retried_client_id_is_stored_and_sent_once(app, live_server, ws_connect, alice, general):
    _, secret, _ = make_bot(app, "CI", general)
    chat = ws_connect(alice)
    status, _, first = hook(live_server, secret, {"text": "deployed", "client_id": "run-7"})
    assert status == 200
    assert chat.recv_type("message")["id"] == first["id"]
    status, _, again = hook(live_server, secret, {"text": "deployed", "client_id": "run-7"})
    assert (status, again) == (200, {"ok": True, "id": first["id"]})
    chat.assert_nothing_sent()
    assert message_count(app) == 1


def test_each_refusal_is_a_precise_json_answer_and_stores_nothing(
    app, live_server, ws_connect, alice, general
):
    _, secret, _ = make_bot(app, "CI", general)
    chat = ws_connect(alice)
    too_long = "x" * (app.config["CHAT_MAX_MESSAGE_CHARS"] + 1)
    cases = [
        (hook(live_server, "nope" + secret), 404, "not_found"),
        (hook(live_server, "x" * 300), 404, "not_found"),
        (hook(live_server, secret, raw=b"not json", content_type="application/json"), 400, None),
        (hook(live_server, secret, raw=b"plain words", content_type="text/plain"), 400, None),
        (hook(live_server, secret, ["a", "list"]), 400, "bad_request"),
        (hook(live_server, secret, {"message": "no text field"}), 400, "bad_request"),
        (hook(live_server, secret, {"text": 42}), 400, "bad_request"),
        (hook(live_server, secret, {"text": "ok", "client_id": 7}), 400, "bad_request"),
        (hook(live_server, secret, {"text": "   "}), 400, "empty"),
        (hook(live_server, secret, {"text": "bell \x07"}), 400, "bad_text"),
        (hook(live_server, secret, {"text": too_long}), 413, "too_long"),
        (hook(live_server, secret, form={"text": "not a payload"}), 400, "bad_request"),
        (hook(live_server, secret, form={"payload": "{not json"}), 400, "bad_request"),
        (
            hook(live_server, secret, raw=b'{"text": "' + b"y" * 70_000 + b'"}',
                 content_type="application/json"),
            413,
            "too_large",
        ),
    ]  # fmt: skip
    for (status, headers, body), expected, code in cases:
        assert status == expected, body
        assert headers["Content-Type"] == "application/json"
        assert body["error"] == (code or "bad_request")
    assert message_count(app) == 0
    chat.assert_nothing_sent()
    # Programs get JSON for any other mistake too.
    answer = app.test_client().get(f"/hooks/{secret}")
    assert answer.status_code == 405
    assert answer.json["error"] == "method_not_allowed"


@pytest.mark.database
def test_the_room_archived_deleted_or_left_refuses_the_hook(app, live_server, alice):
    room_id = private_room(app, alice)
    bot_id, secret, _ = make_bot(app, "CI", room_id)
    with app.app_context():
        room = db.session.get(Room, room_id)
        rooms.set_archived(room, True, alice)
    status, _, body = hook(live_server, secret, {"text": "hi"})
    assert (status, body["error"]) == (409, "archived")
    with app.app_context():
        room = db.session.get(Room, room_id)
        rooms.set_archived(room, False, alice)
        db.session.execute(db.delete(Membership).where(Membership.user_id == bot_id))
        db.session.commit()
    status, _, body = hook(live_server, secret, {"text": "hi"})
    assert (status, body["error"]) == (403, "forbidden")  # Taken out of its room by hand.
    with app.app_context():
        rooms.delete_room(db.session.get(Room, room_id), None)
    assert bot_row(app, bot_id).room_id is None
    status, _, body = hook(live_server, secret, {"text": "hi"})
    assert (status, body["error"]) == (410, "gone")
    assert message_count(app) == 0


def test_the_bots_message_rate_applies(app, live_server, general):
    _, secret, _ = make_bot(app, "Chatty", general)
    app.config["CHAT_MESSAGE_BURST"] = 2
    assert hook(live_server, secret, {"text": "1"})[0] == 200
    assert hook(live_server, secret, {"text": "2"})[0] == 200
    status, headers, body = hook(live_server, secret, {"text": "3"})
    assert (status, body["error"]) == (429, "rate_limited")
    assert int(headers["Retry-After"]) >= 1
    assert message_count(app) == 2


# ---- Outgoing --------------------------------------------------------------------------------


def test_a_mention_calls_the_bot_signed_and_its_answer_is_the_reply(
    app, live_server, ws_connect, alice, general, target
):
    pong = target()
    bot_id, _, signing = make_bot(app, "Echo", general, pong.url)
    assert signing
    chat = ws_connect(alice)
    chat.send({"type": "message", "text": f"ping <@{bot_id}>", "client_id": "m1"})
    mention = chat.recv_type("message")
    reply = chat.recv_type("message")
    assert (reply["text"], reply["bot"], reply["user_id"]) == ("pong", True, bot_id)
    assert reply["reply_to"]["id"] == mention["id"]
    ((headers, body),) = pong.requests
    assert headers["Content-Type"] == "application/json"
    timestamp = headers["X-Chat-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    expected = hmac.new(signing.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(headers["X-Chat-Signature"], f"sha256={expected.hexdigest()}")
    sent = json.loads(body)
    assert sent["bot"] == {"id": bot_id, "name": "Echo"}
    assert sent["user"] == {"id": alice, "name": "alice"}
    assert sent["room"] == {"key": "general", "title": "general"}
    assert sent["message"]["id"] == mention["id"]
    assert sent["message"]["text"] == f"ping <@{bot_id}>"
    assert sent["message"]["mentions"] == [bot_id]
    assert bot_row(app, bot_id).last_error == ""


@pytest.mark.parametrize("webhook_workers", [1])  # Calls in the order of messages.
def test_a_bots_own_messages_and_silent_answers_call_nobody_back(
    app, live_server, ws_connect, alice, general, target
):
    pong, quiet = target(), target("silent")
    echo, secret, _ = make_bot(app, "Echo", general, pong.url)
    silent, _, _ = make_bot(app, "Quiet", general, quiet.url)
    chat = ws_connect(alice)
    # A bot mentioning a bot calls nobody: no loop between two bots.
    hook(live_server, secret, {"text": f"hey <@{echo}> and <@{silent}>"})
    chat.recv_type("message")
    chat.send({"type": "message", "text": f"<@{silent}> then <@{echo}>"})
    chat.recv_type("message")
    assert chat.recv_type("message")["text"] == "pong"
    assert len(pong.requests) == 1
    wait_until(lambda: quiet.requests, "the quiet bot's call")
    assert bot_row(app, silent).last_error == ""  # 204: no reply wanted, not a failure.
    chat.assert_nothing_sent()


@pytest.mark.parametrize("webhook_timeout", [1.5])
def test_a_target_that_hangs_gives_up_alone_after_the_timeout(
    app, live_server, ws_connect, alice, general, target
):
    stuck, pong = target("hang"), target()
    slow, _, _ = make_bot(app, "Slow", general, stuck.url)
    quick, _, _ = make_bot(app, "Quick", general, pong.url)
    chat = ws_connect(alice)
    sent = time.monotonic()
    chat.send({"type": "message", "text": f"<@{slow}> <@{quick}> status?"})
    chat.recv_type("message")
    assert stuck.arrived.wait(10)
    # The other bot answers, and the chat goes on, while the slow one is still waiting.
    reply = chat.recv_type("message")
    assert (reply["user_id"], reply["text"]) == (quick, "pong")
    chat.send({"type": "message", "text": "meanwhile"})
    assert chat.recv_type("message")["text"] == "meanwhile"
    assert not stuck.release.is_set()
    assert bot_row(app, slow).last_error == ""
    failed = last_error(app, slow)
    assert time.monotonic() - sent >= 1.5
    assert "timed out" in failed.last_error
    assert failed.last_error_at is not None
    stuck.release.set()
    chat.assert_nothing_sent()  # No reply from the slow bot, ever.
    assert len(stuck.requests) == 1  # Never retried.


@pytest.mark.parametrize(
    ("behaviour", "answer", "says"),
    [
        ("garbage", b"<html>\x00\xff not json", "not JSON"),
        ("garbage", b'{"reply": "no text field"}', 'no "text"'),
        ("garbage", b'["text"]', 'no "text"'),
        ("garbage", b'{"text": ""}', 'no "text"'),
        ("garbage", b'{"text": "' + b"z" * 70_000 + b'"}', "over 65536 bytes"),
        ("garbage", b'{"text": "' + b"z" * 3000 + b'"}', "too_long"),
        ("error", b'{"text": "sorry"}', "HTTP 500"),
    ],
)
def test_a_target_that_answers_garbage_is_a_recorded_failure(
    app, live_server, ws_connect, alice, general, target, behaviour, answer, says
):
    odd = target(behaviour, answer)
    bot_id, _, _ = make_bot(app, "Odd", general, odd.url)
    chat = ws_connect(alice)
    chat.send({"type": "message", "text": f"<@{bot_id}> hello"})
    chat.recv_type("message")
    assert says in last_error(app, bot_id).last_error
    chat.assert_nothing_sent()
    assert len(odd.requests) == 1


def test_a_redirect_to_a_private_address_is_refused_without_connecting(
    app, live_server, ws_connect, alice, general, target
):
    sly = target("redirect")
    bot_id, _, _ = make_bot(app, "Sly", general, sly.url)
    direct, _, _ = make_bot(app, "Direct", general, "http://169.254.169.254/latest/meta-data/")
    chat = ws_connect(alice)
    chat.send({"type": "message", "text": f"<@{bot_id}> <@{direct}> hello"})
    chat.recv_type("message")
    failed = last_error(app, bot_id).last_error
    assert failed.startswith("refused")
    assert "10.0.0.1" in failed
    failed = last_error(app, direct).last_error
    assert failed.startswith("refused")
    assert "169.254.169.254" in failed
    assert len(sly.requests) == 1  # The redirect itself; 10.0.0.1 was never tried.
    chat.assert_nothing_sent()


def test_loopback_is_refused_unless_the_tests_allow_it(
    app, live_server, ws_connect, alice, general, target
):
    pong = target()
    bot_id, _, _ = make_bot(app, "Echo", general, pong.url)
    app.config["CHAT_FETCH_ALLOW_LOOPBACK"] = False  # As in production.
    chat = ws_connect(alice)
    chat.send({"type": "message", "text": f"<@{bot_id}>"})
    chat.recv_type("message")
    assert last_error(app, bot_id).last_error.startswith("refused")
    assert pong.requests == []


# ---- The admin forms ---------------------------------------------------------------------------


def hook_url(page):
    match = re.search(r'id="bot-hook-url" class="new-link" value="([^"]+)"', page.text)
    return match.group(1) if match else None


def signing_secret(page):
    match = re.search(r'id="bot-signing-secret" class="new-link" value="([^"]+)"', page.text)
    return match.group(1) if match else None


def the_bot(app):
    with app.app_context():
        (bot,) = db.session.scalars(select(Bot)).all()
        db.session.expunge(bot)
        return bot


def test_an_administrator_creates_a_bot_and_sees_its_url_once(app, alice, general):
    admin = admin_client(app, alice)
    page = post_on_page(
        admin,
        "/admin/bots/",
        {"name": " Deploy   bot ", "room": str(general), "outgoing_url": "https://ci.example/hook"},
    )
    assert "The bot Deploy bot is made." in page.text
    url, signing = hook_url(page), signing_secret(page)
    assert url.startswith("http://localhost/hooks/")
    assert signing
    again = admin.get("/admin/")
    assert hook_url(again) is None
    assert signing_secret(again) is None
    assert url not in again.text
    assert signing not in again.text
    assert "https://ci.example/hook" in again.text
    bot = the_bot(app)
    assert bot.hook_hash == hashlib.sha256(url.rsplit("/", 1)[1].encode()).hexdigest()
    assert bot.outgoing_secret == signing
    answer = app.test_client().post(url.removeprefix("http://localhost"), json={"text": "hi"})
    assert answer.status_code == 200
    assert answer.json["ok"] is True
    with app.app_context():
        entry = db.session.scalars(select(AuditEntry)).one()
        assert (entry.actor_id, entry.action, entry.target_id) == (alice, "create_bot", bot.user_id)
    assert "Bot created" in again.text  # The audit log names it.


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"name": "  "}, "A bot needs a name."),
        ({"name": "n" * 41}, "at most 40 characters"),
        ({"name": "bell\x07"}, "control characters"),
        ({"room": "999"}, "Choose a room for the bot."),
        ({"room": "x"}, "Choose a room for the bot."),
        ({"outgoing_url": "javascript:alert(1)"}, "http:// or https://"),
        ({"outgoing_url": "ftp://files.example/"}, "http:// or https://"),
        ({"outgoing_url": "https://"}, "http:// or https://"),
        ({"outgoing_url": "https://a.example/" + "p" * 2048}, "http:// or https://"),
        ({"outgoing_url": "https://u:pw@a.example/"}, "user name or password"),
    ],
)
def test_the_create_form_refuses_bad_input_and_makes_nothing(app, alice, general, form, says):
    admin = admin_client(app, alice)
    page = post_on_page(admin, "/admin/bots/", {"name": "Bot", "room": str(general), **form})
    assert says in page.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Bot)) == 0
        assert db.session.scalar(select(func.count()).where(User.is_bot)) == 0


@pytest.mark.database
def test_an_administrator_renames_moves_and_routes_a_bot_in_one_save(app, alice, general):
    admin = admin_client(app, alice)
    ops = private_room(app, alice)
    bot_id, _, _ = make_bot(app, "CI", general)
    path = f"/admin/bots/{bot_id}"
    page = post_on_page(
        admin, path, {"name": "Builder", "room": str(ops), "outgoing_url": "javascript:x"}
    )
    assert "http:// or https://" in page.text
    with app.app_context():  # Nothing half-done: the valid name was not saved either.
        assert db.session.get(User, bot_id).name == "CI"
    page = post_on_page(
        admin, path, {"name": "Builder", "room": str(ops), "outgoing_url": "https://b.example/x"}
    )
    assert "The bot Builder is saved." in page.text
    assert signing_secret(page)  # The first URL comes with its signing secret.
    with app.app_context():
        assert db.session.get(User, bot_id).name == "Builder"
        assert rooms.is_member(ops, bot_id)
        assert not rooms.is_member(general, bot_id)
        assert db.session.get(Bot, bot_id).room_id == ops
    page = post_on_page(
        admin, path, {"name": "Builder", "room": str(ops), "outgoing_url": "https://b.example/x"}
    )
    assert "Nothing changed." in page.text
    page = post_on_page(admin, path, {"name": "Builder", "room": str(ops), "outgoing_url": ""})
    assert bot_row(app, bot_id).outgoing_url is None
    page = post_on_page(admin, f"{path}/signing")
    assert "Set an outgoing URL first." in page.text


def test_rotating_the_secret_kills_the_old_url(app, live_server, alice, general):
    admin = admin_client(app, alice)
    bot_id, old, _ = make_bot(app, "CI", general, "https://ci.example/")
    signing = bot_row(app, bot_id).outgoing_secret
    page = post_on_page(admin, f"/admin/bots/{bot_id}/rotate")
    new = hook_url(page).rsplit("/", 1)[1]
    assert new != old
    assert hook(live_server, old, {"text": "hi"})[0] == 404
    assert hook(live_server, new, {"text": "hi"})[0] == 200
    page = post_on_page(admin, f"/admin/bots/{bot_id}/signing")
    assert signing_secret(page) not in (None, signing)
    assert bot_row(app, bot_id).outgoing_secret == signing_secret(page)


@pytest.mark.database
def test_deleting_a_bot_keeps_its_messages_under_its_name(
    app, live_server, ws_connect, alice, general
):
    admin = admin_client(app, alice)
    bot_id, secret, _ = make_bot(app, "CI", general)
    assert hook(live_server, secret, {"text": "last words"})[0] == 200
    page = post_on_page(admin, f"/admin/bots/{bot_id}/delete")
    assert "The bot CI is deleted; its messages stay." in page.text
    assert bot_row(app, bot_id) is None
    with app.app_context():
        assert db.session.get(User, bot_id).deactivated_at is not None
        assert not rooms.is_member(general, bot_id)
    assert hook(live_server, secret, {"text": "again"})[0] == 404
    (shown,) = ws_connect(alice).hello["history"]
    assert (shown["text"], shown["user"], shown["bot"]) == ("last words", "CI", True)


def test_a_bots_picture_is_made_like_a_persons(app, live_server, ws_connect, alice, general):
    admin = admin_client(app, alice)
    bot_id, secret, _ = make_bot(app, "CI", general)
    token = csrf_token(admin.get("/admin/"))
    path = f"/admin/bots/{bot_id}/avatar"
    answer = admin.post(
        path, data={"csrf_token": token, "avatar": (io.BytesIO(b"GIF8 no"), "a.gif")}
    )
    assert "This file is not a picture" in admin.get("/admin/").text
    answer = admin.post(path, data={"avatar": (io.BytesIO(png()), "a.png")})
    assert answer.status_code == 302
    assert "did not come from this site" in admin.get("/admin/").text  # No CSRF token.
    answer = admin.post(path, data={"csrf_token": token, "avatar": (io.BytesIO(png()), "a.png")})
    assert answer.status_code == 302
    with app.app_context():
        picture = db.session.get(User, bot_id).avatar_url
    assert picture
    assert picture in admin.get("/admin/").text
    chat = ws_connect(alice)
    hook(live_server, secret, {"text": "with a face"})
    assert chat.recv_type("message")["avatar_url"] == picture


def test_only_administrators_reach_the_bot_forms(app, alice, bob, general):
    bot_id, _, _ = make_bot(app, "CI", general)
    admin_client(app, alice)
    member = app.test_client()
    login(member, "bob@example.com")
    token = csrf_token(member.get("/profile"))
    paths = [
        "/admin/bots/",
        f"/admin/bots/{bot_id}",
        f"/admin/bots/{bot_id}/rotate",
        f"/admin/bots/{bot_id}/signing",
        f"/admin/bots/{bot_id}/avatar",
        f"/admin/bots/{bot_id}/delete",
    ]
    outsider = app.test_client()
    for path in paths:
        data = {"csrf_token": token, "name": "Mine", "room": str(general)}
        assert member.post(path, data=data).status_code == 403, path
        answered = outsider.post(path, data=data)
        assert answered.status_code in (302, 400), path
    assert bot_row(app, bot_id) is not None
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Bot)) == 1
        assert db.session.get(User, bot_id).name == "CI"
    assert member.get("/admin/").status_code == 403


def test_a_failure_is_shown_on_the_admin_page(app, live_server, ws_connect, alice, general, target):
    odd = target("garbage", b"nope")
    bot_id, _, _ = make_bot(app, "Odd", general, odd.url)
    chat = ws_connect(alice)
    chat.send({"type": "message", "text": f"<@{bot_id}>"})
    chat.recv_type("message")
    failed = last_error(app, bot_id)
    page = admin_client(app, alice).get("/admin/")
    assert failed.last_error in page.text.replace("&#34;", '"')


def test_no_secret_reaches_the_logs(app, live_server, ws_connect, alice, general, target, caplog):
    caplog.set_level("INFO")
    odd = target("garbage", b"nope")
    bot_id, secret, signing = make_bot(app, "Odd", general, odd.url)
    assert hook(live_server, secret, {"text": "hello"})[0] == 200
    chat = ws_connect(alice)
    chat.send({"type": "message", "text": f"<@{bot_id}> private words"})
    last_error(app, bot_id)
    wait_until(lambda: "/hooks/[redacted]" in caplog.text, "the hook's request line")
    assert "not JSON" in caplog.text  # The failure is logged…
    for kept in (secret, signing, "key=abc", "private words"):
        assert kept not in caplog.text  # …without the secrets, the target's query, the text.
