"""Several gunicorn workers and instances joined by Redis: one chat, whatever serves each client.

Real gunicorn processes, a real Redis and the suite's database (SQLite shared on one host, or
PostgreSQL); clients are real WebSocket clients that resume from their last seen id when their
socket drops, as the page does.
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from itertools import count
from types import SimpleNamespace

import pytest
import redis
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from extensions import db
from helpers import (
    PASSWORD,
    csrf_token,
    free_port,
    missing,
    token_issued_at,
    wait_until,
)
from models import Message
from realtime import events
from realtime.backplane import BackplaneError
from realtime.runtime import runtime_of

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.

SETTLE = 30  # seconds for every client to catch up: generous, only reached on failure


class Follower(threading.Thread):
    """A client that reads the ``general`` room and, when its socket drops, resumes elsewhere."""

    def __init__(self, app, user_id, servers, reconnect=True):
        super().__init__(daemon=True, name=f"follower-{user_id}")
        self.app, self.user_id, self.servers = app, user_id, servers
        self.reconnect = reconnect
        self.ids = []  # general's message ids, in the order they arrived
        self.client_ids = set()  # client_ids of the messages received
        self.sent = set()  # client_ids this client sent
        self.resent = set()  # client_ids it sent more than once (an outbox retry)
        self.greetings = 0  # hellos received: one per socket
        self.caught_up = 0  # the last socket whose greeting and resume replay are all in
        self.online = set()  # ids of the users this client sees online in general
        self.close_codes = []
        self.ws = None
        self.greeted = threading.Event()
        self.stopping = threading.Event()
        self._attempt = count()

    def _url(self):
        """The next server in turn; a resuming client says so."""
        server = self.servers[next(self._attempt) % len(self.servers)]
        token = token_issued_at(self.app, self.user_id)
        resume = "&resume=1" if self.ids or self.greeted.is_set() else ""
        return f"ws://127.0.0.1:{server.port}/ws?token={token}{resume}"

    def run(self):
        """Connect, read until the socket drops, resume; until stopped."""
        for _ in range(200):  # Bounded: a broken server cannot keep a test spinning.
            url = self._url()
            try:
                with connect(url, open_timeout=5) as ws:
                    if "resume=1" in url:
                        last = self.ids[-1] if self.ids else 0
                        ws.send(json.dumps({"type": "resume", "rooms": {"general": last}}))
                    # A marker: its answer comes after the hello and the resume replay.
                    ws.send(json.dumps({"type": "history", "room": "general", "limit": 1}))
                    self.ws = ws
                    for raw in ws:
                        self._handle(json.loads(raw))
            except (ConnectionClosed, InvalidStatus, OSError, TimeoutError):
                pass
            if self.ws is not None and self.ws.close_code is not None:
                self.close_codes.append(self.ws.close_code)
            self.ws = None
            if not self.reconnect or self.stopping.wait(0.2):
                return

    def _handle(self, frame):
        """Keep general's message ids and who is online in it."""
        kind = frame["type"]
        if kind == "hello":
            general = next(room for room in frame["rooms"] if room["room"] == "general")
            self.online = {person["id"] for person in general["online"]}
            self.ids.extend(message["id"] for message in frame["history"])
            self.greetings += 1
            self.greeted.set()
        elif kind == "history" and not frame["reset"]:
            self.caught_up = self.greetings  # The marker's answer.
        elif kind == "message" and frame["room"] == "general":
            if frame["client_id"] in self.resent and frame["id"] in self.ids:
                return  # The answer to a retry of a message it had: the page drops it too.
            self.ids.append(frame["id"])
            self.client_ids.add(frame["client_id"])
        elif kind == "presence" and frame["room"] == "general":
            self.online.difference_update(person["user_id"] for person in frame["offline"])
            self.online.update(person["user_id"] for person in frame["online"])

    def wait_greeted(self):
        """Wait for the first hello."""
        assert self.greeted.wait(10), f"user {self.user_id} got no hello"

    def send_text(self, text, client_id):
        """Send a message through the current socket; False if there is none right now."""
        ws = self.ws
        if ws is None:
            return False
        if client_id in self.sent:
            self.resent.add(client_id)
        self.sent.add(client_id)
        try:
            ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
        except ConnectionClosed:
            return False
        return True

    def stop(self):
        """Stop reconnecting and close the socket."""
        self.stopping.set()
        if self.ws is not None:
            self.ws.close()
        self.join(10)


