"""Edits, deletions, replies, reactions and mentions over real sockets, and their resume."""

import json
import uuid
from contextlib import ExitStack, suppress
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from extensions import db
from helpers import token_issued_at
from models import Mention, Message, MessageChange, Reaction, User, utcnow

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.


@pytest.fixture
def trio(make_user, ws_connect):
    """alice, bob and carol, each with a socket (a ``ChatClient`` with ``.id``)."""
    people = {}
    for name in ("alice", "bob", "carol"):
        user_id = make_user(f"{name}@example.com")[0]
        people[name] = ws_connect(user_id)
        people[name].id = user_id
    alice, bob, carol = people.values()
    # Each has seen those who came after: their hello showed those before.
    alice.await_presence(online=[bob.id, carol.id])
    bob.await_presence(online=[carol.id])
    return alice, bob, carol


def post(chat, text, **fields):
    """Post a message and return it, as echoed to its sender."""
    client_id = uuid.uuid4().hex
    chat.send({"type": "message", "text": text, "client_id": client_id, **fields})
    while True:
        frame = chat.recv()
        if frame.get("client_id") == client_id:
            assert frame["type"] == "message", frame
            return frame


def change(chat, kind, message_id, **fields):
    """Send a change; return the sender's answer to it (``message_changed`` or ``error``),
    matched by ``client_id`` (one is made up if ``fields`` has none)."""
    fields.setdefault("client_id", uuid.uuid4().hex)
    chat.send({"type": kind, "id": message_id, **fields})
    while True:
        frame = chat.recv()
        if frame.get("client_id") == fields["client_id"]:
            return frame
        assert frame["type"] in {"presence", "message", "message_changed"}, frame


def history(chat, room="general"):
    """The messages of a room's latest page, as they are now (frames before it are skipped)."""
    chat.send({"type": "history", "room": room, "limit": 100})
    while True:
        frame = chat.recv()
        if frame["type"] == "history":
            return frame["messages"]


def refused(chat, kind, message_id, code, **fields):
    """Assert that a change is refused with ``code``; return the error."""
    frame = change(chat, kind, message_id, **fields)
    assert (frame["type"], frame["code"]) == ("error", code), frame
    return frame


def test_an_edit_reaches_everyone_marked_edited(app, trio):
    alice, bob, carol = trio
    posted = post(alice, "helo **world**")
    bob.recv_type("message")
    answer = change(alice, "edit", posted["id"], text="hello **world**", client_id="e1")
    seen = bob.recv_type("message_changed")
    assert answer == seen
    assert seen["kind"] == "edit"
    assert seen["user_id"] == alice.id
    assert seen["client_id"] == "e1"
    assert isinstance(seen["change"], int)
    message = seen["message"]
    assert message["id"] == posted["id"]
    assert message["text"] == "hello **world**"
    assert message["html"] == "<p>hello <strong>world</strong></p>"
    assert message["edited_at"] is not None
    assert message["ts"] == posted["ts"]
    assert carol.recv_type("message")["id"] == posted["id"]
    assert carol.recv_type("message_changed") == seen
    (stored,) = history(bob)
    assert stored == message  # A history page shows it as it is now.


def test_an_edit_or_deletion_is_for_the_author_only(app, trio, ws_connect):
    alice, bob, carol = trio
    posted = post(alice, "mine")
    refused(bob, "edit", posted["id"], "forbidden", text="yours now")
    refused(bob, "delete", posted["id"], "forbidden")
    refused(alice, "edit", 10**9, "not_found", text="x")
    refused(alice, "edit", posted["id"], "too_long", text="x" * 2001)
    refused(alice, "edit", posted["id"], "empty", text=" \u200b ")
    refused(alice, "edit", posted["id"], "bad_text", text="a\x1bb")
    refused(alice, "edit", posted["id"], "bad_request", text=5)
    refused(alice, "delete", True, "bad_request")
    with app.app_context():
        assert db.session.scalar(select(Message.text)) == "mine"
        assert db.session.scalar(select(func.count(MessageChange.id))) == 0
    for chat in (bob, carol):
        assert not [f for f in chat.sync() if f["type"] == "message_changed"]


