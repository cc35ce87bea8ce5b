"""``GET /metrics``: who may read it, and that its counters move as the chat does.

Prometheus's metrics live once per process, and a test process makes many apps: every check
compares a scrape with one taken before, never with an absolute value.
"""

import json
import os
import runpy
import signal
import threading
import urllib.request
from contextlib import ExitStack
from types import SimpleNamespace
from unittest import mock

import pytest
import redis
from gunicorn.config import Config as GunicornConfig
from websockets.sync.client import connect

from helpers import (
    ROOT,
    ChatClient,
    GunicornServer,
    moved,
    parse,
    raw_socket_that_never_reads,
    scrape_client,
    token_issued_at,
    value,
    wait_until,
)
from realtime.runtime import runtime_of


def scrape_url(url):
    """Scrape a live server."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # noqa: S310 - loopback
        assert response.status == 200
        return parse(response.read().decode())


@pytest.fixture
def metrics_config(app_config):
    """Metrics on, for the app and any gunicorn started from its settings."""
    app_config["CHAT_METRICS"] = True
    return app_config


# ---- Who may read them ---------------------------------------------------------------------


def test_metrics_are_off_unless_enabled(client):
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"


def test_metrics_in_the_text_format_without_a_session_or_login(metrics_config, client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "Set-Cookie" not in response.headers
    assert ("chat_messages_stored_total", frozenset()) in parse(response.text)


def test_only_allowed_addresses_may_read_them(metrics_config, make_app):
    metrics_config["CHAT_METRICS_ALLOW"] = ("10.1.2.0/24",)
    client = make_app(metrics_config).test_client()
    refused = client.get("/metrics")  # From 127.0.0.1.
    assert refused.status_code == 403
    assert refused.json["error"] == "forbidden"
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    mapped = {"REMOTE_ADDR": "::ffff:10.1.2.3"}
    assert client.get("/metrics", environ_base=mapped).status_code == 200


def test_behind_a_proxy_both_the_peer_and_the_client_must_be_allowed(metrics_config, make_app):
    metrics_config["CHAT_PROXY_HOPS"] = 1
    client = make_app(metrics_config).test_client()  # Allows 127.0.0.1 and ::1.
    local = {"X-Forwarded-For": "127.0.0.1"}
    assert client.get("/metrics", headers=local).status_code == 200
    # The public site forwards someone else's request: refused, though nginx is local.
    assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    # A remote peer that claims to forward a local client: refused.
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/metrics", headers=local, environ_base=remote).status_code == 403


def test_an_invalid_allow_list_refuses_to_start(metrics_config, make_app):
    metrics_config["CHAT_METRICS_ALLOW"] = ("127.0.0.1", "localhost")
    with pytest.raises(RuntimeError, match="CHAT_METRICS_ALLOW: 'localhost'"):
        make_app(metrics_config)


# ---- Requests, logins, rate limits ---------------------------------------------------------


@pytest.fixture
def metrics_app(metrics_config, app):
    """The suite's app, with metrics on (``app`` is made from the settings this changed)."""
    return app