@pytest.fixture
def followers():
    """Followers to stop at the end of the test."""
    started = []
    yield started
    for follower in started:
        follower.stop()


def follow(app, followers, user_id, servers, reconnect=True):
    """Start a ``Follower`` and wait for its hello."""
    follower = Follower(app, user_id, servers, reconnect)
    followers.append(follower)
    follower.start()
    follower.wait_greeted()
    return follower


def spread(app, followers, users, servers, want):
    """Open followers round-robin until every worker of ``servers`` serves one; ``{pid: [...]}``."""
    by_worker = {}
    for attempt in range(60):
        turn = attempt % len(servers)
        server = servers[turn]
        follower = follow(
            app, followers, users[attempt % len(users)], servers[turn:] + servers[:turn]
        )
        by_worker.setdefault(server.worker_of(follower.ws), []).append(follower)
        workers = {pid for server in servers for pid in server.worker_pids()}
        if workers <= by_worker.keys() and len(followers) >= want:
            return by_worker
    pytest.fail(f"clients reached only workers {sorted(by_worker)}")


def general_ids(app):
    """Every message id of general, in order, from the database."""
    with app.app_context():
        ids = db.session.scalars(select(Message.id).order_by(Message.id)).all()
        db.session.remove()
        return ids


def caught_up(app, everyone):
    """A condition: every follower has received every stored message."""

    def check():
        expected = general_ids(app)
        return all(len(f.ids) >= len(expected) for f in everyone)

    return check


def send_many(sender, label, how_many, pause=0.0):
    """Send ``how_many`` messages through ``sender`` as the page's outbox does.

    A message not seen back is sent again (same ``client_id``) once a new socket has been
    greeted and its resume replay has arrived (the answer to the socket's marker came). The
    message may still be stored and delivered from the old socket's post: the server then
    answers the retry with the original, which the follower, like the page, does not count
    twice (only its own retry's answer; any other repeat is a duplicate delivery).
    """
    for n in range(how_many):
        client_id, sent_on = f"{label}-{n}", None
        deadline = time.monotonic() + SETTLE
        while client_id not in sender.client_ids:
            assert time.monotonic() < deadline, f"{client_id} never came back"
            fresh = sender.greetings != sent_on and sender.caught_up == sender.greetings
            if fresh and sender.send_text(f"{label} {n}", client_id):
                sent_on = sender.greetings
            time.sleep(0.01)  # Polls for the echo.
        time.sleep(pause)  # Paces the stream, so that the fault lands amid it.


