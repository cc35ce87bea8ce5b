"""The WebSocket ``/ws`` against a live threaded server, with real WebSocket clients."""

import json
import logging
import threading
import time
from contextlib import ExitStack

import pytest
from sqlalchemy import func, select, text
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from extensions import db
from helpers import (
    assert_refused,
    raw_socket_that_never_reads,
    rejected,
    shown_in,
    token_issued_at,
    wait_for_sockets,
    wait_until,
)
from models import Membership, Message, User, save_message
from realtime import events
from realtime.backplane import BackplaneError
from realtime.runtime import runtime_of


def message_count(app):
    """How many messages are stored."""
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Message))


def test_hello_names_the_user_and_who_is_online(ws_connect, alice, bob):
    first = ws_connect(alice)
    assert first.hello["user"] == {"id": alice, "name": "alice", "avatar_url": None}
    assert first.hello["online"] == ["alice"]
    assert first.hello["history"] == []
    second = ws_connect(bob)
    assert second.hello["online"] == ["alice", "bob"]


def test_a_big_room_lists_its_first_people_online_a_count_and_everyone_on_request(
    app, ws_connect, alice, bob, make_user
):
    app.config["CHAT_ONLINE_LISTED"] = 2  # As if general were a room of thousands.
    carol, dave = make_user("carol@example.com")[0], make_user("dave@example.com")[0]
    for user in (bob, carol, dave):
        ws_connect(user)
    a = ws_connect(alice)
    general = next(room for room in a.hello["rooms"] if room["room"] == "general")
    assert [person["name"] for person in general["online"]] == ["alice", "bob"]
    assert general["online_count"] == 4
    assert a.hello["online"] == ["alice", "bob"]  # The same first page, as names.
    a.send({"type": "who", "room": "general", "client_id": "w1"})
    everyone = a.recv_type("online")
    assert everyone == {
        "type": "online",
        "room": "general",
        "online": [
            {"id": uid, "name": name}
            for uid, name in ((alice, "alice"), (bob, "bob"), (carol, "carol"), (dave, "dave"))
        ],
        "count": 4,
    }
    a.send({"type": "who", "room": "p:000000000000", "client_id": "w2"})
    error = a.recv_type("error")
    assert (error["code"], error["client_id"]) == ("forbidden", "w2")


def test_message_reaches_everyone_exactly_once_with_client_id(app, ws_connect, alice, bob):
    a, b = ws_connect(alice), ws_connect(bob)
    a.await_presence(online=[bob])
    b.settle_presence()
    a.send({"type": "message", "text": "  hello bob  ", "client_id": "c-1"})
    for client in (a, b):
        frame = client.recv()
        assert frame["type"] == "message"
        assert frame["text"] == "hello bob"
        assert frame["user"] == "alice"
        assert frame["user_id"] == alice
        assert frame["client_id"] == "c-1"
        assert frame["ts"].endswith("Z")
    # A second message is the marker: stored and sent after the first, it comes after any
    # second copy of it.
    a.send({"type": "message", "text": "marker", "client_id": "c-2"})
    for client in (a, b):
        assert client.recv()["text"] == "marker"
    assert message_count(app) == 2


def test_plain_text_frame_is_a_message(ws_connect, alice, bob):
    a, b = ws_connect(alice), ws_connect(bob)
    a.send("typed in Postman")
    frame = b.recv_type("message")
    assert frame["text"] == "typed in Postman"
    assert frame["client_id"] is None


@pytest.mark.database
def test_history_on_connect_is_the_latest_messages_oldest_first(app, ws_connect, alice, general):
    app.config["CHAT_HISTORY_SIZE"] = 3
    with app.app_context():
        for n in range(5):
            save_message(alice, general, f"m{n}")
    history = ws_connect(alice).hello["history"]
    assert [frame["text"] for frame in history] == ["m2", "m3", "m4"]
    assert all(frame["type"] == "message" and frame["user"] == "alice" for frame in history)


def presence(online=(), offline=(), count=0):
    """The ``presence`` frame of general listing ``online`` and ``offline`` ((id, name) pairs),
    with ``count`` people online there now."""
    return {
        "type": "presence",
        "room": "general",
        "online": [{"user_id": uid, "user": name} for uid, name in online],
        "offline": [{"user_id": uid, "user": name} for uid, name in offline],
        "count": count,
    }


