"""Web Push (issue 21), end to end: real sockets post messages, the app pushes them to a push
service on 127.0.0.1 (tests/pushservice.py) that checks the VAPID JWT and decrypts each payload
with the keys this test's "browser" made, as a browser would."""

import json
import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from websockets.sync.client import connect
from werkzeug.serving import make_server

import push
from extensions import db
from helpers import PASSWORD, ChatClient, csrf_token, login, token_issued_at, wait_until
from models import Membership, PushSubscription, User, ensure_general, utcnow
from push import audience
from push import sender as sender_module
from push.endpoints import endpoint_problem
from push.keys import load_keys
from push.views import KEYS_KEY, MAX_SUBSCRIPTIONS
from pushservice import PushService
from realtime import protocol
from realtime.runtime import runtime_of

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.

IDLE = 10  # seconds for the sender to plan and answer every push: only reached on failure


@pytest.fixture
def app_config(app_config, tmp_path):
    return {
        **app_config,
        "CHAT_FETCH_ALLOW_LOOPBACK": True,
        "CHAT_PUSH_TIMEOUT": 30,  # Longer than any test: a hanging service hangs throughout.
        "CHAT_VAPID_KEY_FILE": str(tmp_path / "vapid.pem"),
    }


@pytest.fixture
def service(app):
    with PushService(app.extensions[KEYS_KEY].public_key) as running:
        yield running
    push.sender_of(app).stop()


@pytest.fixture
def carol(make_user):
    return make_user("carol@example.com")[0]


def subscribe(app, email, browser):
    """Subscribe ``browser`` for the person with ``email`` through the page's endpoint."""
    client = app.test_client()
    login(client, email)
    token = csrf_token(client.get("/profile"))
    response = client.post(
        "/push/subscriptions",
        json=browser.subscription(),
        headers={"X-CSRFToken": token, "User-Agent": "TestBrowser/1.0"},
    )
    assert response.status_code == 201, response.json
    return client, token


def idle(app, message):
    """Wait until the sender was told of ``message`` and has nothing left to do."""
    assert push.sender_of(app).wait_idle(IDLE, message["id"]), "pushes still pending"


def posted(chat, text, room="general"):
    """Post ``text`` and return the stored message's frame (the sender's echo)."""
    client_id = uuid.uuid4().hex
    chat.send({"type": "message", "room": room, "text": text, "client_id": client_id})
    while (frame := chat.recv())["type"] != "message" or frame["client_id"] != client_id:
        pass
    return frame


def until(chat, kind):
    while (frame := chat.recv())["type"] != kind:
        pass
    return frame


def test_a_mention_pushes_the_mentioned_person(app, service, ws_connect, alice, bob):
    alices, bobs = ws_connect(alice), ws_connect(bob)  # bob's socket never says it is visible.
    bobs_browser, alices_browser = service.browser(), service.browser()
    subscribe(app, "bob@example.com", bobs_browser)
    subscribe(app, "alice@example.com", alices_browser)
    posted(alices, "nobody mentioned here")  # general: bob's level is mentions
    message = posted(alices, f"hello <@{bob}>, the build is green")
    [payload] = service.wait_for(bobs_browser)
    assert payload == {
        "title": "alice in general",
        "body": "hello @bob, the build is green",
        "url": f"/?room=general#m{message['id']}",
        "tag": "general",
        "room": "general",
        "message_id": message["id"],
    }
    idle(app, message)
    assert bobs_browser.received == [payload]  # Not the message without a mention.
    assert alices_browser.received == []  # Never one's own message.
    assert service.refused == []
    with app.app_context():
        row = db.session.scalar(select(PushSubscription).where(PushSubscription.user_id == bob))
        assert row.user_agent == "TestBrowser/1.0"
        assert row.last_push_at is not None
    bobs.close()