def test_a_message_in_a_room_one_is_not_in_is_forbidden(app, trio):
    alice, bob, carol = trio
    alice.send({"type": "open_dm", "user_id": bob.id})
    dm = alice.recv_type("room")["room"]
    posted = post(alice, "between us", room=dm)
    refused(carol, "react", posted["id"], "forbidden", emoji="👀")
    refused(carol, "edit", posted["id"], "forbidden", text="hi")
    # A reply names its parent's room only to its members: to anyone else it does not exist.
    carol.send({"type": "message", "text": "re", "reply_to": posted["id"], "client_id": "r"})
    error = carol.recv_type("error")
    assert error["code"] == "not_found"
    assert error["client_id"] == "r"
    assert "between us" not in json.dumps(error)


def test_edit_window(app, make_user, general, ws_connect):
    app.config["CHAT_EDIT_WINDOW"] = 60
    alice = make_user("alice@example.com")[0]
    with app.app_context():
        for age in (30, 120):
            posted = utcnow() - timedelta(seconds=age)
            db.session.add(
                Message(room_id=general, user_id=alice, text=f"{age}s", created_at=posted)
            )
        db.session.commit()
    chat = ws_connect(alice)
    recent, old = (m["id"] for m in chat.hello["history"])
    assert change(chat, "edit", recent, text="fixed")["type"] == "message_changed"
    frame = refused(chat, "edit", old, "forbidden", text="too late")
    assert "too old" in frame["message"]
    assert change(chat, "delete", old)["type"] == "message_changed"  # Deleting has no window.


def test_a_deletion_erases_the_text_and_leaves_a_tombstone(app, trio):
    alice, bob, carol = trio
    posted = post(alice, f"secret for <@{bob.id}>")
    assert posted["mentions"] == [bob.id]
    assert change(bob, "react", posted["id"], emoji="😮")["kind"] == "react"
    reply = post(bob, "what secret?", reply_to=posted["id"])
    assert reply["reply_to"]["excerpt"] == "secret for @bob"
    deleted = change(alice, "delete", posted["id"], client_id="d1")
    assert deleted["kind"] == "delete"
    message = deleted["message"]
    assert message["deleted"] is True
    assert message["text"] == ""
    assert message["html"] is None
    assert message["reactions"] == []
    assert message["mentions"] == []
    assert deleted["quoted"] == {
        "id": posted["id"], "user": "alice", "user_id": alice.id, "excerpt": "", "deleted": True,
    }  # fmt: skip
    with app.app_context():
        row = db.session.get(Message, posted["id"])
        assert row.text == ""
        assert row.deleted_at is not None
        assert db.session.scalar(select(func.count(Reaction.id))) == 0
        assert db.session.scalar(select(func.count()).select_from(Mention)) == 0
    tombstone, answer = history(bob)
    assert tombstone == message
    assert answer["reply_to"]["deleted"] is True
    assert answer["reply_to"]["excerpt"] == ""
    refused(bob, "react", posted["id"], "not_found", emoji="👍")
    refused(alice, "edit", posted["id"], "not_found", text="back")
    again = change(alice, "delete", posted["id"])  # Deleting a deleted message changes nothing.
    assert again["change"] is None
    assert [f for f in carol.sync() if f["type"] == "message_changed"][-1]["kind"] == "delete"


def test_replies_quote_their_parent_and_follow_its_edits(app, trio):
    alice, bob, carol = trio
    parent = post(alice, "a " + "long " * 40 + "question")
    reply = post(bob, "an answer", reply_to=parent["id"])
    quoted = reply["reply_to"]
    assert quoted["id"] == parent["id"]
    assert quoted["user"] == "alice"
    assert quoted["user_id"] == alice.id
    assert quoted["deleted"] is False
    assert len(quoted["excerpt"]) == 100
    assert quoted["excerpt"].endswith("…")
    edited = change(alice, "edit", parent["id"], text="a short question")
    assert edited["quoted"]["excerpt"] == "a short question"
    messages = history(carol)
    assert messages[-1]["reply_to"] == edited["quoted"]  # What the change told replies to show.


