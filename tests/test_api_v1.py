"""The REST API ``/api/v1/``: each endpoint with a read token, a write token, a revoked token,
a deactivated account, an outsider and bad bodies; and, on a live server, that a post through
the API is on the socket's path (in order with socket messages, found once by a resume)."""

import io
import json
import re
import uuid
from contextlib import ExitStack
from datetime import timedelta
from urllib.parse import quote

import pytest
from PIL import Image
from sqlalchemy import select, update
from websockets.sync.client import connect

from accounts import api_tokens
from accounts.tokens import issue_token
from core import rooms
from extensions import db
from helpers import ROOT, ChatClient, Http, csrf_token, login, token_issued_at
from models import READ, WRITE, ApiToken, Message, User, utcnow

pytestmark = pytest.mark.database  # Tokens, memberships, paging and idempotency: see conftest.


# ---- Fixtures and helpers ---------------------------------------------------------------------


def make_token(app, user_id, scope, name="script"):
    """A new token's secret."""
    with app.test_request_context():
        user = db.session.get(User, user_id)
        return api_tokens.create(user, name, scope)[1]


@pytest.fixture
def members(app, alice, bob, general):
    """alice and bob, both in ``general``."""
    with app.app_context():
        rooms.join_general(alice)
        rooms.join_general(bob)
    return alice, bob


@pytest.fixture
def reader(app, members):
    return make_token(app, members[0], READ)


@pytest.fixture
def writer(app, members):
    return make_token(app, members[0], WRITE)


@pytest.fixture
def bobs_writer(app, members):
    return make_token(app, members[1], WRITE)


def auth(secret):
    return {"Authorization": f"Bearer {secret}"}


def call(client, method, path, secret=None, **kwargs):
    """A request to the API; every answer is JSON and never cached."""
    headers = {**(auth(secret) if secret else {}), **kwargs.pop("headers", {})}
    response = client.open(path, method=method, headers=headers, **kwargs)
    assert response.headers["Cache-Control"] == "no-store", (method, path)
    assert response.is_json, (method, path, response.data[:200])
    return response


def refused(response, status, code):
    assert (response.status_code, response.json["error"]) == (status, code), response.json
    assert response.json["message"]
    return response


def post(client, secret, text, room="general", **fields):
    """``POST`` a message; the response."""
    path = f"/api/v1/rooms/{quote(room, safe='')}/messages"
    return call(client, "POST", path, secret, json={"text": text, **fields})


def posted(client, secret, text, room="general", **fields):
    """The message object of a post that must be stored."""
    response = post(client, secret, text, room, **fields)
    assert response.status_code == 201, response.json
    return response.json


def revoke_all(app, user_id):
    with app.app_context():
        for token in api_tokens.live_tokens(user_id):
            api_tokens.revoke(user_id, token.id)


def deactivate(app, user_id):
    with app.app_context():
        db.session.execute(update(User).where(User.id == user_id).values(deactivated_at=utcnow()))
        db.session.commit()


def private_room(app, owner_id, name="secret"):
    with app.app_context():
        room = rooms.create_room(name, owner_id, private=True)
        return room.key


def png_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    return buffer.getvalue()


# Every endpoint, with a body that would be fine: (method, path, request keywords).
def endpoints(message_id):
    return [
        ("GET", "/api/v1/me", {}),
        ("GET", "/api/v1/rooms", {}),
        ("GET", "/api/v1/rooms/general/messages", {}),
        ("POST", "/api/v1/rooms/general/messages", {"json": {"text": "hi"}}),
        ("PATCH", f"/api/v1/messages/{message_id}", {"json": {"text": "edited"}}),
        ("DELETE", f"/api/v1/messages/{message_id}", {}),
        ("POST", f"/api/v1/messages/{message_id}/reactions", {"json": {"emoji": "👍"}}),
        ("DELETE", f"/api/v1/messages/{message_id}/reactions/{quote('👍')}", {}),
        ("GET", "/api/v1/search?q=hello", {}),
        ("POST", "/api/v1/uploads", {"data": {"file": (io.BytesIO(b"x"), "a.txt")}}),
    ]