def test_join_and_leave_follow_a_users_first_and_last_socket(
    app, ws_connect, alice, bob, make_user
):
    carol, dave = make_user("carol@example.com")[0], make_user("dave@example.com")[0]
    a = ws_connect(alice)
    b1 = ws_connect(bob)
    frames = a.await_presence(online=[bob])
    assert frames[-1]["online"][-1] == {"user_id": bob, "user": "bob"}
    b2 = ws_connect(bob)
    assert b2.hello["online"] == ["alice", "bob"]
    # Markers: an arrival noted after each step is in the next batch, or a later one, than
    # anything the step noted. The next frame names carol alone: a second tab is not a join.
    ws_connect(carol)
    assert a.recv() == presence(online=[(carol, "carol")], count=3)
    b1.close()
    wait_for_sockets(app, bob, 1)
    ws_connect(dave)
    assert a.recv() == presence(online=[(dave, "dave")], count=4)  # Bob is still in a tab.
    b2.close()
    assert a.recv() == presence(offline=[(bob, "bob")], count=3)


@pytest.mark.database
def test_retry_with_same_client_id_posts_once(app, ws_connect, alice, bob):
    a, b = ws_connect(alice), ws_connect(bob)
    a.await_presence(online=[bob])
    b.settle_presence()
    confirmations = []
    for _ in range(3):
        a.send({"type": "message", "text": "once", "client_id": "retry-1"})
        confirmations.append(a.recv())
    assert confirmations[0] == confirmations[1] == confirmations[2]
    assert b.recv()["id"] == confirmations[0]["id"]
    # The marker, stored and sent after the retries: bob's next frame, so they reached him once.
    a.send({"type": "message", "text": "marker", "client_id": "after-retries"})
    assert a.recv()["text"] == "marker"
    assert b.recv()["text"] == "marker"
    assert message_count(app) == 2


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x00\x01", "unsupported"),
        ('{"type": "shout", "text": "hi", "client_id": "k"}', "unknown_type"),
        ('{"type": "message", "text": 5, "client_id": "k"}', "bad_request"),
        ('{"type": "message", "text": "hi"', "bad_request"),
        ('{"type": "message", "client_id": "k"}', "bad_request"),
        ('{"type": "message", "text": "hi", "client_id": 12}', "bad_request"),
        ('{"type": "message", "text": NaN}', "bad_request"),
        ("   ", "empty"),
        ('{"type": "message", "text": "\\u200b ", "client_id": "k"}', "empty"),
        ("x" * 2001, "too_long"),
        ('{"type": "message", "text": "lone \\ud800", "client_id": "k"}', "bad_request"),
        ('{"type": "shout", "client_id": "\\ud800"}', "bad_request"),
    ],
)
def test_bad_frame_gets_its_error_and_the_socket_still_works(
    app, ws_connect, alice, bob, frame, code
):
    a, b = ws_connect(alice), ws_connect(bob)
    a.await_presence(online=[bob])
    b.settle_presence()
    a.send(frame)
    error = a.recv()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"]
    assert error["client_id"] == ("k" if '"client_id": "k"' in str(frame) else None)
    a.send("still here")
    assert a.recv()["text"] == "still here"
    assert b.recv()["text"] == "still here"  # Bob's next frame: nothing was broadcast before.
    assert message_count(app) == 1


def test_message_of_exactly_the_limit_is_accepted(ws_connect, alice):
    a = ws_connect(alice)
    a.send("x" * 2000)
    assert a.recv()["text"] == "x" * 2000


def test_frame_over_the_transport_limit_closes_with_1009(app, ws_connect, alice, bob):
    a, b = ws_connect(alice, max_size=None), ws_connect(bob)
    a.await_presence(online=[bob])
    b.settle_presence()
    a.send("x" * (64 * 1024 + 1))
    with pytest.raises(ConnectionClosed) as closed:
        a.recv()
    assert closed.value.rcvd.code == 1009
    b.await_presence(offline=[alice])
    assert message_count(app) == 0


def test_missing_token_is_refused_before_the_upgrade(live_server, ws_connect, alice, bob):
    watcher = ws_connect(alice)
    assert_refused(rejected(live_server), "missing_token")
    assert_refused(rejected(live_server, "?token="), "missing_token")
    # The marker: an arrival, noted after anything the refusals could have noted. The frames
    # up to it name nobody else (alice herself, if her own arrival was still in the batch).
    ws_connect(bob)
    online, offline = shown_in(watcher.await_presence(online=[bob]))
    assert (online - {alice}, offline) == ({bob}, set())


