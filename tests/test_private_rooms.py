"""Rooms a team runs (issue 20): private rooms and who sees them, invitations by members and by
link, topics, renaming with a stable key, archiving, and deletion from the admin page.

Sockets over real WebSockets to a threaded server; the admin page and invitation links over
Flask's test client (their changes reach the live sockets through ``core.signals``).
"""

import json

import pytest
from sqlalchemy import func, select

from admin import actions
from core import rooms
from extensions import db
from helpers import PASSWORD, Http, csrf_token, login, submit_form
from models import ADMIN, AuditEntry, Membership, Message, Room, User, utcnow

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.

MISSING = "p:000000000000"  # A private key no room has.


def until(chat, kind):
    """The next frame of type ``kind``; frames of other kinds are skipped."""
    while (frame := chat.recv())["type"] != kind:
        pass
    return frame


def answer(chat, frame):
    """Send ``frame`` (with a client id) and return the frame that answers it."""
    client_id = frame.setdefault("client_id", f"c{id(frame)}")
    chat.send(frame)
    while (got := chat.recv()).get("client_id") != client_id:
        pass
    return got


def refusal(chat, frame):
    """The error code that answers ``frame``."""
    got = answer(chat, frame)
    assert got["type"] == "error", got
    return got["code"], got["message"]


def make_admin(app, user_id):
    with app.app_context():
        actions.set_role(db.session.get(User, user_id), ADMIN, actor_id=None)


def room_of(app, key):
    with app.app_context():
        room = db.session.scalar(select(Room).where(Room.key == key))
        if room is not None:
            db.session.expunge(room)
        return room


@pytest.fixture
def team(app, make_user, ws_connect):
    """alice, bob, carol and dave, one socket each (``.id`` is the user id)."""
    chats = {}
    for name in ("alice", "bob", "carol", "dave"):
        user_id = make_user(f"{name}@example.com")[0]
        chat = ws_connect(user_id)
        chat.id = user_id
        chats[name] = chat
    return chats


def private_room(chat, name="secret"):
    """``chat`` creates a private room; its ``room`` frame."""
    chat.send({"type": "create_room", "name": name, "private": True})
    return until(chat, "room")


def frames_about(key, user_id):
    """One frame of every kind that names a room."""
    return [
        {"type": "join_room", "room": key},
        {"type": "switch", "room": key},
        {"type": "history", "room": key},
        {"type": "message", "room": key, "text": "hi"},
        {"type": "members", "room": key},
        {"type": "typing", "room": key},
        {"type": "read", "room": key, "id": 1},
        {"type": "leave_room", "room": key},
        {"type": "invite", "room": key, "user_id": user_id},
        {"type": "invite_link", "room": key},
        {"type": "update_room", "room": key, "topic": "mine now"},
        {"type": "archive_room", "room": key},
        {"type": "remove_member", "room": key, "user_id": user_id},
    ]


def test_a_private_room_is_invisible_and_forbidden_to_outsiders(app, team, ws_connect):
    alice, bob = team["alice"], team["bob"]
    room = private_room(alice)
    key = room["room"]
    assert key.startswith("p:")
    assert len(key) == 14
    assert (room["kind"], room["title"], room["created_by"]) == ("private", "secret", alice.id)
    assert not any(f["type"] == "room_created" for f in bob.sync())  # Nobody else hears of it.
    alice.send({"type": "message", "room": key, "text": "the launch is on friday"})
    until(alice, "message")
    # Whether the key names a private room or none, every answer to an outsider is the same.
    for frame in frames_about(key, alice.id):
        there = refusal(bob, dict(frame))
        nowhere = refusal(bob, {**frame, "room": MISSING})
        assert there == nowhere, frame
        assert there[0] == "forbidden", frame
    # An administrator outside the room sees no more.
    make_admin(app, team["dave"].id)
    for frame in frames_about(key, alice.id)[-3:]:
        assert refusal(team["dave"], dict(frame))[0] == "forbidden"
    later = ws_connect(bob.id)
    assert key not in {r["room"] for r in later.hello["public_rooms"]}
    assert key not in {r["room"] for r in later.hello["rooms"]}