def test_a_reply_must_be_to_a_live_message_of_the_same_room(app, trio):
    alice, bob, _carol = trio
    alice.send({"type": "open_dm", "user_id": bob.id})
    dm = alice.recv_type("room")["room"]
    in_dm = post(alice, "dm", room=dm)
    for reply_to, code in [
        (in_dm["id"], "bad_request"),
        (10**9, "not_found"),
        ("1", "bad_request"),
    ]:
        alice.send({"type": "message", "text": "re", "reply_to": reply_to, "client_id": "x"})
        assert alice.recv_type("error")["code"] == code
    gone = post(alice, "soon gone")
    change(alice, "delete", gone["id"])
    alice.send({"type": "message", "text": "re", "reply_to": gone["id"], "client_id": "y"})
    assert alice.recv_type("error")["code"] == "not_found"
    with app.app_context():
        assert db.session.scalar(select(func.count(Message.id)).where(Message.text == "re")) == 0


def test_reactions_toggle_and_keep_the_order_of_first_use(app, trio):
    alice, bob, carol = trio
    posted = post(alice, "lunch?")
    change(bob, "react", posted["id"], emoji="🍕")
    change(alice, "react", posted["id"], emoji="👍🏽")
    last = change(alice, "react", posted["id"], emoji="🍕")
    assert last["message"]["reactions"] == [
        {"emoji": "🍕", "count": 2, "user_ids": [bob.id, alice.id]},
        {"emoji": "👍🏽", "count": 1, "user_ids": [alice.id]},
    ]
    again = change(alice, "react", posted["id"], emoji="🍕")  # Once per person and emoji.
    assert again["change"] is None
    assert again["message"]["reactions"] == last["message"]["reactions"]
    gone = change(bob, "unreact", posted["id"], emoji="🍕")
    assert gone["message"]["reactions"] == [  # Ordered by the first of those still there.
        {"emoji": "👍🏽", "count": 1, "user_ids": [alice.id]},
        {"emoji": "🍕", "count": 1, "user_ids": [alice.id]},
    ]
    assert change(bob, "unreact", posted["id"], emoji="🍕")["change"] is None
    kinds = [f["kind"] for f in carol.sync() if f["type"] == "message_changed"]
    assert kinds == ["react", "react", "react", "unreact"]  # No-ops go to their sender alone.


@pytest.mark.parametrize("emoji", ["a", "👍👍", "", " 👍", ":+1:", 5, None, "👍" * 40])
def test_a_reaction_is_exactly_one_emoji(app, trio, emoji):
    alice, _bob, _carol = trio
    posted = post(alice, "hi")
    refused(alice, "react", posted["id"], "bad_request", emoji=emoji)


def test_at_most_twenty_different_emoji(app, trio):
    alice, bob, _carol = trio
    app.config.update(CHAT_FRAME_BURST=100)
    posted = post(alice, "vote")
    faces = [chr(0x1F600 + n) for n in range(21)]
    for face in faces[:20]:
        assert change(bob, "react", posted["id"], emoji=face)["change"] is not None
    refused(bob, "react", posted["id"], "too_many_reactions", emoji=faces[20])
    assert change(alice, "react", posted["id"], emoji=faces[0])["change"] is not None  # Known one.


