"""Rooms, direct messages, presence, typing, history paging and resume, over real sockets."""

import json
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import select
from websockets.sync.client import connect

from core import rooms
from extensions import db
from helpers import rejected, token_issued_at, wait_for_sockets
from models import Message, save_message

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.


@pytest.fixture
def people(make_user):
    """Three users: ``{"alice": id, "bob": id, "carol": id}``."""
    return {name: make_user(f"{name}@example.com")[0] for name in ("alice", "bob", "carol")}


def until(client, kind, room=None):
    """Frames up to and including the first of type ``kind`` (in ``room``, if given)."""
    seen = []
    while True:
        frame = client.recv()
        seen.append(frame)
        if frame["type"] == kind and (room is None or frame.get("room") == room):
            return seen


def last(client, kind, room=None):
    """The first frame of type ``kind`` (in ``room``), skipping others."""
    return until(client, kind, room)[-1]


def presence_of(client, user_id, room):
    """Skip to the next ``presence`` frame of ``room`` naming ``user_id``: "online" or "offline"."""
    while True:
        frame = last(client, "presence", room)
        for state in ("online", "offline"):
            if any(person["user_id"] == user_id for person in frame[state]):
                return state


def open_dm(client, other_id):
    """Open a direct room from ``client``; return its key."""
    client.send({"type": "open_dm", "user_id": other_id})
    return last(client, "room")["room"]


def test_hello_lists_rooms_with_who_is_online(ws_connect, people):
    alice = ws_connect(people["alice"])
    general = alice.hello["rooms"][0]
    assert alice.hello["current"] == "general"
    assert general["room"] == "general"
    assert general["kind"] == "public"
    assert general["online"] == [{"id": people["alice"], "name": "alice"}]
    assert alice.hello["public_rooms"] == [{"room": "general", "title": "general", "members": 1}]


def test_create_join_post_and_leave_a_public_room(ws_connect, people):
    alice, bob, carol = (ws_connect(people[n]) for n in ("alice", "bob", "carol"))
    alice.send({"type": "create_room", "name": "Dev"})
    room = last(alice, "room")
    assert (room["room"], room["title"], room["kind"]) == ("dev", "Dev", "public")
    assert last(bob, "room_created") == {"type": "room_created", "room": "dev", "title": "Dev"}

    bob.send({"type": "join_room", "room": "DEV"})
    joined = last(bob, "room")
    assert [p["name"] for p in joined["online"]] == ["alice", "bob"]
    assert presence_of(alice, people["bob"], "dev") == "online"

    alice.send({"type": "message", "room": "dev", "text": "dev only"})
    assert last(bob, "message")["room"] == "dev"
    # The marker: a message to general, stored and sent after "dev only". Up to it carol got
    # nothing of dev but its creation.
    alice.send({"type": "message", "room": "general", "text": "marker"})
    seen = until(carol, "message", "general")
    assert not [f for f in seen if f.get("room") == "dev" and f["type"] != "room_created"]

    bob.send({"type": "leave_room", "room": "dev"})
    assert last(bob, "room_left") == {"type": "room_left", "room": "dev"}
    assert presence_of(alice, people["bob"], "dev") == "offline"
    bob.send({"type": "message", "room": "dev", "text": "still here?"})
    assert last(bob, "error")["code"] == "forbidden"


def test_a_message_sent_just_before_leaving_still_reaches_the_room(ws_connect, people):
    alice, bob = ws_connect(people["alice"]), ws_connect(people["bob"])
    alice.send({"type": "create_room", "name": "Dev"})
    last(alice, "room")
    bob.send({"type": "join_room", "room": "dev"})
    last(bob, "room")
    assert presence_of(alice, people["bob"], "dev") == "online"
    # Back to back: the leave is handled only once the message before it is stored.
    bob.send({"type": "message", "room": "dev", "text": "bye all", "client_id": "b1"})
    bob.send({"type": "leave_room", "room": "dev"})
    frames = until(bob, "room_left")
    assert [f["text"] for f in frames if f["type"] == "message"] == ["bye all"]
    assert not [f for f in frames if f["type"] == "error"]
    assert last(alice, "message", "dev")["text"] == "bye all"
    assert presence_of(alice, people["bob"], "dev") == "offline"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "create_room", "name": "GENERAL"}, "name_taken"),
        ({"type": "join_room", "room": "nowhere"}, "not_found"),
        ({"type": "leave_room", "room": "general"}, "bad_request"),
        ({"type": "open_dm", "user_id": 99999}, "not_found"),
    ],
)
def test_room_requests_that_cannot_be_done(ws_connect, people, frame, code):
    alice = ws_connect(people["alice"])
    alice.send({**frame, "client_id": "r1"})
    error = last(alice, "error")
    assert (error["code"], error["client_id"]) == (code, "r1")