WRITES = {"POST", "PATCH", "DELETE"}


# ---- Authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic YWxpY2U6cHc=", "Bearer a b", "chat_x"],
    ids=["none", "empty", "no-token", "blank-token", "basic", "two-words", "no-scheme"],
)
def test_without_a_bearer_token_every_endpoint_is_401(client, members, writer, header):
    message_id = posted(client, writer, "hello")["id"]
    for method, path, kwargs in endpoints(message_id):
        headers = {"Authorization": header} if header is not None else {}
        response = call(client, method, path, headers=headers, **kwargs)
        refused(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_revoked_and_socket_tokens_are_invalid(app, client, members, writer, reader):
    message_id = posted(client, writer, "hello")["id"]
    socket_token = token_issued_at(app, members[0])
    revoke_all(app, members[0])
    for secret in [writer, reader, "chat_" + "x" * 43, socket_token, "chat_é"]:
        for method, path, kwargs in endpoints(message_id):
            response = call(client, method, path, secret, **kwargs)
            refused(response, 401, "invalid_token")
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_session_cookie_is_not_enough(app, client, members):
    login(client)
    assert client.get("/api/token").status_code == 200  # The session works elsewhere.
    refused(call(client, "GET", "/api/v1/me"), 401, "unauthenticated")
    response = call(client, "POST", "/api/v1/rooms/general/messages", json={"text": "x"})
    refused(response, 401, "unauthenticated")
    with app.app_context():
        assert db.session.scalar(select(Message.id)) is None


def test_a_deactivated_account_is_refused_at_once(app, client, members, writer, reader):
    message_id = posted(client, writer, "hello")["id"]
    deactivate(app, members[0])
    for secret in (writer, reader):
        for method, path, kwargs in endpoints(message_id):
            refused(call(client, method, path, secret, **kwargs), 403, "deactivated")


def test_a_read_token_reads_and_never_writes(app, client, members, reader, writer):
    message_id = posted(client, writer, "hello")["id"]
    for method, path, kwargs in endpoints(message_id):
        response = call(client, method, path, reader, **kwargs)
        if method in WRITES:
            refused(response, 403, "insufficient_scope")
            assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
        else:
            assert response.status_code == 200, (path, response.json)
    with app.app_context():
        message = db.session.get(Message, message_id)
        assert (message.text, message.deleted_at) == ("hello", None)
        assert db.session.scalar(select(db.func.count(Message.id))) == 1


def test_password_changes_and_logging_out_everywhere_leave_tokens_working(
    app, client, members, reader
):
    login(client)
    page = client.get("/profile")
    out = client.post("/logout-everywhere", data={"csrf_token": csrf_token(page)})
    assert out.status_code == 302
    assert client.get("/api/token").status_code == 401  # The session is gone.
    with app.app_context():
        user = db.session.get(User, members[0])
        user.set_password("another long password")
        user.token_version += 1
        user.session_version += 1
        db.session.commit()
    assert call(client, "GET", "/api/v1/me", reader).status_code == 200


def test_use_is_recorded_at_most_once_a_minute(app, client, members, reader):
    def last_used():
        with app.app_context():
            return db.session.scalar(select(ApiToken.last_used_at))

    assert last_used() is None
    call(client, "GET", "/api/v1/me", reader)
    first = last_used()
    assert first is not None
    call(client, "GET", "/api/v1/me", reader)
    assert last_used() == first  # Not a write per request.
    with app.app_context():
        earlier = utcnow() - timedelta(minutes=2)
        db.session.execute(update(ApiToken).values(last_used_at=earlier))
        db.session.commit()
    call(client, "GET", "/api/v1/me", reader)
    assert last_used() > first


def test_unknown_paths_and_methods_answer_json(client, members, reader):
    refused(call(client, "GET", "/api/v1/nowhere", reader), 404, "not_found")
    refused(call(client, "POST", "/api/v1/nowhere", json={}), 404, "not_found")
    refused(call(client, "PUT", "/api/v1/me", reader), 405, "method_not_allowed")
    refused(call(client, "GET", "/api/v1/messages/1", reader), 405, "method_not_allowed")


# ---- Reading ----------------------------------------------------------------------------------


def test_me_says_who_and_which_scope(client, members, reader, writer):
    answer = call(client, "GET", "/api/v1/me", reader).json
    assert answer == {
        "id": members[0],
        "name": "alice",
        "email": "alice@example.com",
        "avatar_url": None,
        "scope": "read",
    }
    assert call(client, "GET", "/api/v1/me", writer).json["scope"] == "write"


def test_rooms_are_the_persons_own_with_their_counts(app, client, members, reader, bobs_writer):
    secret_key = private_room(app, members[1])  # bob's: alice is not in it.
    posted(client, bobs_writer, "hi @alice")
    listed = call(client, "GET", "/api/v1/rooms", reader).json["rooms"]
    assert [room["room"] for room in listed] == ["general"]
    (general,) = listed
    assert general["unread"] == 1
    assert general["kind"] == "public"
    expected = {
        "room", "title", "kind", "topic", "archived", "created_by", "notify", "unread",
        "mentions", "last_id", "last_read_id",
    }  # fmt: skip
    assert set(general) == expected
    bobs = call(client, "GET", "/api/v1/rooms", bobs_writer).json["rooms"]
    assert {room["room"] for room in bobs} == {"general", secret_key}


def test_history_pages_as_the_socket_does(client, members, reader, writer):
    ids = [posted(client, writer, f"message {n}")["id"] for n in range(5)]
    latest = call(client, "GET", "/api/v1/rooms/general/messages?limit=2", reader).json
    assert [m["id"] for m in latest["messages"]] == ids[3:]
    assert (latest["has_more"], latest["has_newer"], latest["room"]) == (True, False, "general")
    assert latest["messages"][0]["type"] == "message"
    older = call(client, "GET", f"/api/v1/rooms/general/messages?before={ids[3]}&limit=3", reader)
    assert [m["id"] for m in older.json["messages"]] == ids[:3]
    assert older.json["has_more"] is False
    newer = call(client, "GET", f"/api/v1/rooms/GENERAL/messages?after={ids[0]}&limit=2", reader)
    assert [m["id"] for m in newer.json["messages"]] == ids[1:3]
    assert (newer.json["has_more"], newer.json["has_newer"]) == (False, True)
    everything = call(client, "GET", "/api/v1/rooms/general/messages", reader).json
    assert [m["id"] for m in everything["messages"]] == ids


@pytest.mark.parametrize(
    "query",
    ["before=x", "before=-1", f"before={2**53 + 1}", "limit=0", "limit=101", "limit=a",
     "before=3&after=1", "after=1.5"],
)  # fmt: skip
def test_bad_history_queries_are_400(client, members, reader, query):
    response = call(client, "GET", f"/api/v1/rooms/general/messages?{query}", reader)
    refused(response, 400, "bad_request")


def test_outsiders_get_the_same_forbidden_whether_the_room_exists(app, client, members, reader):
    key = private_room(app, members[1])
    dm = rooms.direct_key(members[1], 99)
    answers = []
    for room in [key, "p:doesnotexist", dm, "nosuchroom", "x" * 200]:
        path = f"/api/v1/rooms/{quote(room, safe='')}/messages"
        response = refused(call(client, "GET", path, reader), 403, "forbidden")
        answers.append(response.json)
    assert all(answer == answers[0] for answer in answers)


def test_direct_room_keys_work_url_encoded(app, client, members, reader, bobs_writer):
    with app.app_context():
        room, _ = rooms.open_direct(members[0], members[1])
        key = room.key
    posted(client, bobs_writer, "psst", room=key)
    path = f"/api/v1/rooms/{quote(key, safe='')}/messages"
    assert [m["text"] for m in call(client, "GET", path, reader).json["messages"]] == ["psst"]


def test_search_answers_as_the_json_api_does(app, client, members, reader, writer, bobs_writer):
    posted(client, writer, "the quick brown fox")
    key = private_room(app, members[1])
    posted(client, bobs_writer, "a quick secret", room=key)
    found = call(client, "GET", "/api/v1/search?q=quick", reader).json
    assert [hit["message"]["text"] for hit in found["results"]] == ["the quick brown fox"]
    assert found["has_more"] is False
    assert "snippet" in found["results"][0]
    response = call(client, "GET", f"/api/v1/search?q=quick&room={quote(key)}", reader)
    refused(response, 403, "forbidden")
    refused(call(client, "GET", "/api/v1/search?q=quick&before=x", reader), 400, "bad_request")


# ---- Posting ----------------------------------------------------------------------------------


def test_a_post_is_stored_and_a_retry_gets_the_original(app, client, members, writer):
    first = post(client, writer, "hello", client_id="c-1")
    assert first.status_code == 201
    message = first.json
    assert (message["text"], message["user_id"], message["room"]) == (
        "hello",
        members[0],
        "general",
    )
    assert message["client_id"] == "c-1"
    assert message["bot"] is False
    again = post(client, writer, "hello (retried)", client_id="c-1")
    assert again.status_code == 200
    assert again.json["id"] == message["id"]
    assert again.json["text"] == "hello"
    with app.app_context():
        assert db.session.scalar(select(db.func.count(Message.id))) == 1


def test_replies_and_attachments(app, client, members, writer):
    parent = posted(client, writer, "question")
    reply = posted(client, writer, "answer", reply_to=parent["id"])
    assert reply["reply_to"]["id"] == parent["id"]
    upload = call(
        client,
        "POST",
        "/api/v1/uploads",
        writer,
        data={"file": (io.BytesIO(png_bytes()), "red.png")},
    )
    assert upload.status_code == 201, upload.json
    assert upload.json["content_type"] == "image/png"
    with_file = posted(client, writer, "", attachments=[upload.json["id"]])
    assert [a["id"] for a in with_file["attachments"]] == [upload.json["id"]]
    # An upload goes in one message only.
    response = post(client, writer, "again", attachments=[upload.json["id"]])
    refused(response, 404, "not_found")


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "not json", "content_type": "application/json"}, 400, "bad_request"),
        ({"json": ["hello"]}, 400, "bad_request"),
        ({"json": "hello"}, 400, "bad_request"),
        ({"json": {}}, 400, "empty"),
        ({"json": {"text": 5}}, 400, "bad_request"),
        ({"json": {"text": ""}}, 400, "empty"),
        ({"json": {"text": "   "}}, 400, "empty"),
        ({"json": {"text": "x" * 5000}}, 400, "too_long"),
        ({"json": {"text": "a\x00b"}}, 400, "bad_text"),
        ({"json": {"text": "hi", "client_id": 5}}, 400, "bad_request"),
        ({"json": {"text": "hi", "client_id": "x" * 65}}, 400, "bad_request"),
        ({"json": {"text": "hi", "reply_to": "1"}}, 400, "bad_request"),
        ({"json": {"text": "hi", "reply_to": True}}, 400, "bad_request"),
        ({"json": {"text": "hi", "reply_to": 2**60}}, 400, "bad_request"),
        ({"json": {"text": "hi", "reply_to": 999}}, 404, "not_found"),
        ({"json": {"text": "hi", "attachments": 5}}, 400, "bad_request"),
        ({"json": {"text": "hi", "attachments": "12"}}, 400, "bad_request"),
        ({"json": {"text": "hi", "attachments": [1, 1]}}, 400, "bad_request"),
        ({"json": {"text": "hi", "attachments": [999]}}, 404, "not_found"),
        ({"data": '{"text": "\\ud800"}', "content_type": "application/json"}, 400, None),
    ],
)
def test_bad_posts_are_refused_precisely(app, client, members, writer, kwargs, status, code):
    response = call(client, "POST", "/api/v1/rooms/general/messages", writer, **kwargs)
    assert response.status_code == status, response.json
    if code is not None:
        assert response.json["error"] == code
    with app.app_context():
        assert db.session.scalar(select(Message.id)) is None