def test_retried_changes_apply_once(app, trio):
    alice, bob, carol = trio
    posted = post(alice, "v1")
    first = change(alice, "edit", posted["id"], text="v2", client_id="edit-1")
    retry = change(alice, "edit", posted["id"], text="v2", client_id="edit-1")
    assert retry["change"] is None
    assert retry["client_id"] == "edit-1"
    assert retry["message"] == first["message"]
    change(bob, "react", posted["id"], emoji="🎉", client_id="r1")
    change(bob, "unreact", posted["id"], emoji="🎉", client_id="r2")
    late = change(bob, "react", posted["id"], emoji="🎉", client_id="r1")  # An old retry.
    assert late["change"] is None
    assert late["message"]["reactions"] == []
    with app.app_context():
        assert db.session.scalar(select(func.count(MessageChange.id))) == 3
        assert db.session.scalar(select(func.count(Reaction.id))) == 0
    kinds = [f["kind"] for f in carol.sync() if f["type"] == "message_changed"]
    assert kinds == ["edit", "react", "unreact"]


def test_mentions_are_stored_by_id_and_shown_by_the_name_of_now(app, trio, make_user, ws_connect):
    alice, bob, carol = trio
    outsider = make_user("dave@example.com")[0]
    text = f"ping <@{bob.id}> and <@{outsider}>, not `<@{carol.id}>`"
    posted = post(alice, text)
    assert posted["text"] == text
    assert posted["mentions"] == [bob.id]  # dave is in no room with us: not mentioned, not named.
    html = posted["html"]
    assert f'<span class="mention" data-user-id="{bob.id}">@bob</span>' in html
    assert f"&lt;@{outsider}&gt;" in html
    assert "dave" not in html
    assert f"<code>&lt;@{carol.id}&gt;</code>" in html
    with app.app_context():
        db.session.execute(update(User).where(User.id == bob.id).values(display_name="Robert"))
        db.session.commit()
    (shown,) = history(carol)
    assert "@Robert" in shown["html"]
    assert shown["mentions"] == [bob.id]
    again = ws_connect(bob.id)  # Bob's unread mention is counted on his room.
    general = next(room for room in again.hello["rooms"] if room["room"] == "general")
    assert general["unread"] == 1
    assert general["mentions"] == 1
    edited = change(alice, "edit", posted["id"], text="never mind")
    assert edited["message"]["mentions"] == []
    fresh = ws_connect(bob.id)
    assert next(r for r in fresh.hello["rooms"] if r["room"] == "general")["mentions"] == 0


def test_members_of_a_room(app, trio):
    alice, bob, carol = trio
    alice.send({"type": "members", "room": "general"})
    frame = alice.recv_type("members")
    assert frame["members"] == [
        {"id": alice.id, "name": "alice", "avatar_url": None},
        {"id": bob.id, "name": "bob", "avatar_url": None},
        {"id": carol.id, "name": "carol", "avatar_url": None},
    ]  # No pictures uploaded: the initials.
    alice.send({"type": "open_dm", "user_id": bob.id})
    dm = alice.recv_type("room")["room"]
    carol.send({"type": "members", "room": dm})
    assert carol.recv_type("error")["code"] == "forbidden"


def test_changes_count_against_the_frame_rate_not_the_message_rate(app, trio):
    alice, bob, _carol = trio
    app.config.update(CHAT_MESSAGE_BURST=1, CHAT_MESSAGE_RATE=0.01)
    posted = post(alice, "only one")
    alice.send({"type": "message", "text": "a second", "client_id": "m2"})
    assert alice.recv_type("error")["code"] == "rate_limited"
    for face in "😀😁😂🤣😃":
        assert change(bob, "react", posted["id"], emoji=face)["type"] == "message_changed"
    assert change(alice, "edit", posted["id"], text="still one")["type"] == "message_changed"


# ---- Resume: a copy kept from frames alone ----------------------------------------------------