def test_direct_messages_reach_only_the_two(ws_connect, people):
    alice, bob, carol = (ws_connect(people[n]) for n in ("alice", "bob", "carol"))
    key = open_dm(alice, people["bob"])
    low, high = sorted((people["alice"], people["bob"]))
    assert key == f"dm:{low}:{high}"
    entry = last(bob, "room")
    assert (entry["room"], entry["title"], entry["kind"]) == (key, "alice", "direct")
    alice.send({"type": "message", "room": key, "text": "just us"})
    assert last(bob, "message")["text"] == "just us"
    alice.send({"type": "message", "room": "general", "text": "marker"})  # Sent after it.
    assert all(f.get("room") != key for f in until(carol, "message", "general"))
    alice.send({"type": "open_dm", "user_id": people["alice"]})
    assert last(alice, "error")["code"] == "bad_request"


OUTSIDER_FRAMES = [
    {"type": "message", "text": "let me in"},
    {"type": "switch"},
    {"type": "history"},
    {"type": "typing"},
    {"type": "read", "id": 1},
    {"type": "leave_room"},
    {"type": "join_room"},
]


@pytest.mark.parametrize("frame", OUTSIDER_FRAMES, ids=[f["type"] for f in OUTSIDER_FRAMES])
def test_outsiders_are_forbidden_every_frame_on_a_private_room(ws_connect, people, frame):
    alice, bob, carol = (ws_connect(people[n]) for n in ("alice", "bob", "carol"))
    key = open_dm(alice, people["bob"])
    last(bob, "room")
    alice.send({"type": "message", "room": key, "text": "secret"})
    last(bob, "message")
    carol.send({**frame, "room": key, "client_id": "x"})
    seen = until(carol, "error")  # Everything carol received since she connected.
    error = seen[-1]
    assert (error["code"], error["client_id"]) == ("forbidden", "x")
    assert error["message"] == "You are not in this room."
    carol.send("plain text still goes to general")  # A refused switch changed nothing.
    seen += until(carol, "message")
    assert seen[-1]["room"] == "general"
    alice.send({"type": "message", "room": key, "text": "more secrets"})
    bob.send({"type": "typing", "room": key})
    assert last(bob, "message", key)["text"] == "more secrets"  # The members got theirs...
    assert last(alice, "typing", key)["user"] == "bob"
    # ...and carol got none of it, nor anything else about the room, up to a marker that bob
    # sends to general after them.
    bob.send({"type": "message", "room": "general", "text": "marker"})
    seen += until(carol, "message", "general")
    assert seen[-1]["text"] == "marker"
    assert all(f.get("room") != key for f in seen)
    assert "secret" not in json.dumps(seen)
    assert key not in json.dumps(seen)


@pytest.mark.parametrize("kind", ["join_room", "history", "typing"])
def test_existing_and_missing_direct_rooms_look_the_same_to_outsiders(ws_connect, people, kind):
    alice, _bob, carol = (ws_connect(people[n]) for n in ("alice", "bob", "carol"))
    existing = open_dm(alice, people["bob"])
    missing = "dm:98:99"
    answers = []
    for key in (existing, missing):
        carol.send({"type": kind, "room": key, "client_id": "q"})
        answers.append(last(carol, "error"))
    assert answers[0] == answers[1]
    assert answers[0]["code"] == "forbidden"


def test_direct_messages_only_with_people_you_can_see(ws_connect, people, make_user):
    loner = make_user("loner@example.com")[0]  # Exists, but is not online.
    alice = ws_connect(people["alice"])
    answers = []
    for user_id in (loner, 99_999):  # Offline and nonexistent get one answer: no enumeration.
        alice.send({"type": "open_dm", "user_id": user_id, "client_id": "d"})
        answers.append(last(alice, "error"))
    assert answers[0] == answers[1]
    assert answers[0]["code"] == "not_found"