def test_two_instances_of_two_workers_are_one_chat(app, make_user, scaled_config, start_servers,
                                                   followers):  # fmt: skip
    users = [make_user(f"user{n}@example.com")[0] for n in range(6)]
    servers = start_servers(scaled_config, instances=2, workers=2)
    by_worker = spread(app, followers, users, servers, want=8)
    assert len(by_worker) == 4

    senders = [group[0] for group in by_worker.values()]  # One sender on every worker.
    threads = [
        threading.Thread(target=send_many, args=(sender, f"w{n}", 25))
        for n, sender in enumerate(senders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SETTLE)
    wait_until(lambda: len(general_ids(app)) == 100, "100 stored messages")
    wait_until(caught_up(app, followers), "every client to receive every message")

    expected = general_ids(app)
    for follower in followers:
        assert follower.ids == expected  # Each message exactly once, in one order, for everyone.
    online = {follower.user_id for follower in followers}
    # Presence comes in batches, apart from the messages: wait for the last one to land.
    wait_until(
        lambda: all(follower.online == online for follower in followers), "presence to settle"
    )
    for follower in followers:
        assert follower.online == online  # One presence, whichever worker a client is on.


def test_revocation_and_message_limits_reach_every_worker(app, make_user, scaled_config,
                                                          start_servers, followers):  # fmt: skip
    scaled_config.update(CHAT_MESSAGE_BURST=3, CHAT_MESSAGE_RATE=0.1)
    alice, bob = make_user("alice@example.com")[0], make_user("bob@example.com")[0]
    first, second = start_servers(scaled_config, instances=2, workers=1)
    token = token_issued_at(app, alice)
    with (
        connect(f"ws://127.0.0.1:{first.port}/ws?token={token}", open_timeout=5) as one,
        connect(f"ws://127.0.0.1:{second.port}/ws?token={token}", open_timeout=5) as two,
    ):
        for ws in (one, two):
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        # The burst is per user, counted in Redis: two instances do not double it.
        answers = []
        for n, ws in enumerate([one, two, one, two]):
            ws.send(json.dumps({"type": "message", "text": f"m{n}", "client_id": f"c{n}"}))
            while True:
                frame = json.loads(ws.recv(timeout=5))
                if frame.get("client_id") == f"c{n}":
                    answers.append(frame["type"])
                    break
        assert answers == ["message", "message", "message", "error"]

        # Signing out everywhere (on the first instance) closes the socket on the second too.
        watcher = follow(app, followers, bob, [second])
        sign_out_everywhere(first, "alice@example.com")
        for ws in (one, two):
            wait_until(lambda ws=ws: _closed(ws), "the socket to close", timeout=5)
            assert ws.close_code == 4001
        wait_until(lambda: alice not in watcher.online, "alice to go offline")


def test_a_killed_worker_loses_no_message_and_its_users_go_offline(
    app, make_user, scaled_config, start_servers, followers
):
    users = [make_user(f"user{n}@example.com")[0] for n in range(4)]
    ghost = make_user("ghost@example.com")[0]
    servers = start_servers(scaled_config, instances=2, workers=2)
    by_worker = spread(app, followers, users, servers, want=6)
    # The ghost's only socket does not come back: the victim is the worker that serves it.
    ghost_socket = None
    for _ in range(20):
        ghost_socket = follow(app, followers, ghost, servers[:1], reconnect=False)
        victim = servers[0].worker_of(ghost_socket.ws)
        if by_worker.get(victim):
            break
        ghost_socket.stop()
    else:
        pytest.fail("no worker serves both the ghost and a resuming client")
    survivors = [f for pid, group in by_worker.items() if pid != victim for f in group]
    # Presence comes in batches: the ghost is shown online within one (50 ms in the tests).
    wait_until(lambda: all(ghost in f.online for f in survivors), "the ghost to be online")

    sender = survivors[0]
    thread = threading.Thread(target=send_many, args=(sender, "during", 60, 0.01))
    thread.start()
    wait_until(lambda: len(sender.client_ids) >= 10, "the stream to start", timeout=10)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    thread.join(SETTLE)
    wait_until(lambda: len(general_ids(app)) == 60, "60 stored messages")
    everyone = [f for f in followers if f.reconnect]
    wait_until(caught_up(app, everyone), "every client, resumed ones included, to catch up")

    expected = general_ids(app)
    for follower in everyone:
        assert follower.ids == expected  # No gap and no duplicate, across the resume.
    # They did lose their socket, and came back.
    assert [f.greetings > 1 for f in by_worker[victim]] == [True] * len(by_worker[victim]), [
        (f.user_id, f.greetings, f.close_codes) for f in by_worker[victim]
    ]
    # Within the TTL and a heartbeat of the last beat, give or take two seconds.
    ttl, beat = scaled_config["CHAT_PRESENCE_TTL"], scaled_config["CHAT_PRESENCE_HEARTBEAT"]
    budget = ttl + beat + 2 - (time.monotonic() - killed_at)
    offline = lambda: all(ghost not in f.online for f in everyone)  # noqa: E731
    wait_until(offline, "the ghost to go offline", timeout=max(budget, 0.1))
    late = follow(app, followers, users[0], servers)
    assert ghost not in late.online
    assert set(users) <= late.online


def sign_out_everywhere(server, email):
    """Log in through the real form on ``server``, then press "Log out everywhere"."""
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())

    def submit(path, fields, form_page):
        page = SimpleNamespace(text=browser.open(server.url + form_page).read().decode())
        body = urllib.parse.urlencode({**fields, "csrf_token": csrf_token(page)}).encode()
        return browser.open(server.url + path, data=body).status

    assert submit("/login", {"email": email, "password": PASSWORD}, "/login") == 200
    assert submit("/logout-everywhere", {}, "/password") == 200


def _closed(ws):
    """Read what is left on ``ws``; True once it is closed."""
    try:
        ws.recv(timeout=0.1)
    except TimeoutError:
        return False
    except ConnectionClosed:
        return True
    return False


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of this test's own, on a free port, that the test may stop and restart."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is missing: apt-get install redis-server")
    port = free_port()

    class PrivateRedis:
        url = f"redis://127.0.0.1:{port}/0"
        process = None

        def start(self):
            command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            client = redis.Redis.from_url(self.url)
            wait_until(lambda: _pings(client), "redis-server to start", timeout=10)
            client.close()

        def kill(self):
            self.process.kill()
            self.process.wait(10)

    server = PrivateRedis()
    server.start()
    yield server
    server.kill()