def test_search_and_suggestions_never_show_a_private_room(app, team, live_server):
    alice, bob = team["alice"], team["bob"]
    key = private_room(alice)["room"]
    alice.send({"type": "message", "room": key, "text": "quarterly numbers inside"})
    until(alice, "message")
    mine, theirs = Http(app, live_server, alice.id), Http(app, live_server, bob.id)
    status, _, body = mine.get("/api/search?q=quarterly")
    assert status == 200
    assert len(json.loads(body)["results"]) == 1
    for query in ("quarterly", "in%3Asecret+quarterly", f"quarterly&room={key}"):
        status, _, body = theirs.get(f"/api/search?q={query}")
        found = json.loads(body)
        assert found.get("results", []) == [], (query, found)
    # The people of a private room are its members' business only.
    assert refusal(bob, {"type": "members", "room": key})[0] == "forbidden"


def test_members_invite_and_the_invited_tabs_get_the_room_at_once(app, team, ws_connect):
    alice, bob, carol = team["alice"], team["bob"], team["carol"]
    second_tab = ws_connect(bob.id)
    key = private_room(alice)["room"]
    done = answer(alice, {"type": "invite", "room": key, "user_id": bob.id})
    assert done == {
        "type": "invited", "room": key, "user_id": bob.id, "added": True,
        "client_id": done["client_id"],
    }  # fmt: skip
    for tab in (bob, second_tab):
        entry = until(tab, "room")
        assert (entry["room"], entry["invited_by"], entry["kind"]) == (key, alice.id, "private")
    bob.send({"type": "message", "room": key, "text": "thanks for having me"})
    assert until(alice, "message")["text"] == "thanks for having me"
    # A member (not only the creator) invites; twice is once.
    assert answer(bob, {"type": "invite", "room": key, "user_id": carol.id})["added"] is True
    assert answer(alice, {"type": "invite", "room": key, "user_id": carol.id})["added"] is False
    # Nobody unknown, and nobody deactivated.
    assert refusal(alice, {"type": "invite", "room": key, "user_id": 999})[0] == "not_found"
    with app.app_context():
        actions.deactivate(db.session.get(User, team["dave"].id), actor_id=None)
    assert refusal(alice, {"type": "invite", "room": key, "user_id": team["dave"].id})[0] == (
        "not_found"
    )


def test_the_creator_and_administrators_remove_members_and_nobody_else(app, team):
    alice, bob, carol, dave = (team[n] for n in ("alice", "bob", "carol", "dave"))
    key = private_room(alice)["room"]
    for person in (bob, carol):
        answer(alice, {"type": "invite", "room": key, "user_id": person.id})
        until(person, "room")
    assert refusal(bob, {"type": "remove_member", "room": key, "user_id": carol.id})[0] == (
        "forbidden"
    )
    done = answer(alice, {"type": "remove_member", "room": key, "user_id": carol.id})
    assert done["type"] == "member_removed"
    assert until(carol, "room_left") == {"type": "room_left", "room": key, "removed_by": alice.id}
    assert refusal(carol, {"type": "history", "room": key})[0] == "forbidden"
    # An administrator who is in the room removes too (and it is audited: not their room).
    make_admin(app, dave.id)
    answer(alice, {"type": "invite", "room": key, "user_id": dave.id})
    until(dave, "room")
    assert answer(dave, {"type": "remove_member", "room": key, "user_id": bob.id})["type"] == (
        "member_removed"
    )
    with app.app_context():
        last = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        assert (last.actor_id, last.action) == (dave.id, "remove_member")