def test_switch_moves_plain_text_to_another_room(ws_connect, people):
    alice, bob = ws_connect(people["alice"]), ws_connect(people["bob"])
    key = open_dm(alice, people["bob"])
    alice.send({"type": "switch", "room": key, "client_id": "s"})
    assert last(alice, "switched") == {"type": "switched", "room": key, "client_id": "s"}
    alice.send("typed in Postman")
    message = last(bob, "message")
    assert (message["room"], message["text"]) == (key, "typed in Postman")


def test_history_pages_back_at_most_100_at_a_time(app, ws_connect, people, general):
    with app.app_context():
        ids = [save_message(people["bob"], general, f"m{n}")[0]["id"] for n in range(130)]
    alice = ws_connect(people["alice"])
    assert [m["id"] for m in alice.hello["history"]] == ids[-50:]
    alice.send({"type": "history", "room": "general", "before": ids[-50], "limit": 100})
    page = last(alice, "history")
    assert [m["id"] for m in page["messages"]] == ids[-150:-50][-100:]
    assert page["has_more"] is False  # 80 older ones, all in this page.
    assert (page["room"], page["reset"]) == ("general", False)
    alice.send({"type": "history", "room": "general", "before": ids[40], "limit": 10})
    page = last(alice, "history")
    assert [m["id"] for m in page["messages"]] == ids[30:40]
    assert page["has_more"] is True


def test_typing_is_throttled_and_never_echoed(app, ws_connect, people):
    app.config["CHAT_TYPING_INTERVAL"] = 0.3
    alice, bob = ws_connect(people["alice"]), ws_connect(people["bob"])
    for _ in range(5):
        alice.send({"type": "typing", "room": "general"})
    # The marker: a message sent after them. Up to it bob got one typing frame, alice none.
    alice.send({"type": "message", "room": "general", "text": "marker"})
    typing = [f for f in until(bob, "message") if f["type"] == "typing"]
    assert typing == [
        {
            "type": "typing",
            "room": "general",
            "user": "alice",
            "user_id": people["alice"],
            "expires_in": app.config["CHAT_TYPING_TTL"],
        }
    ]
    assert not [f for f in until(alice, "message") if f["type"] == "typing"]
    time.sleep(0.3)  # Not a quiet window: the throttle's interval must pass.
    alice.send({"type": "typing", "room": "general"})  # The interval has passed: relayed again.
    assert last(bob, "typing")["user"] == "alice"


def test_presence_per_room_counts_tabs_as_one_person(app, ws_connect, people):
    alice = ws_connect(people["alice"])
    alice.send({"type": "create_room", "name": "dev"})
    last(alice, "room")
    tabs = [ws_connect(people["bob"]) for _ in range(3)]
    assert presence_of(alice, people["bob"], "general") == "online"
    tabs[0].send({"type": "join_room", "room": "dev"})
    joined = until(alice, "presence", "dev")
    assert [f["type"] for f in joined] == ["presence"]
    assert joined[0]["online"] == [{"user_id": people["bob"], "user": "bob"}]
    for tab in tabs:
        assert last(tab, "room", None)["room"] == "dev"  # Every tab of bob's learns the room.
    tabs[0].close()
    tabs[1].close()
    wait_for_sockets(app, people["bob"], 1)
    # The marker: carol's arrival, noted after the two tabs went. The next presence frame is
    # hers alone: bob is still in both rooms in his last tab.
    ws_connect(people["carol"])
    assert last(alice, "presence") == {
        "type": "presence",
        "room": "general",
        "online": [{"user_id": people["carol"], "user": "carol"}],
        "offline": [],
        "count": 3,
    }
    tabs[2].close()
    leaves = [last(alice, "presence"), last(alice, "presence")]  # One frame per room.
    assert sorted(f["room"] for f in leaves) == ["dev", "general"]
    assert all(f["offline"] == [{"user_id": people["bob"], "user": "bob"}] for f in leaves)


def test_read_marker_sets_unread_counts_and_syncs_tabs(app, ws_connect, people, general):
    with app.app_context():
        ids = [save_message(people["bob"], general, f"m{n}")[0]["id"] for n in range(3)]
    first, second = ws_connect(people["alice"]), ws_connect(people["alice"])
    assert first.hello["rooms"][0]["unread"] == 3
    first.send({"type": "read", "room": "general", "id": ids[1]})
    assert last(second, "read") == {"type": "read", "room": "general", "id": ids[1]}
    assert last(first, "read")["id"] == ids[1]  # Every tab, the sender's included.
    first.send({"type": "read", "room": "general", "id": 10**9})  # Never past the last message.
    assert last(first, "read")["id"] == ids[2]
    assert ws_connect(people["alice"]).hello["rooms"][0]["unread"] == 0