def tampered(token):
    """``token`` with one signature character changed: the next to last, since the last one's
    low bits are base64 padding, which decoding ignores (a changed last character can still
    verify)."""
    changed = "A" if token[-2] != "A" else "B"
    return f"{token[:-2]}{changed}{token[-1]}"


@pytest.mark.parametrize(
    "make_token",
    [
        lambda app, uid: "not-a-token",
        lambda app, uid: tampered(token_issued_at(app, uid)),
        lambda app, uid: token_issued_at(app, uid, salt="another-purpose"),
        lambda app, uid: token_issued_at(app, uid, version=1),
        lambda app, uid: token_issued_at(app, uid + 100),
    ],
    ids=["garbage", "tampered", "other-salt", "old-version", "unknown-user"],
)
def test_invalid_token_is_refused_before_the_upgrade(
    app, live_server, ws_connect, alice, bob, make_token
):
    watcher = ws_connect(alice)
    assert_refused(rejected(live_server, f"?token={make_token(app, alice)}"), "invalid_token")
    ws_connect(bob)  # The marker, as above.
    online, offline = shown_in(watcher.await_presence(online=[bob]))
    assert (online - {alice}, offline) == ({bob}, set())


def test_expired_token_is_refused(app, live_server, alice):
    token = token_issued_at(app, alice, seconds_ago=app.config["CHAT_TOKEN_MAX_AGE"] + 5)
    assert_refused(rejected(live_server, f"?token={token}"), "expired_token")


@pytest.mark.database
def test_token_of_deleted_user_is_refused(app, live_server, alice):
    token = token_issued_at(app, alice)
    with app.app_context():
        db.session.delete(db.session.get(User, alice))
        db.session.commit()
    assert_refused(rejected(live_server, f"?token={token}"), "invalid_token")


def test_bearer_header_is_accepted(app, live_server, alice):
    headers = {"Authorization": f"Bearer {token_issued_at(app, alice)}"}
    with connect(f"ws://{live_server}/ws", additional_headers=headers, open_timeout=5) as ws:
        assert '"type":"hello"' in ws.recv(timeout=5)


def test_token_from_the_api_opens_a_socket(app, client, live_server, make_user):
    make_user("carol@example.com")
    token = client.post(
        "/api/token", json={"email": "carol@example.com", "password": "correct horse battery"}
    ).json["token"]
    with connect(f"ws://{live_server}/ws?token={token}", open_timeout=5) as ws:
        assert '"name":"carol"' in ws.recv(timeout=5)


def test_plain_http_get_on_the_socket_route_is_a_json_400(client):
    response = client.get("/ws")
    assert response.status_code == 400
    assert response.json["error"] == "bad_request"


def test_logs_name_user_and_length_but_never_the_token(app, live_server, ws_connect, alice, caplog):
    caplog.set_level(logging.INFO)
    token = token_issued_at(app, alice)
    with connect(f"ws://{live_server}/ws?token={token}", open_timeout=5) as ws:
        ws.recv(timeout=5)
        ws.send("secret plans")
        ws.recv(timeout=5)
    # The request line is logged when the handler returns, which may be after the socket closed.
    wait_until(lambda: "GET /ws?token=[redacted] HTTP/1.1" in caplog.text, "the request line")
    assert f"message from user {alice} (12 chars)" in caplog.text
    assert "GET /ws?token=[redacted] HTTP/1.1" in caplog.text
    assert token not in caplog.text
    assert "secret plans" not in caplog.text


def next_message(client, presence):
    """The next ``message`` frame; presence frames met on the way are appended to ``presence``."""
    while True:
        frame = client.recv()
        if frame["type"] == "message":
            return frame
        presence.append(frame)