def test_levels_decide_all_mentions_or_nothing(app, service, ws_connect, alice, bob):
    alices, bobs = ws_connect(alice), ws_connect(bob)
    browser = service.browser()
    subscribe(app, "bob@example.com", browser)
    bobs.send({"type": "notify", "room": "general", "level": "nothing"})
    until(bobs, "notify")
    idle(app, posted(alices, f"muted <@{bob}>"))
    assert browser.received == []
    bobs.send({"type": "notify", "room": "general", "level": "all"})
    until(bobs, "notify")
    message = posted(alices, "every message now")
    assert service.wait_for(browser)[0]["message_id"] == message["id"]


def test_a_visible_tab_suppresses_the_push(app, service, ws_connect, alice, bob):
    alices, bobs, bobs_other_tab = ws_connect(alice), ws_connect(bob), ws_connect(bob)
    browser = service.browser()
    subscribe(app, "bob@example.com", browser)
    bobs.send({"type": "visibility", "visible": True})
    bobs.sync()  # Handled: the hub knows.
    assert runtime_of(app).hub.visible_users({alice, bob}) == {bob}
    idle(app, posted(alices, f"you are looking <@{bob}>"))
    assert browser.received == []
    bobs.send({"type": "visibility", "visible": False})
    bobs.sync()
    message = posted(alices, f"now you are not <@{bob}>")
    assert service.wait_for(browser)[0]["message_id"] == message["id"]
    bobs_other_tab.send({"type": "visibility", "visible": True})
    bobs_other_tab.sync()
    assert runtime_of(app).hub.visible_users({bob}) == {bob}
    bobs_other_tab.close()  # A visible tab that closes no longer counts.
    wait_until(lambda: not runtime_of(app).hub.visible_users({bob}), "the tab to go")


def test_a_direct_message_pushes(app, service, ws_connect, alice, bob):
    alices, bobs = ws_connect(alice), ws_connect(bob)
    browser = service.browser()
    subscribe(app, "bob@example.com", browser)
    alices.send({"type": "open_dm", "user_id": bob})
    key = until(alices, "room")["room"]
    until(bobs, "room")
    message = posted(alices, "just between us", room=key)
    [payload] = service.wait_for(browser)
    assert payload["title"] == "alice"  # A direct room: the sender alone.
    assert payload["body"] == "just between us"
    assert payload["tag"] == payload["room"] == key
    assert payload["url"] == f"/?room={key.replace(':', '%3A')}#m{message['id']}"


@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_subscription_is_deleted(app, service, ws_connect, alice, bob, status):
    alices, _bobs = ws_connect(alice), ws_connect(bob)
    gone, kept = service.browser(answer=status), service.browser()
    subscribe(app, "bob@example.com", gone)
    subscribe(app, "bob@example.com", kept)
    message = posted(alices, f"<@{bob}> are you there")
    service.wait_for(kept)
    idle(app, message)
    with app.app_context():
        endpoints = db.session.scalars(select(PushSubscription.endpoint)).all()
    assert endpoints == [kept.endpoint]


def test_a_hanging_push_service_delays_no_other_push_nor_the_chat(
    app, service, ws_connect, alice, bob, carol
):
    alices, _bobs, _carols = ws_connect(alice), ws_connect(bob), ws_connect(carol)
    hanging, answering = service.browser(answer="hang"), service.browser()
    subscribe(app, "bob@example.com", hanging)
    subscribe(app, "carol@example.com", answering)
    posted(alices, f"<@{bob}> first, <@{carol}> second")
    service.wait_for_requests(1)
    service.wait_for(answering)  # While bob's push hangs (30 s, the whole test).
    assert not service.release.is_set()
    message = posted(alices, f"the chat goes on <@{carol}>")  # Stored and echoed meanwhile.
    assert service.wait_for(answering, 2)[1]["message_id"] == message["id"]
    service.release.set()
    idle(app, message)
    with app.app_context():  # No answer is not "gone": the subscription stays.
        assert db.session.scalar(select(PushSubscription).where(PushSubscription.user_id == bob))