def test_topic_by_any_member_and_a_rename_by_the_creator_keep_the_key(app, team):
    alice, bob, carol = team["alice"], team["bob"], team["carol"]
    alice.send({"type": "create_room", "name": "python"})
    until(alice, "room")
    bob.send({"type": "join_room", "room": "python"})
    until(bob, "room")
    alice.send({"type": "message", "room": "python", "text": "before the rename"})
    first = until(bob, "message")
    bob.send({"type": "update_room", "room": "python", "topic": "  snakes\nand   eggs "})
    updated = until(alice, "room_updated")
    assert updated == {
        "type": "room_updated", "room": "python", "title": "python",
        "topic": "snakes and eggs", "archived": False, "by": bob.id, "client_id": None,
    }  # fmt: skip
    assert refusal(bob, {"type": "update_room", "room": "python", "title": "Mine"})[0] == (
        "forbidden"
    )
    answer(alice, {"type": "update_room", "room": "python", "title": "Snakes"})
    # A public room's new name reaches everyone (it is in the list of rooms to join).
    for chat in (carol, bob):
        while until(chat, "room_updated")["title"] != "Snakes":  # The topic's came first.
            pass
    # The key stays: history, posting and read marks still go by "python".
    bob.send({"type": "read", "room": "python", "id": first["id"]})
    assert until(bob, "read")["room"] == "python"
    alice.send({"type": "message", "room": "python", "text": "after the rename"})
    assert until(bob, "message")["room"] == "python"
    # Names other rooms go by are taken, in any case; so is the new name for a new room.
    carol.send({"type": "create_room", "name": "rust"})
    until(carol, "room")
    assert refusal(alice, {"type": "update_room", "room": "python", "title": "RUST"})[0] == (
        "name_taken"
    )
    assert refusal(carol, {"type": "create_room", "name": "snakes"})[0] == "name_taken"
    assert refusal(alice, {"type": "update_room", "room": "python", "topic": "x" * 251})[0] == (
        "too_long"
    )
    assert refusal(alice, {"type": "update_room", "room": "python", "topic": "a\x1b[2J"})[0] == (
        "bad_text"
    )
    assert refusal(alice, {"type": "update_room", "room": "python"})[0] == "bad_request"
    make_admin(app, carol.id)
    carol.send({"type": "join_room", "room": "general"})
    assert refusal(carol, {"type": "update_room", "room": "general", "title": "lobby"})[0] == (
        "bad_request"
    )


def test_an_archived_room_is_read_only_and_still_searchable(app, team, live_server):
    alice, bob, carol = team["alice"], team["bob"], team["carol"]
    alice.send({"type": "create_room", "name": "old"})
    until(alice, "room")
    bob.send({"type": "join_room", "room": "old"})
    until(bob, "room")
    alice.send({"type": "message", "room": "old", "text": "the retrospective notes"})
    message = until(bob, "message")
    assert refusal(bob, {"type": "archive_room", "room": "old"})[0] == "forbidden"
    answer(alice, {"type": "archive_room", "room": "old", "archived": True})
    assert until(bob, "room_updated")["archived"] is True
    refused = [
        {"type": "message", "room": "old", "text": "too late"},
        {"type": "edit", "id": message["id"], "text": "changed"},
        {"type": "react", "id": message["id"], "emoji": "👍"},
        {"type": "delete", "id": message["id"]},
        {"type": "update_room", "room": "old", "topic": "still here"},
        {"type": "invite", "room": "old", "user_id": carol.id},
        {"type": "invite_link", "room": "old"},
    ]
    for frame in refused:
        sender = bob if frame["type"] != "delete" else alice
        assert refusal(sender, frame)[0] == "archived", frame
    assert refusal(carol, {"type": "join_room", "room": "old"})[0] == "archived"
    bob.send({"type": "history", "room": "old"})
    history = until(bob, "history")
    assert [m["text"] for m in history["messages"]] == ["the retrospective notes"]
    status, _, body = Http(app, live_server, bob.id).get("/api/search?q=retrospective")
    assert status == 200
    assert len(json.loads(body)["results"]) == 1
    with app.app_context():
        assert db.session.scalar(select(func.count(Message.id))) == 1  # Nothing else landed.
    assert refusal(alice, {"type": "archive_room", "room": "general"})[0] == "forbidden"
    answer(alice, {"type": "archive_room", "room": "old", "archived": False})
    assert until(bob, "room_updated")["archived"] is False
    bob.send({"type": "message", "room": "old", "text": "open again"})
    assert until(alice, "message")["text"] == "open again"


# ---- Invitation links to a room --------------------------------------------------------------