def test_a_client_that_never_reads_is_cut_off_without_delaying_others(
    app, live_server, ws_connect, alice, bob, make_user
):
    app.config["CHAT_SEND_QUEUE_SIZE"] = 8
    app.config["CHAT_MAX_MESSAGE_CHARS"] = 60_000
    carol = make_user("carol@example.com")[0]
    a, b = ws_connect(alice), ws_connect(bob)
    a.await_presence(online=[bob])
    b.settle_presence()
    stuck = raw_socket_that_never_reads(live_server, token_issued_at(app, carol))
    a.await_presence(online=[carol])
    b.await_presence(online=[carol])
    presence = []
    count = 150  # About 9 MB: more than the kernel buffers and a queue of 8 can hold.
    for n in range(count):
        a.send({"type": "message", "text": f"{n:05d}" + "x" * 59_000})
        assert next_message(a, [])["text"][:5] == f"{n:05d}"
        assert next_message(b, presence)["text"][:5] == f"{n:05d}"
    if not presence:
        presence.append(b.recv())
    assert presence == [
        {
            "type": "presence",
            "room": "general",
            "online": [],
            "offline": [{"user_id": carol, "user": "carol"}],
            "count": 2,
        }
    ]
    stuck.settimeout(5)
    while stuck.recv(65536):
        pass  # The server closed the connection: reading drains it to the end.
    stuck.close()


def test_chat_under_gunicorn_and_its_access_log_has_no_token(app, gunicorn_server, alice, bob):
    host = gunicorn_server.url.removeprefix("http://")
    alice_token, bob_token = token_issued_at(app, alice), token_issued_at(app, bob)
    with (
        connect(f"ws://{host}/ws?token={alice_token}", open_timeout=5) as a,
        connect(f"ws://{host}/ws?token={bob_token}", open_timeout=5) as b,
    ):
        assert '"type":"hello"' in a.recv(timeout=5)
        assert '"type":"hello"' in b.recv(timeout=5)
        a.send('{"type": "message", "text": "via gunicorn", "client_id": "g1"}')
        assert '"text":"via gunicorn"' in b.recv(timeout=5)
    assert_refused(rejected(host, "?token=forged"), "invalid_token")
    gunicorn_server.wait_for_log("GET /ws HTTP/1.1")
    log = gunicorn_server.log()
    assert "message from user" in log
    assert alice_token not in log
    assert bob_token not in log
    assert "forged" not in log


@pytest.mark.database
def test_concurrent_senders_are_seen_by_everyone_in_id_order(ws_connect, alice, bob, make_user):
    carol = make_user("carol@example.com")[0]
    a, b, watcher = ws_connect(alice), ws_connect(bob), ws_connect(carol)
    per_sender = 40
    for n in range(per_sender):  # Interleaved, without waiting: the server sees them concurrently.
        a.send(f"a{n}")
        b.send(f"b{n}")
    streams = {}
    for name, client in {"alice": a, "bob": b, "carol": watcher}.items():
        presence = []
        streams[name] = [next_message(client, presence)["id"] for _ in range(2 * per_sender)]
    assert streams["alice"] == streams["bob"] == streams["carol"]
    assert streams["carol"] == sorted(set(streams["carol"]))


@pytest.mark.database
def test_a_greeting_that_fails_says_unavailable_and_closes_with_1013(app, live_server, alice):
    with app.app_context():
        Membership.__table__.drop(db.engine)  # The greeting cannot read the user's rooms.
    try:
        url = f"ws://{live_server}/ws?token={token_issued_at(app, alice)}"
        with connect(url, open_timeout=5) as ws:
            error = json.loads(ws.recv(timeout=5))
            assert (error["type"], error["code"]) == ("error", "unavailable")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1013  # Try again later: the page reconnects.
    finally:
        with app.app_context():
            Membership.__table__.create(db.engine)


def _storm_behind_the_order_lock(app, live_server, users, opened):
    """Open a socket per user while the order lock is held: the first greeting takes itself as
    a batch and waits for the lock; the rest queue behind it. The sockets, once all queued."""
    arrivals = runtime_of(app).arrivals
    sockets = []
    for user_id in users:
        url = f"ws://{live_server}/ws?token={token_issued_at(app, user_id)}"
        sockets.append(opened.enter_context(connect(url, open_timeout=5)))
    wait_until(lambda: len(arrivals._waiting) == len(users) - 1, "the greetings to queue")
    return sockets


