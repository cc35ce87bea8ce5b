"""Security and fault behaviour: origins, revocation, throttling, floods, heartbeats, shutdown."""

import contextlib
import json
import logging
import os
import signal
import threading
import time

import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from werkzeug.serving import make_server

from accounts import views as accounts
from config import Config
from core.throttle import MessageWindows
from extensions import db
from helpers import (
    PASSWORD,
    ChatClient,
    assert_refused,
    csrf_token,
    login,
    raw_socket_that_never_reads,
    rejected,
    shown_in,
    token_issued_at,
    wait_until,
)
from models import User
from realtime.runtime import runtime_of


def socket_url(app, server, user_id):
    return f"ws://{server}/ws?token={token_issued_at(app, user_id)}"


def closed_with(ws, code, timeout=5):
    """Read until the server closes the socket; assert its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        read_until_closed(ws, timeout)
    assert closed.value.rcvd is not None, "closed without a close frame"
    assert closed.value.rcvd.code == code


def read_until_closed(ws, timeout):
    """Discard frames until the socket closes (raises) or ``timeout`` passes (returns)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws.recv(timeout=timeout)


# ---- Origin ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("{own}", True),
        ("https://chat.example", True),  # In CHAT_ALLOWED_ORIGINS.
        (None, True),  # Postman, scripts: no Origin, but a valid token.
        ("https://evil.example", False),
        ("https://chat.example.evil.example", False),
        ("https://chat.example/", False),  # Exact matches only.
        ("HTTPS://CHAT.EXAMPLE", False),
        ("null", False),
        ("http://127.0.0.1:1", False),  # Same host, another port.
    ],
)
def test_origin_is_checked_before_the_upgrade(
    app, live_server, ws_connect, make_user, alice, bob, origin, allowed
):
    app.config["CHAT_ALLOWED_ORIGINS"] = ("https://chat.example",)
    watcher = ws_connect(bob)
    headers = {} if origin is None else {"Origin": origin.format(own=f"http://{live_server}")}
    url = socket_url(app, live_server, alice)
    if allowed:
        with connect(url, additional_headers=headers, origin=None, open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        return
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers=headers, open_timeout=5)
    response = refused.value.response
    assert response.status_code == 403
    assert json.loads(response.body) == {
        "error": "forbidden_origin",
        "message": "This origin may not open the chat socket.",
    }
    # The marker: carol's arrival, noted after anything the refused socket could have noted.
    # The frames up to it name nobody else (bob himself, if his arrival was still in the batch).
    carol = make_user("carol@example.com")[0]
    ws_connect(carol)
    online, offline = shown_in(watcher.await_presence(online=[carol]))
    assert (online - {bob}, offline) == ({carol}, set())


def test_no_origin_still_needs_a_token(live_server):
    assert_refused(rejected(live_server), "missing_token")


# ---- Revocation --------------------------------------------------------------------------------


@pytest.mark.database
def test_logout_revokes_tokens_and_closes_open_sockets_with_4001(app, client, live_server, alice):
    login(client)
    token = client.get("/api/token").json["token"]
    url = f"ws://{live_server}/ws?token={token}"
    with connect(url, open_timeout=5) as first, connect(url, open_timeout=5) as second:
        first.recv(timeout=5)
        second.recv(timeout=5)
        client.post("/logout", data={"csrf_token": csrf_token(client.get("/"))})
        closed_with(first, 4001)
        closed_with(second, 4001)
    assert_refused(rejected(live_server, f"?token={token}"), "invalid_token")


@pytest.mark.database
def test_logout_everywhere_ends_every_session(app, live_server, alice):
    laptop, phone = app.test_client(), app.test_client()
    login(laptop)
    login(phone)
    laptop.post("/logout-everywhere", data={"csrf_token": csrf_token(laptop.get("/"))})
    assert phone.get("/").status_code == 302
    assert phone.get("/api/token").status_code == 401