def room_link(chat, key, **limits):
    got = answer(chat, {"type": "invite_link", "room": key, **limits})
    assert got["type"] == "invite_link", got
    return got


def test_a_room_link_lets_a_signed_in_person_in_at_once(app, team, client):
    alice, carol = team["alice"], team["carol"]
    key = private_room(alice)["room"]
    link = room_link(alice, key, uses=1, days=2)
    assert link["url"].startswith("/join/")
    assert link["max_uses"] == 1
    assert link["expires_at"].endswith("Z")
    login(client, "carol@example.com")
    response = client.get(link["url"])
    assert response.status_code == 302
    assert response.headers["Location"] == f"/?room={key}"
    entry = until(carol, "room")  # Carol's open tab has it at once.
    assert entry["room"] == key
    room = room_of(app, key)
    with app.app_context():
        assert db.session.get(Membership, (room.id, carol.id)) is not None
    # Used up: the next person gets the invalid-link page, and is not let in.
    other = app.test_client()
    login(other, "bob@example.com")
    assert other.get(link["url"]).status_code == 404
    with app.app_context():
        assert db.session.get(Membership, (room.id, team["bob"].id)) is None
    assert refusal(alice, {"type": "invite_link", "room": key, "uses": 0})[0] == "bad_request"
    assert refusal(alice, {"type": "invite_link", "room": key, "days": 366})[0] == "bad_request"


def test_a_room_link_makes_an_account_only_while_registration_is_open(app, team):
    key = private_room(team["alice"])["room"]
    url = room_link(team["alice"], key)["url"]
    with app.app_context():
        actions.set_registration_policy("invite", actor_id=None)
    stranger = app.test_client()
    response = stranger.get(url)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]
    with app.app_context():
        actions.set_registration_policy("open", actor_id=None)
    form = {"email": "erin@example.com", "password": PASSWORD, "confirm": PASSWORD}
    assert submit_form(stranger, url, form).status_code == 302
    with app.app_context():
        erin = User.by_email("erin@example.com")
        room = db.session.scalar(select(Room).where(Room.key == key))
        assert db.session.get(Membership, (room.id, erin.id)) is not None


def test_an_expired_room_link_lets_nobody_in(app, team, client):
    key = private_room(team["alice"])["room"]
    url = room_link(team["alice"], key, days=1)["url"]
    with app.app_context():
        from models import Invitation

        for invitation in db.session.scalars(select(Invitation)):
            invitation.expires_at = utcnow()
        db.session.commit()
    login(client, "carol@example.com")
    assert client.get(url).status_code == 404


# ---- The admin page's rooms ------------------------------------------------------------------


def admin_post(client, path, data):
    token = csrf_token(client.get("/admin/"))
    return client.post(path, data={**data, "csrf_token": token})


def test_only_administrators_manage_rooms_from_the_page(app, team, client):
    key = private_room(team["alice"])["room"]
    room = room_of(app, key)
    login(client, "bob@example.com")
    for path in (f"/admin/rooms/{room.id}", f"/admin/rooms/{room.id}/archive"):
        token = csrf_token(client.get("/profile"))
        assert client.post(path, data={"csrf_token": token, "title": "x"}).status_code == 403
    token = csrf_token(client.get("/profile"))
    response = client.post(
        f"/admin/rooms/{room.id}/delete", data={"csrf_token": token, "confirm": "secret"}
    )
    assert response.status_code == 403
    assert room_of(app, key) is not None