def test_a_storm_of_greetings_is_registered_in_batches_and_everyone_is_greeted(
    app, live_server, make_user, monkeypatch
):
    from realtime import arrivals as module

    users = [make_user(f"storm{n}@example.com")[0] for n in range(12)]
    batches = []
    register_all = module._register_all
    monkeypatch.setattr(
        module,
        "_register_all",
        lambda hub, batch: (batches.append(len(batch)), register_all(hub, batch)),
    )
    with ExitStack() as opened:
        hub = runtime_of(app).hub
        with hub.ordered():
            sockets = _storm_behind_the_order_lock(app, live_server, users, opened)
        hellos = [json.loads(ws.recv(timeout=5)) for ws in sockets]
        assert [hello["type"] for hello in hellos] == ["hello"] * len(users)
        assert batches == [1, len(users) - 1]  # Two passes under the lock, not twelve.
        general = next(room for room in hellos[-1]["rooms"] if room["room"] == "general")
        assert general["online_count"] == len(users)  # Every one registered before its hello.
        assert sorted(hub.everyone()) == sorted(users)


def test_a_batch_that_fails_tells_each_of_its_greetings_unavailable(
    app, live_server, make_user, monkeypatch
):
    from realtime import arrivals as module

    users = [make_user(f"storm{n}@example.com")[0] for n in range(4)]

    def fail(hub, batch):
        raise BackplaneError("Redis said no")

    with ExitStack() as opened:
        hub = runtime_of(app).hub
        with hub.ordered():
            sockets = _storm_behind_the_order_lock(app, live_server, users, opened)
            monkeypatch.setattr(module, "_register_all", fail)
        for ws in sockets:
            error = json.loads(ws.recv(timeout=5))
            assert (error["type"], error["code"]) == ("error", "unavailable")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd.code == 1013
        monkeypatch.undo()
        wait_until(lambda: not hub.everyone(), "the refused sockets to be forgotten")
        assert len(runtime_of(app).arrivals._waiting) == 0
        url = f"ws://{live_server}/ws?token={token_issued_at(app, users[0])}"
        with connect(url, open_timeout=5) as ws:  # The next greeting leads a batch of its own.
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"


@pytest.mark.database
def test_database_failure_gets_unavailable_and_recovers(app, ws_connect, alice, bob):
    a, b = ws_connect(alice), ws_connect(bob)
    a.await_presence(online=[bob])
    b.settle_presence()
    # The table goes away (renamed: other tables' keys point at it), and comes back.
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(text("ALTER TABLE messages RENAME TO messages_away"))
    a.send({"type": "message", "text": "lost?", "client_id": "u1"})
    error = a.recv()
    assert (error["type"], error["code"], error["client_id"]) == ("error", "unavailable", "u1")
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(text("ALTER TABLE messages_away RENAME TO messages"))
    a.send({"type": "message", "text": "back", "client_id": "u1"})
    assert a.recv()["text"] == "back"
    assert b.recv()["text"] == "back"  # Bob's next frame: nothing of "lost?" came before it.


@pytest.mark.database
def test_a_message_stored_but_not_published_goes_out_later_in_order(
    app, monkeypatch, ws_connect, alice, bob
):
    a, b = ws_connect(alice), ws_connect(bob)
    a.await_presence(online=[bob])
    b.settle_presence()
    backplane = runtime_of(app).hub._backplane
    publish, failures = backplane.publish, []

    def publish_failing_once(event, payload=None):
        if isinstance(event, events.Messages) and not failures:
            failures.append(event)
            raise BackplaneError("Redis refused the PUBLISH")
        publish(event, payload)

    monkeypatch.setattr(backplane, "publish", publish_failing_once)
    a.send({"type": "message", "text": "stored first", "client_id": "s1"})
    # No error for the sender: the message is stored, and everyone gets it at the next attempt.
    for client in (a, b):
        assert client.recv()["text"] == "stored first"
    a.send({"type": "message", "text": "then this", "client_id": "s2"})
    for client in (a, b):
        assert client.recv()["text"] == "then this"
    assert failures, "the first publish did not fail"
    assert message_count(app) == 2