# ---- Tokens never in logs ----------------------------------------------------------------------


def test_a_whole_session_logs_no_token(app, client, live_server, alice, bob, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = [
        client.post("/api/token", json={"email": "alice@example.com", "password": PASSWORD}).json[
            "token"
        ]
    ]
    login(client)
    tokens.append(client.get("/api/token").json["token"])
    page_token = client.get("/").text.split('data-token="', 1)[1].split('"', 1)[0]
    tokens.append(page_token)
    for token in tokens:
        with connect(f"ws://{live_server}/ws?token={token}", open_timeout=5) as ws:
            ws.recv(timeout=5)
            ws.send("hello")
            ws.send(b"binary")
            ws.send('{"type": "nope"}')
            for _ in range(3):
                ws.recv(timeout=5)
    rejected(live_server, f"?token={tokens[0]}x")

    def server_records():
        """The server's records only: the test's own WebSocket client logs its request line."""
        return "\n".join(
            r.getMessage() for r in caplog.records if not r.name.startswith("websockets")
        )

    def request_lines():
        return server_records().count("GET /ws?token=[redacted] HTTP/1.1")

    # Each request line is logged when its handler returns, which may be after the socket
    # closed: wait for all four (three sockets, one refusal).
    wait_until(lambda: request_lines() == len(tokens) + 1, "every request line")
    server_log = server_records()
    assert "token=[redacted]" in server_log
    for token in tokens:
        assert token[:40] not in server_log


# ---- Login abuse -------------------------------------------------------------------------------


def test_token_requests_are_throttled_per_email(app, client, alice):
    app.config["CHAT_LOGIN_LIMIT_PER_EMAIL"] = "3 per minute"
    for _ in range(3):
        body = {"email": "alice@example.com", "password": "wrong"}
        assert client.post("/api/token", json=body).status_code == 401
    response = client.post("/api/token", json={"email": "ALICE@example.com", "password": PASSWORD})
    assert response.status_code == 429
    assert response.json["error"] == "rate_limited"
    assert int(response.headers["Retry-After"]) > 0
    other = client.post("/api/token", json={"email": "bob@example.com", "password": "wrong"})
    assert other.status_code == 401  # Another account is not locked out.


def test_the_form_and_the_api_share_one_budget(app, client, alice):
    app.config["CHAT_LOGIN_LIMIT_PER_EMAIL"] = "2 per minute"
    client.post("/api/token", json={"email": "alice@example.com", "password": "wrong"})
    login(client, password="wrong")
    response = login(client)
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    assert "Too Many Requests" in response.text


def test_logins_are_throttled_per_address(app, client):
    app.config["CHAT_LOGIN_LIMIT_PER_IP"] = "4 per minute"
    statuses = [
        client.post("/api/token", json={"email": f"u{n}@example.com", "password": "x"}).status_code
        for n in range(6)
    ]
    assert statuses == [401, 401, 401, 401, 429, 429]


def test_unknown_emails_cost_a_hash_check_like_known_ones(app, client, alice, monkeypatch):
    checks = []
    real = accounts.check_password_hash
    monkeypatch.setattr(accounts, "check_password_hash", lambda *a: checks.append(a) or real(*a))
    client.post("/api/token", json={"email": "nobody@example.com", "password": PASSWORD})
    assert len(checks) == 1


def test_passwords_are_hashed_at_owasp_strength(app_config, make_app):
    app = make_app({**app_config, "CHAT_PASSWORD_HASH": Config.CHAT_PASSWORD_HASH})
    with app.app_context():
        user = User(email="a@example.com")
        user.set_password("correct horse battery")
    assert user.password_hash.startswith("scrypt:131072:8:1$")
    assert user.check_password("correct horse battery")


def test_login_cookies_are_http_only_and_same_site_lax(client, alice):
    response = login(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_rate_limits_are_shared_through_redis_when_configured(app_config, make_app, redis_url):
    app = make_app(
        {**app_config, "REDIS_URL": redis_url, "CHAT_LOGIN_LIMIT_PER_IP": "2 per minute"}
    )
    assert app.config["RATELIMIT_STORAGE_URI"] == redis_url
    with app.app_context():
        db.create_all()
    first, second = app.test_client(), app.test_client()
    body = {"email": "x@example.com", "password": "x"}
    assert first.post("/api/token", json=body).status_code == 401
    assert second.post("/api/token", json=body).status_code == 401
    assert first.post("/api/token", json=body).status_code == 429


# ---- Floods ------------------------------------------------------------------------------------


def test_a_flood_gets_rate_limited_and_others_are_unaffected(app, ws_connect, alice, bob):
    app.config.update(CHAT_MESSAGE_BURST=3, CHAT_MESSAGE_RATE=1)
    a, b = ws_connect(alice), ws_connect(bob)
    a.await_presence(online=[bob])
    b.settle_presence()
    for n in range(6):
        a.send({"type": "message", "text": f"m{n}", "client_id": f"c{n}"})
    answers = [a.recv() for _ in range(6)]
    assert [f["type"] for f in answers].count("message") == 3
    errors = [f for f in answers if f["type"] == "error"]
    assert {f["code"] for f in errors} == {"rate_limited"}
    assert all(f["retry_after"] > 0 and f["client_id"] for f in errors)
    assert [b.recv()["text"] for _ in range(3)] == ["m0", "m1", "m2"]
    b.send("bob is fine")
    # Bob's next frame, stored after alice's: none of the refused ones reached him.
    assert b.recv()["text"] == "bob is fine"
    assert a.recv()["text"] == "bob is fine"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_message_windows_allow_a_burst_per_window_and_forget_idle_users():
    clock = FakeClock()
    windows = MessageWindows(clock)
    # Burst 3 in a 2-second window (3 at 2 a second, rounded): at most 3 in any 2 seconds.
    assert [windows.wait(1, 3, 2) for _ in range(3)] == [0, 0, 0]
    assert windows.wait(1, 3, 2) == pytest.approx(2.0)  # When the oldest leaves the window.
    assert windows.wait(2, 3, 2) == 0  # Another user has a window of their own.
    clock.now += 1.5
    assert windows.wait(1, 3, 2) == pytest.approx(0.5)  # Refusals are not counted.
    clock.now += 0.5
    assert [windows.wait(1, 3, 2) for _ in range(4)] == [0, 0, 0, pytest.approx(2.0)]
    # Users with nothing in their window are forgotten once there are many: memory follows
    # active users.
    for user in range(3, 1_001):
        windows.wait(user, 3, 2)
    assert len(windows) == 1_000
    clock.now += 10
    windows.wait(5_000, 3, 2)
    assert len(windows) == 1


def test_sustained_flood_closes_with_4029_and_spares_everyone_else(
    app, live_server, ws_connect, alice, bob
):
    app.config.update(CHAT_MESSAGE_BURST=2, CHAT_MESSAGE_RATE=0.1, CHAT_FLOOD_STRIKES=5)
    b = ws_connect(bob)
    with connect(socket_url(app, live_server, alice), open_timeout=5) as flooder:
        flooder.recv(timeout=5)
        for n in range(20):
            try:
                flooder.send(f"spam {n}")
            except ConnectionClosed:
                break
        closed_with(flooder, 4029)
    texts = []
    while True:
        frame = b.recv()
        if frame["type"] == "presence" and frame["offline"]:
            break
        if frame["type"] == "message":
            texts.append(frame["text"])
    assert texts == ["spam 0", "spam 1"]
    b.send("still working")
    assert b.recv_type("message")["text"] == "still working"


def test_sockets_per_user_are_capped(app, live_server, ws_connect, alice):
    app.config["CHAT_MAX_SOCKETS_PER_USER"] = 2
    ws_connect(alice)
    ws_connect(alice)
    response = rejected(live_server, f"?token={token_issued_at(app, alice)}")
    assert response.status_code == 429
    assert json.loads(response.body)["error"] == "too_many_sockets"


def test_a_full_server_refuses_sockets_until_one_closes(app, live_server, ws_connect, make_user):
    app.config["CHAT_MAX_SOCKETS"] = 2
    alice, bob, carol = (make_user(f"{name}@example.com")[0] for name in ("alice", "bob", "carol"))
    ws_connect(alice)
    leaving = ws_connect(bob)
    response = rejected(live_server, f"?token={token_issued_at(app, carol)}")
    assert response.status_code == 503
    assert json.loads(response.body)["error"] == "server_full"
    leaving.ws.close()
    wait_until(lambda: len(runtime_of(app).poller) == 1, "the server to let go of bob's socket")
    assert ws_connect(carol).hello["type"] == "hello"


def test_idle_sockets_under_gunicorn_hold_no_thread_each(app, gunicorn_server, make_user):
    # gunicorn runs 20 threads here: before the poller, the 21st socket waited for a thread.
    users = [make_user(f"user{n}@example.com")[0] for n in range(60)]
    host = gunicorn_server.url.removeprefix("http://")
    with contextlib.ExitStack() as stack:
        clients = []
        for user in users:
            ws = stack.enter_context(connect(socket_url(app, host, user), open_timeout=5))
            clients.append(ChatClient(ws))
            assert clients[-1].recv()["type"] == "hello"
        worker = psutil.Process(gunicorn_server.worker_of(clients[0].ws))
        assert worker.num_threads() < len(users)
        clients[0].send("to all sixty")
        for client in clients:
            assert client.recv_type("message")["text"] == "to all sixty"


# ---- Faults ------------------------------------------------------------------------------------


def test_a_peer_that_stops_answering_pings_is_dropped_and_leaves(
    app, app_config, make_app, make_user
):
    quick = make_app({**app_config, "CHAT_PING_INTERVAL": 1})  # Shares the database of ``app``.
    alice_id, bob_id = make_user("alice@example.com")[0], make_user("bob@example.com")[0]
    server = make_server("127.0.0.1", 0, quick, threaded=True)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    host = f"127.0.0.1:{server.port}"
    try:
        with connect(socket_url(quick, host, bob_id), open_timeout=5) as raw:
            bob = ChatClient(raw)
            bob.recv_type("hello")
            dead = raw_socket_that_never_reads(host, token_issued_at(quick, alice_id))
            bob.await_presence(online=[alice_id])
            started = time.monotonic()
            assert bob.recv(timeout=5) == {
                "type": "presence",
                "room": "general",
                "online": [],
                "offline": [{"user_id": alice_id, "user": "alice"}],
                "count": 1,
            }
            assert time.monotonic() - started < 2 * 1 + 1  # Two ping intervals, plus slack.
            dead.close()
    finally:
        server.shutdown()
        server.server_close()


def upgraded_raw_socket(host, token):
    """``raw_socket_that_never_reads``, once its 101 has come: frames sent before it are not
    allowed (RFC 6455), and Werkzeug would swallow them."""
    sock = raw_socket_that_never_reads(host, token)
    sock.settimeout(10)
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1024)
    assert response.startswith(b"HTTP/1.1 101")
    return sock


def send_until_refused(sock, data, times):
    """Send ``data`` up to ``times`` times (a TimeoutError: nobody reads the socket any more)."""
    for _ in range(times):
        sock.sendall(data)


def test_a_peer_that_pings_and_never_reads_is_cut_off_and_blocks_nobody(
    app, app_config, make_app, make_user
):
    # One pool thread: had a pong write waited on the pinger, Bob would wait with it.
    one = make_app({**app_config, "CHAT_SERVE_THREADS": 1})
    alice_id, bob_id = make_user("alice@example.com")[0], make_user("bob@example.com")[0]
    server = make_server("127.0.0.1", 0, one, threaded=True)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    host = f"127.0.0.1:{server.port}"
    mask = os.urandom(4)
    payload = bytes(b ^ mask[n % 4] for n, b in enumerate(b"p" * 125))
    pings = (bytes([0x89, 0x80 | 125]) + mask + payload) * 100  # Masked, as from a client.
    try:
        with connect(socket_url(one, host, bob_id), open_timeout=5) as raw:
            bob = ChatClient(raw)
            bob.recv_type("hello")
            with (
                upgraded_raw_socket(host, token_issued_at(one, alice_id)) as pinger,
                pytest.raises(ConnectionError),  # Cut off: reset or broken pipe.
            ):
                send_until_refused(pinger, pings, 2_000)  # At most 26 MB; 1 MB does.
            bob.send({"type": "message", "text": "still served", "client_id": "b1"})
            assert bob.recv_type("message")["text"] == "still served"
    finally:
        server.shutdown()
        server.server_close()


def test_sigterm_closes_every_socket_with_1001(app, gunicorn_server, alice):
    host = gunicorn_server.url.removeprefix("http://")
    with connect(socket_url(app, host, alice), open_timeout=5) as ws:
        ws.recv(timeout=5)
        os.kill(gunicorn_server.process.pid, signal.SIGTERM)
        closed_with(ws, 1001)
    assert gunicorn_server.process.wait(8) == 0  # It did not wait out its graceful timeout.


def change_password(client, current, new, confirm=None):
    token = csrf_token(client.get("/password"))
    data = {"current": current, "password": new, "confirm": confirm or new, "csrf_token": token}
    return client.post("/password", data=data)


@pytest.mark.database
def test_password_change_revokes_everything_else(app, live_server, alice):
    laptop, phone = app.test_client(), app.test_client()
    login(laptop)
    login(phone)
    token = phone.get("/api/token").json["token"]
    with connect(f"ws://{live_server}/ws?token={token}", open_timeout=5) as ws:
        ws.recv(timeout=5)
        response = change_password(laptop, PASSWORD, "a brand new passphrase")
        assert response.status_code == 302
        closed_with(ws, 4001)
    assert laptop.get("/").status_code == 200  # This browser stays signed in...
    assert phone.get("/").status_code == 302  # ...every other session ended.
    assert_refused(rejected(live_server, f"?token={token}"), "invalid_token")
    with app.app_context():
        assert db.session.get(User, alice).check_password("a brand new passphrase")


@pytest.mark.parametrize(
    ("current", "new", "confirm", "error"),
    [
        ("wrong password", "a brand new passphrase", None, "This is not your current password."),
        (PASSWORD, "short", None, "at least 8 characters"),
        (PASSWORD, PASSWORD, None, "must differ from the current one"),
        (PASSWORD, "a brand new passphrase", "something else", "The passwords do not match."),
    ],
)
def test_password_change_explains_what_is_wrong(app, client, alice, current, new, confirm, error):
    login(client)
    response = change_password(client, current, new, confirm)
    assert response.status_code == 400
    assert error in response.text
    with app.app_context():
        assert db.session.get(User, alice).check_password(PASSWORD)


def test_a_worker_told_to_stop_refuses_new_sockets_and_closes_open_ones(
    app, live_server, ws_connect, alice, bob
):
    # After SIGTERM a socket that still reached this worker would never get its 1001.
    open_one = ws_connect(alice)
    runtime_of(app).close_sockets()
    with pytest.raises(ConnectionClosed) as closed:
        open_one.recv_type("never")
    assert closed.value.rcvd.code == 1001
    response = rejected(live_server, f"?token={token_issued_at(app, bob)}")
    assert response.status_code == 503
    assert json.loads(response.body)["error"] == "unavailable"