def test_a_body_too_large_is_413_before_it_is_read(app, client, members, writer):
    body = json.dumps({"text": "x" * (70 * 1024)})
    response = call(
        client, "POST", "/api/v1/rooms/general/messages", writer, data=body,
        content_type="application/json",
    )  # fmt: skip
    refused(response, 413, "request_entity_too_large")
    with app.app_context():
        assert db.session.scalar(select(Message.id)) is None


def test_outsiders_cannot_post_anywhere_they_are_not(app, client, members, writer):
    key = private_room(app, members[1])
    for room in [key, "p:nothere", "nosuchroom", rooms.direct_key(members[1], 77), "y" * 100]:
        refused(post(client, writer, "let me in", room=room), 403, "forbidden")
    with app.app_context():
        assert db.session.scalar(select(Message.id)) is None


def test_an_archived_room_is_409(app, client, members, writer):
    with app.app_context():
        room = rooms.create_room("old", members[0])
        rooms.set_archived(room, True, None)
    refused(post(client, writer, "anyone?", room="old"), 409, "archived")
    path = "/api/v1/rooms/old/messages"
    assert call(client, "GET", path, writer).json["messages"] == []  # Still readable.


def test_posting_too_fast_is_429_with_retry_after(app, client, members, writer):
    app.config.update(CHAT_MESSAGE_BURST=2, CHAT_MESSAGE_RATE=0.5)
    posted(client, writer, "one")
    posted(client, writer, "two")
    response = refused(post(client, writer, "three"), 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1


def test_a_bots_post_says_bot(app, client, members):
    with app.app_context():
        db.session.execute(update(User).where(User.id == members[1]).values(is_bot=True))
        db.session.commit()
    secret = make_token(app, members[1], WRITE)
    assert posted(client, secret, "beep")["bot"] is True


# ---- Changing messages ------------------------------------------------------------------------


def test_edit_delete_and_react_through_the_sockets_path(client, members, writer, bobs_writer):
    message = posted(client, writer, "frist")
    path = f"/api/v1/messages/{message['id']}"
    edited = call(client, "PATCH", path, writer, json={"text": "first", "client_id": "e-1"})
    assert edited.status_code == 200
    assert edited.json["kind"] == "edit"
    assert isinstance(edited.json["change"], int)
    assert edited.json["message"]["text"] == "first"
    assert edited.json["message"]["edited_at"]
    reacted = call(client, "POST", f"{path}/reactions", bobs_writer, json={"emoji": "👍"})
    assert reacted.json["message"]["reactions"] == [
        {"emoji": "👍", "count": 1, "user_ids": [members[1]]}
    ]
    assert reacted.json["change"] > edited.json["change"]
    again = call(client, "POST", f"{path}/reactions", bobs_writer, json={"emoji": "👍"})
    assert again.status_code == 200
    assert again.json["change"] is None
    removed = call(client, "DELETE", f"{path}/reactions/{quote('👍')}", bobs_writer)
    assert removed.json["message"]["reactions"] == []
    deleted = call(client, "DELETE", path, writer)
    assert deleted.status_code == 200
    assert deleted.json["kind"] == "delete"
    assert deleted.json["message"]["deleted"] is True
    assert deleted.json["message"]["text"] == ""


def test_others_messages_and_missing_ones(app, client, members, writer, bobs_writer):
    bobs = posted(client, bobs_writer, "bob's")
    path = f"/api/v1/messages/{bobs['id']}"
    refused(call(client, "PATCH", path, writer, json={"text": "mine now"}), 403, "forbidden")
    refused(call(client, "DELETE", path, writer), 403, "forbidden")
    key = private_room(app, members[1])
    hidden = posted(client, bobs_writer, "hidden", room=key)
    hidden_path = f"/api/v1/messages/{hidden['id']}"
    refused(call(client, "PATCH", hidden_path, writer, json={"text": "x"}), 403, "forbidden")
    response = call(client, "POST", f"{hidden_path}/reactions", writer, json={"emoji": "👍"})
    refused(response, 403, "forbidden")
    refused(call(client, "DELETE", "/api/v1/messages/99999", writer), 404, "not_found")
    refused(
        call(client, "PATCH", "/api/v1/messages/99999", writer, json={"text": "x"}),
        404,
        "not_found",
    )
    with app.app_context():
        assert db.session.get(Message, bobs["id"]).text == "bob's"


@pytest.mark.parametrize(
    ("method", "suffix", "kwargs"),
    [
        ("PATCH", "", {"json": {}}),
        ("PATCH", "", {"json": {"text": 3}}),
        ("PATCH", "", {"json": {"text": " "}}),
        ("PATCH", "", {"json": ["text"]}),
        ("PATCH", "", {"data": "{", "content_type": "application/json"}),
        ("PATCH", "", {"json": {"text": "ok", "client_id": []}}),
        ("POST", "/reactions", {"json": {}}),
        ("POST", "/reactions", {"json": {"emoji": "not an emoji"}}),
        ("POST", "/reactions", {"json": {"emoji": 1}}),
        ("POST", "/reactions", {"json": None}),
        ("DELETE", "/reactions/abc", {}),
    ],
)
def test_bad_changes_are_400(app, client, members, writer, method, suffix, kwargs):
    message = posted(client, writer, "stay")
    response = call(client, method, f"/api/v1/messages/{message['id']}{suffix}", writer, **kwargs)
    assert response.status_code == 400, response.json
    assert response.json["error"] in {"bad_request", "empty"}
    with app.app_context():
        assert db.session.get(Message, message["id"]).text == "stay"


def test_an_id_too_large_for_javascript_is_400(client, members, writer):
    response = call(client, "DELETE", f"/api/v1/messages/{2**60}", writer)
    refused(response, 400, "bad_request")


# ---- Uploads ----------------------------------------------------------------------------------


def test_uploads_answer_as_api_uploads(client, members, writer):
    empty = call(client, "POST", "/api/v1/uploads", writer, data={"file": (io.BytesIO(), "a")})
    refused(empty, 400, "empty_file")
    refused(call(client, "POST", "/api/v1/uploads", writer, data={}), 400, "no_file")
    text = call(
        client, "POST", "/api/v1/uploads", writer, data={"file": (io.BytesIO(b"notes"), "a.txt")}
    )
    assert text.status_code == 201
    assert text.json["name"] == "a.txt"


def test_uploads_share_the_persons_limit_with_api_uploads(app, client, members, writer):
    app.config["CHAT_UPLOAD_LIMIT"] = "2 per minute"
    for _ in range(2):
        response = call(
            client, "POST", "/api/v1/uploads", writer, data={"file": (io.BytesIO(b"x"), "a")}
        )
        assert response.status_code == 201
    response = call(
        client, "POST", "/api/v1/uploads", writer, data={"file": (io.BytesIO(b"x"), "a")}
    )
    refused(response, 429, "rate_limited")
    socket_token = token_issued_at(app, members[0])
    old = client.post(
        "/api/uploads", headers=auth(socket_token), data={"file": (io.BytesIO(b"x"), "a")}
    )
    assert old.status_code == 429


# ---- The socket's path, on a live server ------------------------------------------------------


@pytest.fixture
def sockets():
    with ExitStack() as stack:
        yield stack


def socket(stack, live_server, app, user_id, resume=None):
    """A greeted socket; with ``resume`` ({room: last id}), one that resumes from there."""
    token = token_issued_at(app, user_id)
    flag = 1 if resume is not None else 0
    url = f"ws://{live_server}/ws?token={token}&resume={flag}"
    chat = ChatClient(stack.enter_context(connect(url, open_timeout=5)))
    if resume is not None:
        chat.send({"type": "resume", "rooms": resume})
    chat.hello = chat.recv_type("hello")
    return chat


def socket_post(chat, text):
    client_id = uuid.uuid4().hex
    chat.send({"type": "message", "text": text, "client_id": client_id})
    return client_id


def test_api_messages_reach_sockets_in_order_and_resume_finds_them_once(
    app, live_server, members, writer, sockets
):
    alice, bob = members
    http = Http(app, live_server, alice)
    listener = socket(sockets, live_server, app, bob)
    sender = socket(sockets, live_server, app, alice)
    socket_post(sender, "one (socket)")
    first = sender.recv_type("message")
    body = json.dumps({"text": "two (api)", "client_id": "api-2"}).encode()
    headers = {**auth(writer), "Content-Type": "application/json"}
    status, _, answer = http.request("POST", "/api/v1/rooms/general/messages", body, headers)
    assert status == 201
    api_message = json.loads(answer)
    socket_post(sender, "three (socket)")
    frames = [listener.recv_type("message") for _ in range(3)]
    assert [f["text"] for f in frames] == ["one (socket)", "two (api)", "three (socket)"]
    assert [f["id"] for f in frames] == sorted(f["id"] for f in frames)
    assert frames[1] == api_message
    # The retry answers the original and reaches nobody again.
    status, _, again = http.request("POST", "/api/v1/rooms/general/messages", body, headers)
    assert status == 200
    assert json.loads(again)["id"] == api_message["id"]
    assert [f for f in listener.sync() if f["type"] == "message"] == []
    listener.close()
    # A socket that saw only the first message resumes: the API's comes once, in order.
    resumed = socket(sockets, live_server, app, bob, resume={"general": first["id"]})
    frames = [*resumed.hello["history"], *resumed.sync()]
    received = [f for f in frames if f["type"] == "message"]
    assert [f["text"] for f in received] == ["two (api)", "three (socket)"]
    assert [f["id"] for f in received].count(api_message["id"]) == 1


def test_api_changes_reach_sockets_as_message_changed(app, live_server, members, writer, sockets):
    http = Http(app, live_server, members[0])
    listener = socket(sockets, live_server, app, members[1])
    body = json.dumps({"text": "typo"}).encode()
    headers = {**auth(writer), "Content-Type": "application/json"}
    _, _, answer = http.request("POST", "/api/v1/rooms/general/messages", body, headers)
    message_id = json.loads(answer)["id"]
    assert listener.recv_type("message")["id"] == message_id
    edit = json.dumps({"text": "fixed", "client_id": "fix-1"}).encode()
    status, _, changed = http.request("PATCH", f"/api/v1/messages/{message_id}", edit, headers)
    assert status == 200
    frame = listener.recv_type("message_changed")
    assert frame["change"] == json.loads(changed)["change"]
    assert frame["message"]["text"] == "fixed"
    assert frame["client_id"] == "fix-1"


def test_the_socket_token_endpoint_still_answers_its_own_way(app, client, members):
    """Untouched: ``/api/token`` and ``/api/search`` with socket tokens (the refactor's guard)."""
    with app.app_context():
        token = issue_token(db.session.get(User, members[0]))
    response = client.get("/api/search?q=x", headers=auth(token))
    assert response.status_code == 200
    assert response.json == {"results": [], "has_more": False}


# ---- The documentation ------------------------------------------------------------------------


def documented_routes(app):
    """``{(METHOD, path with {name} parameters)}`` of every /api/v1/ route."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api_v1."):
            path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + m.group(1) + "}", rule.rule)
            path = path.replace("{message_id}", "{id}")
            routes |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_every_endpoint_is_in_docs_api_md_and_the_openapi_file(app):
    routes = documented_routes(app)
    assert len(routes) == 10
    guide = (ROOT / "docs" / "api.md").read_text()
    headed = set(re.findall(r"^### `(\w+) (/api/v1/[^`?]+)", guide, re.MULTILINE))
    assert {(method, path.replace("<", "{").replace(">", "}")) for method, path in headed} == routes
    spec, path = set(), None
    for line in (ROOT / "docs" / "openapi.yaml").read_text().splitlines():
        if match := re.fullmatch(r"  (/api/v1/\S+):", line):
            path = match.group(1)
        elif (match := re.fullmatch(r"    (get|post|patch|delete):", line)) and path:
            spec.add((match.group(1).upper(), path))
        elif not line.startswith("  "):
            path = None
    assert spec == routes