def test_deactivated_people_and_bots_get_nothing(app, service, ws_connect, alice, bob, carol):
    alices, _bobs, _carols = ws_connect(alice), ws_connect(bob), ws_connect(carol)
    bobs_browser, carols_browser, marker = service.browser(), service.browser(), service.browser()
    subscribe(app, "bob@example.com", bobs_browser)
    subscribe(app, "carol@example.com", carols_browser)
    dave = login_and_subscribe_marker(app, marker)
    with app.app_context():
        db.session.get(User, bob).deactivated_at = utcnow()
        db.session.get(User, carol).is_bot = True
        db.session.commit()
    message = posted(alices, f"<@{bob}> <@{carol}> <@{dave}>")
    service.wait_for(marker)
    idle(app, message)
    assert bobs_browser.received == carols_browser.received == []


def login_and_subscribe_marker(app, browser):
    """dave, a member of general with a subscribed browser; his id."""
    with app.app_context():
        user = User(email="dave@example.com")
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.flush()
        db.session.add(Membership(room_id=ensure_general(), user_id=user.id))
        db.session.commit()
        dave = user.id
    subscribe(app, "dave@example.com", browser)
    return dave


# ---- The endpoints ---------------------------------------------------------------------------


def test_the_key_and_the_service_worker(app, client, alice):
    assert client.get("/push/key").status_code == 401
    login(client)
    key = client.get("/push/key").json["public_key"]
    assert key == load_keys(_path(app)).public_key
    assert len(key) == 87  # 65 bytes, base64url
    assert os.stat(_path(app)).st_mode & 0o777 == 0o600
    worker = client.get("/sw.js")
    assert worker.status_code == 200
    assert worker.mimetype == "text/javascript"
    assert worker.headers["Cache-Control"] == "no-cache"
    assert b"notificationclick" in worker.data
    worker.close()


def _path(app):
    return Path(app.config["CHAT_VAPID_KEY_FILE"])


def test_subscriptions_refuse_bad_input(app, service, alice, bob):
    client, token = subscribe(app, "alice@example.com", service.browser())
    headers = {"X-CSRFToken": token}
    good = service.browser().subscription()
    bad_point = "BA" + good["keys"]["p256dh"][2:-4] + "AAAA"  # 65 bytes, not on the curve
    cases = [
        ("not json", 400, "bad_request"),
        ([1, 2], 400, "bad_request"),
        ({"endpoint": good["endpoint"]}, 400, "bad_request"),
        ({**good, "endpoint": "ftp://127.0.0.1/x"}, 400, "bad_endpoint"),
        ({**good, "endpoint": "http://push.example.com/x"}, 400, "bad_endpoint"),
        ({**good, "endpoint": "https://10.0.0.7/x"}, 400, "bad_endpoint"),
        ({**good, "endpoint": "https://169.254.169.254/x"}, 400, "bad_endpoint"),
        ({**good, "endpoint": "https://u:p@push.example.com/x"}, 400, "bad_endpoint"),
        ({**good, "endpoint": "https://push.example.com/" + "x" * 2048}, 400, "bad_endpoint"),
        ({**good, "keys": {**good["keys"], "p256dh": "AAAA"}}, 400, "bad_keys"),
        ({**good, "keys": {**good["keys"], "p256dh": bad_point}}, 400, "bad_keys"),
        (
            {**good, "keys": {**good["keys"], "p256dh": good["keys"]["p256dh"][:-1] + "!"}},
            400,
            "bad_keys",
        ),
        ({**good, "keys": {**good["keys"], "auth": "c2hvcnQ"}}, 400, "bad_keys"),
        ({**good, "keys": {**good["keys"], "auth": 16}}, 400, "bad_keys"),
    ]
    for body, status, code in cases:
        if isinstance(body, str):
            response = client.post(
                "/push/subscriptions", data=body, headers=headers, content_type="application/json"
            )
        else:
            response = client.post("/push/subscriptions", json=body, headers=headers)
        assert (response.status_code, response.json["error"]) == (status, code), body
        assert response.json["message"]
    no_csrf = client.post("/push/subscriptions", json=good)
    assert (no_csrf.status_code, no_csrf.json["error"]) == (400, "csrf_failed")
    with app.app_context():
        assert db.session.scalar(select(db.func.count(PushSubscription.id))) == 1  # The first.
    anonymous = app.test_client()
    token = csrf_token(anonymous.get("/login"))
    refused = anonymous.post("/push/subscriptions", json=good, headers={"X-CSRFToken": token})
    assert (refused.status_code, refused.json["error"]) == (401, "unauthenticated")
    wrong_method = client.put("/push/subscriptions", json=good, headers=headers)
    assert (wrong_method.status_code, wrong_method.json["error"]) == (405, "method_not_allowed")