@contextmanager
def resuming(app, server, user_id, marks):
    """A socket that resumes from ``marks`` (room -> last id seen): ``?resume=1``, then a frame."""
    url = f"ws://{server}/ws?token={token_issued_at(app, user_id)}&resume=1"
    with connect(url, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "resume", "rooms": marks}))
        yield ws


def test_resume_replays_exactly_what_was_missed(app, live_server, ws_connect, people, general):
    alice = ws_connect(people["alice"])
    alice.send("before")
    seen = last(alice, "message")["id"]
    alice.close()
    with app.app_context():
        missed = [save_message(people["bob"], general, f"m{n}")[0]["id"] for n in range(5)]
    with resuming(app, live_server, people["alice"], {"general": seen}) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["history"] == []
        replayed = [json.loads(ws.recv(timeout=5)) for _ in missed]
        assert [frame["id"] for frame in replayed] == missed
        ws.send("after")
        assert json.loads(ws.recv(timeout=5))["text"] == "after"


def test_resume_over_the_budget_resets_rooms_instead_of_flooding(app, live_server, people, general):
    app.config["CHAT_RESUME_LIMIT"] = 5
    with app.app_context():
        dev = rooms.create_room("dev", people["bob"])
        rooms.join_public("dev", people["alice"])
        ids = [save_message(people["bob"], general, f"m{n}")[0]["id"] for n in range(3)]
        dev_ids = [save_message(people["bob"], dev.id, f"d{n}")[0]["id"] for n in range(60)]
    marks = {"general": ids[0], "dev": 0}
    with resuming(app, live_server, people["alice"], marks) as ws:
        json.loads(ws.recv(timeout=5))
        frames = [json.loads(ws.recv(timeout=5)) for _ in range(3)]
    # "dev" comes first (rooms are listed by name): 60 missed is over the budget of 5: reset.
    reset, *replayed = frames
    assert (reset["type"], reset["room"], reset["reset"]) == ("history", "dev", True)
    assert [m["id"] for m in reset["messages"]] == dev_ids[-50:]
    assert reset["has_more"] is True
    assert [f["id"] for f in replayed] == ids[1:]  # general fits in the budget: replayed.


@pytest.mark.parametrize(
    "first_frame",
    [
        "general 5",
        '{"type": "resume", "rooms": [1]}',
        '{"type": "resume", "rooms": {"general": -1}}',
    ],
)
def test_bad_resume_frame_gets_an_error_and_a_plain_hello(app, live_server, people, first_frame):
    url = f"ws://{live_server}/ws?token={token_issued_at(app, people['alice'])}&resume=1"
    with connect(url, open_timeout=5) as ws:
        ws.send(first_frame)
        error = json.loads(ws.recv(timeout=5))
        assert (error["type"], error["code"]) == ("error", "bad_request")
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"


def test_bad_resume_parameter_is_a_400_before_the_upgrade(app, live_server, people):
    token = token_issued_at(app, people["alice"])
    response = rejected(live_server, f"?token={token}&resume=yes")
    assert response.status_code == 400


def test_resume_ignores_rooms_the_user_is_not_in(app, live_server, ws_connect, people):
    alice, bob = ws_connect(people["alice"]), ws_connect(people["bob"])
    key = open_dm(alice, people["bob"])
    alice.send({"type": "message", "room": key, "text": "secret"})
    last(bob, "message")
    with resuming(app, live_server, people["carol"], {key: 0, "general": 0}) as ws:
        frames = [json.loads(ws.recv(timeout=5))]
        # The marker: a request answered after the replay, which the greeting queued.
        ws.send(json.dumps({"type": "history", "room": "general", "limit": 1}))
        while frames[-1]["type"] != "history" or frames[-1]["reset"]:
            frames.append(json.loads(ws.recv(timeout=5)))
    assert "secret" not in json.dumps(frames)
    with app.app_context():
        assert db.session.scalars(select(Message.text)).all() == ["secret"]