class Replica:
    """A client that keeps an exact copy of its rooms from the frames alone, as the README says
    a script can: messages by id, changes applied in order, resumes from where it stands."""

    def __init__(self, app, server, user_id):
        self.app, self.server, self.user_id = app, server, user_id
        self.rooms = {}  # room -> {message id: message}
        self.change = None  # The last change number seen.
        self.outbox = {}  # client_id -> frame, not yet confirmed
        self.stack = ExitStack()
        self.ws = None

    def connect(self):
        marks = {room: max(messages, default=0) for room, messages in self.rooms.items()}
        resuming = self.change is not None
        token = token_issued_at(self.app, self.user_id)
        url = f"ws://{self.server}/ws?token={token}&resume={int(resuming)}"
        self.ws = self.stack.enter_context(connect(url, open_timeout=5))
        if resuming:
            self.ws.send(json.dumps({"type": "resume", "rooms": marks, "changes": self.change}))
        hello = self.recv()
        assert hello["type"] == "hello"
        if not resuming:
            self.change = hello["changes"]
            for room in hello["rooms"]:
                self.rooms.setdefault(room["room"], {})
            for message in hello["history"]:
                self.apply(message)
        else:
            self.pump(lambda: self.resumed)
        for frame in self.outbox.values():
            self.ws.send(json.dumps(frame))

    def recv(self, timeout=10):
        return json.loads(self.ws.recv(timeout=timeout))

    def apply(self, frame):
        kind = frame["type"]
        self.resumed = kind == "resumed"
        if kind == "resumed":
            assert frame["changes"] >= self.change
            self.change = frame["changes"]
        elif kind == "message":
            room = self.rooms.setdefault(frame["room"], {})
            assert frame["id"] not in room or frame["user_id"] == self.user_id, "a duplicate"
            room[frame["id"]] = frame
            self.outbox.pop(frame["client_id"], None)
        elif kind == "history":
            room = self.rooms.setdefault(frame["room"], {})
            if frame["reset"]:
                room.clear()
            room.update({m["id"]: m for m in frame["messages"]})
        elif kind == "message_changed":
            self.outbox.pop(frame["client_id"], None)
            if frame["change"] is None:
                return
            assert frame["change"] > self.change, "changes out of order, or twice"
            self.change = frame["change"]
            room = self.rooms.setdefault(frame["room"], {})
            message = frame["message"]
            if message["id"] in room:
                room[message["id"]] = message
            for other in room.values():
                if other["reply_to"] and other["reply_to"]["id"] == message["id"]:
                    other["reply_to"] = frame["quoted"]
        elif kind == "room":
            self.rooms.setdefault(frame["room"], {})

    def pump(self, done, timeout=10):
        self.resumed = False
        while not done():
            self.apply(self.recv(timeout))

    def send(self, frame):
        frame = {**frame, "client_id": uuid.uuid4().hex}
        self.outbox[frame["client_id"]] = frame
        with suppress(ConnectionClosed):
            self.ws.send(json.dumps(frame))

    def sync(self):
        """Read until the answer to a marker request (see ``ChatClient.sync``)."""
        self.ws.send(json.dumps({"type": "history", "room": "general", "limit": 1}))
        while True:
            frame = self.recv()
            if frame["type"] == "history" and not frame["reset"]:
                return
            self.apply(frame)

    def drop(self):
        self.stack.close()
        self.stack = ExitStack()


def stored_state(replica):
    """What the database says the replica's rooms hold now, from a fresh socket's history."""
    fresh = Replica(replica.app, replica.server, replica.user_id)
    fresh.connect()
    for room in replica.rooms:
        fresh.ws.send(json.dumps({"type": "history", "room": room, "limit": 100}))
        fresh.pump(
            lambda r=room: fresh.rooms.get(r) and len(fresh.rooms[r]) >= len(replica.rooms[r])
        )
    fresh.drop()
    return {room: dict(fresh.rooms.get(room, {})) for room in replica.rooms}


def every_kind_of_change(alice, parent_id, reply_to_mine):
    """An edit, a deletion, reactions added and removed, a new reply and an edit of it."""
    alice.send({"type": "react", "id": parent_id, "emoji": "👍"})
    alice.send({"type": "react", "id": parent_id, "emoji": "🎉"})
    alice.send({"type": "unreact", "id": parent_id, "emoji": "👍"})
    alice.send({"type": "edit", "id": parent_id, "text": "edited while you were away"})
    alice.send({"type": "delete", "id": reply_to_mine})
    alice.send({"type": "message", "room": "general", "text": "new", "reply_to": parent_id})