def test_the_admin_page_renames_archives_and_deletes_a_room_with_its_files(
    app, team, client, live_server
):
    alice, bob = team["alice"], team["bob"]
    make_admin(app, team["dave"].id)
    key = private_room(alice)["room"]
    answer(alice, {"type": "invite", "room": key, "user_id": bob.id})
    until(bob, "room")
    from test_uploads import png, post, stored_files

    upload = Http(app, live_server, alice.id).uploaded(png(), "plan.png")
    assert post(alice, [upload["id"]], "the plan", room=key)["type"] == "message"
    assert stored_files(app)  # The image and its thumbnail.
    room = room_of(app, key)
    login(client, "dave@example.com")
    page = client.get("/admin/").get_data(as_text=True)
    assert "#secret" in page
    assert "private" in page
    admin_post(client, f"/admin/rooms/{room.id}", {"title": "vault", "topic": "keys"})
    changed = until(bob, "room_updated")
    assert (changed["room"], changed["title"], changed["topic"]) == (key, "vault", "keys")
    admin_post(client, f"/admin/rooms/{room.id}/archive", {"archived": "1"})
    assert until(bob, "room_updated")["archived"] is True
    # A wrong confirmation deletes nothing.
    response = admin_post(client, f"/admin/rooms/{room.id}/delete", {"confirm": "secret"})
    assert response.status_code == 302
    assert room_of(app, key) is not None
    admin_post(client, f"/admin/rooms/{room.id}/delete", {"confirm": "vault"})
    assert until(bob, "room_deleted") == {"type": "room_deleted", "room": key}
    assert room_of(app, key) is None
    assert stored_files(app) == []  # Its files left the store too.
    with app.app_context():
        assert db.session.scalar(select(func.count(Message.id))) == 0
        actions_done = [e.action for e in db.session.scalars(select(AuditEntry))]
    assert {"rename_room", "archive_room", "delete_room"} <= set(actions_done)
    assert refusal(bob, {"type": "history", "room": key})[0] == "forbidden"
    general = room_of(app, "general")
    admin_post(client, f"/admin/rooms/{general.id}/delete", {"confirm": "general"})
    assert room_of(app, "general") is not None
    text = client.get("/admin/").get_data(as_text=True)
    assert "Room deleted" in text  # The audit log names actions, not codes.


def test_a_room_link_spends_nothing_on_members_and_opens_no_archived_or_deleted_room(
    app, team, client
):
    alice, carol = team["alice"], team["carol"]
    key = private_room(alice)["room"]
    url = room_link(alice, key, uses=1)["url"]
    login(client, "alice@example.com")  # Already in it: sent to the room, the use kept.
    response = client.get(url)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/?room={key}"
    with app.app_context():
        from models import Invitation

        assert db.session.scalars(select(Invitation)).one().uses == 0
    answer(alice, {"type": "archive_room", "room": key})
    other = app.test_client()
    login(other, "carol@example.com")
    assert other.get(url).status_code == 404  # An archived room takes nobody.
    answer(alice, {"type": "archive_room", "room": key, "archived": False})
    assert other.get(url).status_code == 302
    entry = until(carol, "room")
    assert entry["room"] == key
    assert "invited_by" not in entry  # They opened the link themselves.


def test_a_removed_member_cannot_walk_back_in_with_their_own_link(app, team, client):
    alice, carol = team["alice"], team["carol"]
    key = private_room(alice)["room"]
    answer(alice, {"type": "invite", "room": key, "user_id": carol.id})
    until(carol, "room")
    url = room_link(carol, key)["url"]
    answer(alice, {"type": "remove_member", "room": key, "user_id": carol.id})
    login(client, "carol@example.com")
    assert client.get(url).status_code == 404  # Her link left with her.
    room = room_of(app, key)
    with app.app_context():
        assert db.session.get(Membership, (room.id, carol.id)) is None


def test_an_actor_id_no_account_has_is_refused_not_taken_for_the_shell(app, team):
    alice, bob = team["alice"], team["bob"]
    key = private_room(alice)["room"]
    answer(alice, {"type": "invite", "room": key, "user_id": bob.id})
    until(bob, "room")
    with app.app_context():
        room = db.session.scalar(select(Room).where(Room.key == key))
        for change in (
            lambda: rooms.remove_member(room, bob.id, actor_id=10**9),
            lambda: rooms.set_archived(room, True, actor_id=10**9),
            lambda: rooms.update_room(room, rooms.Update("taken", None), actor_id=10**9),
        ):
            with pytest.raises(rooms.RoomError) as refused:
                change()
            assert refused.value.code == "forbidden"
        assert rooms.is_member(room.id, bob.id)
        assert room.archived_at is None
        assert room.title == "secret"