def test_an_endpoint_moves_and_only_its_owner_removes_it(app, service, alice, bob):
    browser = service.browser()
    alices, alice_token = subscribe(app, "alice@example.com", browser)
    bobs = app.test_client()
    login(bobs, "bob@example.com")
    bob_token = csrf_token(bobs.get("/profile"))
    again = alices.post(
        "/push/subscriptions", json=browser.subscription(), headers={"X-CSRFToken": alice_token}
    )
    assert again.status_code == 200  # The same endpoint: updated, not doubled.
    target = {"endpoint": browser.endpoint}
    refused = bobs.delete("/push/subscriptions", json=target, headers={"X-CSRFToken": bob_token})
    assert (refused.status_code, refused.json["error"]) == (404, "not_found")
    with app.app_context():
        assert db.session.scalar(select(PushSubscription.user_id)) == alice
    moved = bobs.post(
        "/push/subscriptions", json=browser.subscription(), headers={"X-CSRFToken": bob_token}
    )
    assert moved.status_code == 200  # bob signed in on that browser: it is his now.
    with app.app_context():
        assert db.session.scalars(select(PushSubscription.user_id)).all() == [bob]
    missing = bobs.delete("/push/subscriptions", json={}, headers={"X-CSRFToken": bob_token})
    assert (missing.status_code, missing.json["error"]) == (400, "bad_request")
    done = bobs.delete("/push/subscriptions", json=target, headers={"X-CSRFToken": bob_token})
    assert done.status_code == 200
    with app.app_context():
        assert db.session.scalar(select(db.func.count(PushSubscription.id))) == 0


def test_endpoint_rules_without_the_test_setting():
    assert endpoint_problem("https://fcm.googleapis.com/fcm/send/abc", False) is None
    assert endpoint_problem("http://127.0.0.1:9/push", False) is not None
    assert endpoint_problem("https://127.0.0.1:9/push", False) is not None
    assert endpoint_problem("https://[::ffff:10.0.0.1]/push", False) is not None
    assert endpoint_problem("http://127.0.0.1:9/push", True) is None


def test_visibility_frames_are_parsed():
    assert protocol.parse_frame('{"type": "visibility", "visible": true}', 100) == (
        protocol.Visibility(True)
    )
    for frame in ('{"type": "visibility"}', '{"type": "visibility", "visible": "yes"}'):
        with pytest.raises(protocol.FrameError) as refused:
            protocol.parse_frame(frame, 100)
        assert refused.value.code == "bad_request"


# ---- Several workers: visibility is shared through Redis ------------------------------------


@pytest.fixture
def on_redis(app_config, redis_url):
    app_config.update(
        REDIS_URL=redis_url,
        CHAT_REDIS_PREFIX=f"chat-test-{uuid.uuid4().hex[:8]}",
        CHAT_PRESENCE_HEARTBEAT=1,
        CHAT_PRESENCE_TTL=6,
    )