@pytest.mark.database
def test_history_meets_the_live_stream_without_gap_or_duplicate(ws_connect, alice, bob):
    a = ws_connect(alice)
    stop = threading.Event()
    sent = [0]

    def keep_sending():
        while not stop.is_set() and sent[0] < 2000:
            a.send(f"m{sent[0]}")
            sent[0] += 1
            time.sleep(0.002)  # A steady stream, not a burst: the joins land amid it.

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        wait_until(lambda: sent[0] >= 20, "the stream to start")
        joined = [ws_connect(bob) for _ in range(3)]  # Each connects while messages keep coming.
        after = sent[0]
        wait_until(lambda: sent[0] >= after + 20, "more messages after the last join")
    finally:
        stop.set()
        sender.join(10)
    # The sender's echoes, all of them: the last one's id is the end of every stream.
    echoes = [next_message(a, [])["id"] for _ in range(sent[0])]
    for client in joined:
        seen = [frame["id"] for frame in client.hello["history"]]
        while not seen or seen[-1] < echoes[-1]:
            seen.append(next_message(client, [])["id"])
        assert seen == list(range(seen[0], echoes[-1] + 1))  # Consecutive: no gap, no repeat.


def test_concurrent_connections_see_each_user_online_once(ws_connect, make_user):
    users = [make_user(f"user{n}@example.com")[0] for n in range(8)]
    last = make_user("last@example.com")[0]
    clients = {}

    def open_for(user_id):
        clients[user_id] = ws_connect(user_id)

    threads = [threading.Thread(target=open_for, args=(user_id,)) for user_id in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # The marker: an arrival noted after all of theirs, so in their batch or a later one.
    ws_connect(last)
    for client in clients.values():
        online = set(client.hello["online"])
        while "last" not in online:
            frame = client.recv()
            assert frame["type"] == "presence"
            assert not frame["offline"]
            online.update(person["user"] for person in frame["online"])
        assert online == {f"user{n}" for n in range(8)} | {"last"}


@pytest.fixture
def slow_presence(app_config):
    """Presence batches every half second (before the app is built)."""
    app_config["CHAT_PRESENCE_BATCH"] = 0.5


def test_a_storm_of_arrivals_is_announced_in_a_few_batches(slow_presence, ws_connect, make_user):
    # One frame per arrival per person online would be n²/2 frames; batches keep it linear.
    watcher = ws_connect(make_user("watcher@example.com")[0])
    users = [make_user(f"user{n}@example.com")[0] for n in range(40)]
    threads = [threading.Thread(target=ws_connect, args=(user_id,)) for user_id in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    frames = watcher.await_presence(online=users)
    # 40 arrivals in a few seconds at most, so a handful of batches, not one frame each.
    assert len(frames) < len(users) // 2
    assert all(not frame["offline"] for frame in frames)


@pytest.mark.database
def test_concurrent_senders_are_stored_and_delivered_once_in_id_order(app, ws_connect, make_user):
    # Posts that arrive while another is being stored are committed together (group commit):
    # each must still reach everyone once, in id order, and each sender its own echo.
    senders = [ws_connect(make_user(f"s{n}@example.com")[0]) for n in range(4)]
    reader_id = make_user("reader@example.com")[0]
    reader = ws_connect(reader_id)
    # Presence settled first: the reader's last frame below must be a message, not a late batch.
    senders[0].await_presence(online=[reader_id])

    def flood(n, chat):
        for k in range(25):
            chat.send({"type": "message", "text": f"{n}-{k}", "client_id": f"{n}-{k}"})

    threads = [threading.Thread(target=flood, args=(n, c)) for n, c in enumerate(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    received = [reader.recv_type("message") for _ in range(100)]
    ids = [frame["id"] for frame in received]
    assert ids == sorted(ids)
    assert len(set(ids)) == 100
    assert sorted(frame["text"] for frame in received) == sorted(
        f"{n}-{k}" for n in range(4) for k in range(25)
    )
    # A retry amid the flood gets its original back, to the sender only.
    senders[0].send({"type": "message", "text": "0-3", "client_id": "0-3"})
    echoes = [senders[0].recv_type("message") for _ in range(101)]
    assert echoes[-1]["id"] == next(f["id"] for f in received if f["client_id"] == "0-3")
    # The marker, stored and sent after the retry: the reader's next frame, so the retry's
    # answer went to its sender alone.
    senders[0].send({"type": "message", "text": "marker", "client_id": "marker"})
    marker = reader.recv_type("message")
    assert marker["text"] == "marker"
    assert senders[0].recv_type("message")["id"] == marker["id"]
    # Every sender gets all 100 too (and, having read them, closes at once: a client with
    # unread frames waits its close timeout for our close frame behind them).
    for sender in senders[1:]:
        assert [sender.recv_type("message")["id"] for _ in range(101)] == [*ids, marker["id"]]