def test_requests_login_failures_and_refusals_are_counted(metrics_app, alice):
    metrics_app.config["CHAT_LOGIN_LIMIT_PER_EMAIL"] = "2 per minute"
    client = metrics_app.test_client()
    before = scrape_client(client)
    assert client.get("/login").status_code == 200
    wrong = {"email": "alice@example.com", "password": "wrong password"}
    statuses = [client.post("/api/token", json=wrong).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    after = scrape_client(client)
    assert moved(before, after, "chat_http_requests_total", status="200") == 1
    assert moved(before, after, "chat_http_requests_total", status="401") == 2
    assert moved(before, after, "chat_http_requests_total", status="429") == 1
    assert moved(before, after, "chat_http_request_duration_seconds_count") == 4
    assert moved(before, after, "chat_login_failures_total") == 2
    assert moved(before, after, "chat_rate_limited_total", kind="login") == 1


def test_refused_messages_and_frames_are_counted(metrics_app, ws_connect, alice):
    client = metrics_app.test_client()
    metrics_app.config.update(CHAT_MESSAGE_BURST=1, CHAT_MESSAGE_RATE=0.01)
    metrics_app.config.update(CHAT_FRAME_BURST=3, CHAT_FRAME_RATE=0.01)
    before = scrape_client(client)
    a = ws_connect(alice)
    a.send({"type": "message", "text": "one", "client_id": "m1"})
    a.recv_type("message")
    a.send({"type": "message", "text": "two", "client_id": "m2"})
    assert a.recv_type("error")["code"] == "rate_limited"
    middle = scrape_client(client)
    assert moved(before, middle, "chat_rate_limited_total", kind="message") == 1
    assert moved(before, middle, "chat_rate_limited_total", kind="frame") == 0
    assert moved(before, middle, "chat_messages_stored_total") == 1
    assert moved(before, middle, "chat_greeting_duration_seconds_count", outcome="greeted") == 1
    for _ in range(2):  # The third frame is the last the burst allows; the fourth is refused.
        a.send({"type": "typing", "room": "general"})
    assert a.recv_type("error")["code"] == "rate_limited"
    after = scrape_client(client)
    assert moved(middle, after, "chat_rate_limited_total", kind="frame") == 1
    assert moved(middle, after, "chat_rate_limited_total", kind="message") == 0


# ---- The socket stack ----------------------------------------------------------------------


def test_a_slow_consumer_cut_off_is_counted(metrics_app, live_server, ws_connect, alice, make_user):
    client = metrics_app.test_client()
    metrics_app.config["CHAT_SEND_QUEUE_SIZE"] = 8
    metrics_app.config["CHAT_MAX_MESSAGE_CHARS"] = 60_000
    carol = make_user("carol@example.com")[0]
    a = ws_connect(alice)
    before = scrape_client(client)
    stuck = raw_socket_that_never_reads(live_server, token_issued_at(metrics_app, carol))
    a.await_presence(online=[carol])
    for n in range(150):  # About 9 MB: more than the kernel buffers and a queue of 8 can hold.
        a.send({"type": "message", "text": f"{n:05d}" + "x" * 59_000})
        a.recv_type("message")
        if moved(before, scrape_client(client), "chat_sockets_cut_off_total"):
            break
    else:
        pytest.fail("the stuck socket was never cut off")
    after = scrape_client(client)
    assert moved(before, after, "chat_sockets_cut_off_total") == 1
    assert moved(before, after, "chat_sent_bytes_total") > 59_000 * (n + 1)
    assert moved(before, after, "chat_deliveries_total", kind="message") >= n + 1
    stuck.close()


@pytest.fixture
def with_redis(metrics_config, redis_url):
    """The app joins a Redis backplane (request it before ``metrics_app``)."""
    metrics_config.update(REDIS_URL=redis_url, CHAT_REDIS_PREFIX="chat-test-metrics")


def test_a_lost_backplane_is_counted(with_redis, metrics_app, redis_url):
    runtime = runtime_of(metrics_app)
    with metrics_app.app_context():
        runtime.start()
    wait_until(runtime.hub.ready, "the backplane to subscribe")
    client = metrics_app.test_client()
    before = scrape_client(client)
    killer = redis.Redis.from_url(redis_url)
    killer.client_kill_filter(_type="pubsub")  # What a Redis restart does to the subscription.
    killer.close()
    wait_until(
        lambda: moved(before, scrape_client(client), "chat_backplane_reconnects_total") == 1,
        "the lost subscription to be counted",
    )
    wait_until(runtime.hub.ready, "the backplane to subscribe again")


def test_counters_move_as_they_should_across_two_workers_under_load(
    app, metrics_config, redis_url, make_user, tmp_path
):
    config = {**metrics_config, "REDIS_URL": redis_url, "CHAT_REDIS_PREFIX": "chat-test-m2"}
    directory = tmp_path / "metrics"  # The operator's choice, not a directory of its own.
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"stale")  # A previous run's: removed at start.
    config["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    server = GunicornServer(config, tmp_path / "gunicorn.log", workers=2)
    server.start()
    users = [make_user(f"user{n}@example.com")[0] for n in range(2)]
    try:
        with ExitStack() as opened:
            _chat_under_load(app, server, users, opened)
    finally:
        server.kill()


def _chat_under_load(app, server, users, opened):
    """Two users with two sockets each; messages between them; the scrapes say so."""
    host = server.url.removeprefix("http://")
    before = scrape_url(server.url)
    sockets, workers = [], set()
    # Both workers serve some. The kernel hands each connection to whichever worker's accept
    # wakes first, and one idle worker often wins many in a row: allow as many tries as spread().
    while len(sockets) < 4 or len(workers) < 2:
        assert len(sockets) < 60, "every socket went to one worker"
        user_id = users[len(sockets) % 2]
        url = f"ws://{host}/ws?token={token_issued_at(app, user_id)}"
        sockets.append(ChatClient(opened.enter_context(connect(url, open_timeout=5))))
        sockets[-1].recv_type("hello")
        workers.add(server.worker_of(sockets[-1].ws))
    wait_until(
        lambda: value(scrape_url(server.url), "chat_open_sockets") == len(sockets),
        "every worker to count its sockets",
    )
    count = 40
    seen = {id(chat): 0 for chat in sockets}
    readers = [threading.Thread(target=_read, args=(chat, count, seen)) for chat in sockets]
    for reader in readers:
        reader.start()
    stored = []
    for n in range(count):  # Scraped while messages flow: counters only grow.
        sockets[n % 2].send({"type": "message", "text": f"load {n}", "client_id": f"c{n}"})
        if n % 10 == 0:
            stored.append(value(scrape_url(server.url), "chat_messages_stored_total"))
    for reader in readers:
        reader.join(30)
    assert all(got == count for got in seen.values()), seen
    assert stored == sorted(stored)

    def settled():
        after = scrape_url(server.url)
        return moved(before, after, "chat_deliveries_total", kind="message") == count * len(sockets)

    wait_until(settled, "every worker to publish its deliveries")
    after = scrape_url(server.url)
    assert moved(before, after, "chat_messages_stored_total") == count
    assert moved(before, after, "chat_commit_batch_size_sum") == count
    batches = moved(before, after, "chat_commit_batch_size_count")
    assert 1 <= batches <= count
    assert moved(before, after, "chat_commit_duration_seconds_count") == batches
    # Every socket got every message: at least its bytes went out.
    assert moved(before, after, "chat_sent_bytes_total") > count * len(sockets) * len("load 0")
    greeted = moved(before, after, "chat_greeting_duration_seconds_count", outcome="greeted")
    assert greeted == len(sockets)
    assert value(after, "chat_greetings_in_progress") == 0
    assert moved(before, after, "chat_presence_batch_changes_count") >= 1
    assert value(after, "chat_open_sockets") == len(sockets)
    for chat in sockets:
        chat.close()
    wait_until(lambda: value(scrape_url(server.url), "chat_open_sockets") == 0, "sockets to go")


def _read(chat, count, seen):
    """Read ``count`` chat messages (skipping presence) into ``seen``."""
    while seen[id(chat)] < count:
        frame = json.loads(chat.ws.recv(timeout=10))
        if frame["type"] == "message":
            seen[id(chat)] += 1


def test_a_dead_workers_sockets_leave_the_gauge(
    app, metrics_config, redis_url, make_user, tmp_path
):
    config = {**metrics_config, "REDIS_URL": redis_url, "CHAT_REDIS_PREFIX": "chat-test-m3"}
    config["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    (tmp_path / "metrics").mkdir()
    server = GunicornServer(config, tmp_path / "gunicorn.log", workers=2)
    server.start()
    try:
        user = make_user("alice@example.com")[0]
        token = token_issued_at(app, user)
        host = server.url.removeprefix("http://")
        with connect(f"ws://{host}/ws?token={token}", open_timeout=5) as ws:
            ChatClient(ws).recv_type("hello")
            wait_until(lambda: value(scrape_url(server.url), "chat_open_sockets") == 1, "it")
            os.kill(server.worker_of(ws), signal.SIGKILL)  # child_exit marks it dead.
            wait_until(
                lambda: value(scrape_url(server.url), "chat_open_sockets") == 0, "its gauge to go"
            )
    finally:
        server.kill()


# ---- gunicorn.conf.py --------------------------------------------------------------------------


def test_gunicorn_makes_a_private_metrics_directory_and_removes_it():
    # The file sets variables of its own in the environment: all of them go after the test
    # (left behind, every later gunicorn of the run would look for the removed directory).
    with mock.patch.dict(os.environ, {"CHAT_METRICS": "1"}):
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        hooks = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        assert os.stat(directory).st_mode & 0o777 == 0o700
        hooks["on_exit"](None)
        assert not os.path.exists(directory)
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") != directory


def test_a_reload_keeps_the_worker_connections(monkeypatch):
    monkeypatch.delenv("GUNICORN_WORKER_CONNECTIONS", raising=False)
    hooks = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    # What gunicorn's Arbiter.reload does: a fresh configuration, then on_reload.
    fresh = GunicornConfig()
    fresh.set("threads", 20)
    assert fresh.worker_connections == 1000  # gunicorn's default, which on_starting raised.
    hooks["on_reload"](SimpleNamespace(cfg=fresh))
    assert fresh.worker_connections == 10_000