@pytest.mark.parametrize("server_kind", ["live", "redis"])
def test_resume_after_every_kind_of_change_matches_a_client_that_stayed(
    request, app, make_user, server_kind
):
    if server_kind == "live":
        servers = [request.getfixturevalue("live_server")] * 2
    else:  # Two gunicorn instances joined by Redis: the changes cross workers.
        config = request.getfixturevalue("scaled_config")
        started = request.getfixturevalue("start_servers")(config, instances=2, workers=1)
        servers = [f"127.0.0.1:{server.port}" for server in started]
    ids = [make_user(f"{name}@example.com")[0] for name in ("alice", "bob", "carol")]
    alice = Replica(app, servers[0], ids[0])
    bob = Replica(app, servers[1], ids[1])
    carol = Replica(app, servers[1], ids[2])
    for replica in (alice, bob, carol):
        replica.connect()
    alice.send({"type": "message", "room": "general", "text": "parent"})
    alice.send({"type": "message", "room": "general", "text": "to delete"})
    for replica in (alice, bob, carol):
        replica.pump(lambda r=replica: len(r.rooms["general"]) == 2)
    parent_id, doomed = sorted(alice.rooms["general"])
    bob.send({"type": "react", "id": parent_id, "emoji": "👀"})
    for replica in (alice, bob, carol):
        replica.pump(lambda r=replica: r.rooms["general"][parent_id]["reactions"])

    bob.drop()
    every_kind_of_change(alice, parent_id, doomed)
    alice.pump(lambda: not alice.outbox)
    reply_id = max(alice.rooms["general"])
    alice.send({"type": "edit", "id": reply_id, "text": f"new, for <@{ids[1]}>"})
    alice.pump(lambda: not alice.outbox)
    carol.pump(lambda: carol.rooms["general"].get(reply_id, {}).get("edited_at"))
    bob.send({"type": "unreact", "id": parent_id, "emoji": "👀"})  # Offline: in the outbox.

    bob.connect()  # Resumes, then re-sends its outbox.
    bob.pump(lambda: not bob.outbox)
    for replica in (alice, carol):
        replica.pump(lambda r=replica: not r.rooms["general"][parent_id]["reactions"][1:])
    for replica in (alice, bob, carol):
        replica.sync()
    assert bob.rooms["general"] == carol.rooms["general"] == alice.rooms["general"]
    assert bob.change == carol.change == alice.change
    assert bob.rooms == stored_state(bob)
    parent = bob.rooms["general"][parent_id]
    assert parent["text"] == "edited while you were away"
    assert parent["reactions"] == [{"emoji": "🎉", "count": 1, "user_ids": [ids[0]]}]
    assert bob.rooms["general"][doomed]["deleted"] is True
    assert bob.rooms["general"][reply_id]["mentions"] == [ids[1]]
    for replica in (alice, bob, carol):
        replica.drop()


def test_a_resume_past_the_budget_resets_the_room(app, make_user, live_server):
    app.config.update(CHAT_RESUME_LIMIT=3, CHAT_FRAME_BURST=100)
    alice_id, bob_id = make_user("alice@example.com")[0], make_user("bob@example.com")[0]
    alice, bob = Replica(app, live_server, alice_id), Replica(app, live_server, bob_id)
    alice.connect()
    bob.connect()
    for n in range(5):
        alice.send({"type": "message", "room": "general", "text": f"m{n}"})
    alice.pump(lambda: not alice.outbox)
    bob.pump(lambda: len(bob.rooms["general"]) == 5)
    bob.drop()
    for message_id in sorted(alice.rooms["general"]):
        alice.send({"type": "react", "id": message_id, "emoji": "✅"})
    alice.pump(lambda: not alice.outbox)
    bob.connect()  # Five changed messages, three allowed: general comes as a reset page.
    assert all(m["reactions"] for m in bob.rooms["general"].values())
    assert bob.rooms["general"] == alice.rooms["general"]
    alice.drop()
    bob.drop()