@pytest.fixture
def second_server(app, app_config, make_app):
    """Another app (another worker) on the same database and Redis, served on its own port."""
    other = make_app(app_config)
    server = make_server("127.0.0.1", 0, other, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield other, f"127.0.0.1:{server.port}"
    server.shutdown()
    server.server_close()
    thread.join(5)
    push.sender_of(other).stop()


def test_a_visible_tab_on_another_worker_suppresses_the_push(
    on_redis, app, service, ws_connect, second_server, alice, bob
):
    other, address = second_server
    alices = ws_connect(alice)  # On the first worker.
    url = f"ws://{address}/ws?token={token_issued_at(other, bob)}"
    with connect(url, open_timeout=5) as ws:  # bob, on the second.
        bobs = ChatClient(ws)
        bobs.recv_type("hello")
        browser = service.browser()
        subscribe(app, "bob@example.com", browser)
        bobs.send({"type": "visibility", "visible": True})
        bobs.sync()
        assert runtime_of(app).hub.visible_users({alice, bob}) == {bob}
        idle(app, posted(alices, f"seen elsewhere <@{bob}>"))
        assert browser.received == []
        bobs.send({"type": "visibility", "visible": False})
        bobs.sync()
        assert runtime_of(app).hub.visible_users({bob}) == set()
        message = posted(alices, f"hidden elsewhere <@{bob}>")
        assert service.wait_for(browser)[0]["message_id"] == message["id"]


def test_a_payload_stays_small_whatever_the_message(app):
    member = audience.Member(1, "all", "fr", "public", "r" * 64)
    message = {
        "id": 2**53,
        "room": "p:" + "x" * 78,
        "user_id": 2,
        "user": "😀" * 40,
        "text": "🎉" * 2000 + " <@1>",
        "mentions": {1: "é" * 40},
        "attachments": [],
    }
    with app.app_context():
        payload = audience._payload(message, member)
    assert len(payload.encode()) < 3 * 1024
    assert json.loads(payload)["body"].endswith("…")


def test_a_person_keeps_at_most_twenty_browsers(app, service, alice):
    with app.app_context():
        for number in range(MAX_SUBSCRIPTIONS):
            db.session.add(
                PushSubscription(
                    user_id=alice,
                    endpoint=f"https://push.example.com/{number}",
                    p256dh="B" + "A" * 86,
                    auth="A" * 22,
                    created_at=datetime(2020, 1, 1 + number, tzinfo=UTC),
                )
            )
        db.session.commit()
    newest = service.browser()
    subscribe(app, "alice@example.com", newest)
    with app.app_context():
        endpoints = set(db.session.scalars(select(PushSubscription.endpoint)))
    assert len(endpoints) == MAX_SUBSCRIPTIONS
    assert newest.endpoint in endpoints
    assert "https://push.example.com/0" not in endpoints  # The oldest went.


def test_an_idle_worker_ends_and_the_next_message_starts_another(
    app, service, ws_connect, alice, bob, monkeypatch
):
    monkeypatch.setattr(sender_module, "IDLE_EXIT", 0.2)
    alices, _bobs = ws_connect(alice), ws_connect(bob)
    browser = service.browser()
    subscribe(app, "bob@example.com", browser)
    posted(alices, f"<@{bob}> one")
    service.wait_for(browser)
    sender = push.sender_of(app)
    wait_until(lambda: not sender.running, "the idle worker to end", timeout=10)
    posted(alices, f"<@{bob}> two")
    assert [p["body"] for p in service.wait_for(browser, 2)] == ["@bob one", "@bob two"]


def test_an_endpoint_at_a_private_address_is_never_reached(app, service, ws_connect, alice, bob):
    alices, _bobs = ws_connect(alice), ws_connect(bob)
    kept = service.browser()
    subscribe(app, "bob@example.com", kept)
    with app.app_context():  # Stored before the rules, say: net.guard refuses it at each push.
        db.session.add(
            PushSubscription(
                user_id=bob,
                endpoint="https://10.0.0.7/push",
                p256dh=kept.subscription()["keys"]["p256dh"],
                auth="A" * 22,
            )
        )
        db.session.commit()
    message = posted(alices, f"<@{bob}> private")
    service.wait_for(kept)
    idle(app, message)
    with app.app_context():
        assert db.session.scalar(select(db.func.count(PushSubscription.id))) == 2  # Not "gone".
        private = db.session.scalar(
            select(PushSubscription).where(PushSubscription.endpoint == "https://10.0.0.7/push")
        )
        assert private.last_push_at is None