def _pings(client):
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def test_a_redis_restart_under_load_recovers_everything_from_the_database(
    app, make_user, scaled_config, private_redis, start_servers, followers
):
    scaled_config["REDIS_URL"] = private_redis.url
    users = [make_user(f"user{n}@example.com")[0] for n in range(4)]
    servers = start_servers(scaled_config, instances=1, workers=2)
    spread(app, followers, users, servers, want=4)

    sender = followers[0]
    thread = threading.Thread(target=send_many, args=(sender, "load", 80, 0.02))
    thread.start()
    wait_until(lambda: len(sender.client_ids) >= 15, "the stream to start", timeout=10)
    private_redis.kill()  # Everything Redis held is gone: subscriptions, presence, counters.
    # Down until every worker has noticed: each closed its sockets, to be resumed (1012).
    wait_until(lambda: all(1012 in f.close_codes for f in followers), "every socket to close")
    private_redis.start()
    thread.join(SETTLE)
    wait_until(caught_up(app, followers), "every client to recover what it missed")

    expected = general_ids(app)
    assert len(expected) >= 80  # Every message the sender sent was stored (retries included).
    for follower in followers:
        assert follower.ids == expected
    # The recovery went through the path under test: sockets closed with 1012, then resumed.
    assert any(1012 in f.close_codes for f in followers)
    # Delivery resumed by itself: a message sent now reaches everyone live.
    before = len(expected)
    send_many(followers[-1], "after", 1)
    wait_until(lambda: all(len(f.ids) == before + 1 for f in followers), "a live message")


# ---- One worker on the Redis backplane, in this process -----------------------------------------


@pytest.fixture
def redis_backplane(app_config, redis_url):
    """Build the test app on the Redis backplane (request it before ``app`` or ``ws_connect``)."""
    app_config.update(
        REDIS_URL=redis_url,
        CHAT_REDIS_PREFIX=f"chat-test-{uuid.uuid4().hex[:8]}",
        CHAT_PRESENCE_HEARTBEAT=1,
        CHAT_PRESENCE_TTL=3,
    )
    # make_app stops the backplane's threads at teardown.


def test_with_redis_no_message_lands_in_a_room_just_left(redis_backplane, ws_connect, alice):
    a = ws_connect(alice)
    a.send({"type": "create_room", "name": "lobby"})
    a.recv_type("room")
    a.send({"type": "leave_room", "room": "lobby"})
    a.send({"type": "message", "room": "lobby", "text": "too late", "client_id": "late"})
    frames = [a.recv() for _ in range(3)]  # room_created, room_left, then the refusal
    refusal = next(frame for frame in frames if frame["type"] == "error")
    assert (refusal["code"], refusal["client_id"]) == ("forbidden", "late")


@pytest.mark.parametrize(
    ("part", "method", "error"),
    [
        ("backplane", "set_presences", BackplaneError("Redis said no")),
        ("hub", "deliver", IndexError("a bug")),
    ],
    ids=["a failed presence write", "a bug in a delivery"],
)
def test_the_listener_survives_a_failed_delivery(redis_backplane, app, ws_connect, alice, bob,
                                                 monkeypatch, part, method, error):  # fmt: skip
    b = ws_connect(bob)
    hub = runtime_of(app).hub
    backplane = hub._backplane

    def fail(*_args):
        raise error

    # Another worker renames bob while this worker fails to apply it (Redis refuses the presence
    # write, or a bug, which the listener does not expect): the event is lost for this worker,
    # so it must close its sockets (1012) and come back, not die and leave the worker deaf.
    monkeypatch.setattr({"hub": hub, "backplane": backplane}[part], method, fail)
    backplane.publish(events.Rename(bob, "bobby"))
    wait_until(lambda: _closed(b.ws), "the socket to close", timeout=5)
    assert b.ws.close_code == 1012
    monkeypatch.undo()
    wait_until(lambda: backplane.ready(), "the listener to subscribe again", timeout=10)
    again, a = ws_connect(bob), ws_connect(alice)
    a.send("still delivering")
    assert again.recv_type("message")["text"] == "still delivering"
