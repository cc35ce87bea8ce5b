"""Search over real HTTP: what matches, what is never shown, and edits reflected at once."""

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from helpers import token_issued_at

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.


def post(chat, text, room="general"):
    """Post a message through the socket; the saved message."""
    client_id = uuid.uuid4().hex
    chat.send({"type": "message", "text": text, "room": room, "client_id": client_id})
    return answer(chat, client_id)


def answer(chat, client_id):
    while True:
        frame = chat.recv()
        if frame.get("client_id") == client_id:
            assert frame["type"] in {"message", "message_changed"}, frame
            return frame


def until(chat, kind):
    """The next frame of type ``kind``; any other is skipped."""
    while (frame := chat.recv())["type"] != kind:
        pass
    return frame


class Searcher:
    """Calls ``GET /api/search`` on the live server with a user's socket token."""

    def __init__(self, app, server, user_id):
        self.app, self.server, self.user_id = app, server, user_id

    def get(self, headers=None, **params):
        """``(status, JSON body)``."""
        url = f"http://{self.server}/api/search?{urllib.parse.urlencode(params)}"
        if headers is None:
            headers = {"Authorization": f"Bearer {token_issued_at(self.app, self.user_id)}"}
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
                body, status = response.read(), response.status
        except urllib.error.HTTPError as error:
            body, status = error.read(), error.code
        try:
            return status, json.loads(body)
        except ValueError:
            pytest.fail(f"{status}: not JSON: {body[:300]!r}")

    def texts(self, q, **params):
        """The texts of the messages found, newest first."""
        status, body = self.get(q=q, **params)
        assert status == 200, body
        return [result["message"]["text"] for result in body["results"]]


@pytest.fixture
def chat(app, make_user, ws_connect, live_server):
    """alice, bob and carol: a socket and a searcher each, by name."""
    people = {}
    for name in ("alice", "bob", "carol"):
        user_id = make_user(f"{name}@example.com")[0]
        socket = ws_connect(user_id)
        socket.id, socket.search = user_id, Searcher(app, live_server, user_id)
        people[name] = socket
    return people


def test_case_and_accents_do_not_matter(chat):
    alice = chat["alice"]
    post(alice, "L'Été arrive, Déploiement prévu")
    post(alice, "nothing to see")
    for query in ("ete", "ÉTÉ", "été", "deploiement", "PRÉVU"):
        assert alice.search.texts(query) == ["L'Été arrive, Déploiement prévu"], query


def test_phrases_prefixes_and_every_word(chat):
    alice = chat["alice"]
    post(alice, "the quick brown fox")
    post(alice, "a quick fox")
    post(alice, "deployment tonight")
    post(alice, "we deploy tomorrow")
    search = alice.search
    assert search.texts('"quick fox"') == ["a quick fox"]
    assert search.texts("quick fox") == ["a quick fox", "the quick brown fox"]
    assert search.texts("deploy*") == ["we deploy tomorrow", "deployment tonight"]
    assert search.texts("deploy") == ["we deploy tomorrow"]
    assert search.texts("deploy* tonight") == ["deployment tonight"]
    assert search.texts('"quick bro*"') == []  # A quoted phrase is exact.


def test_filters_by_author_and_room(chat):
    alice, bob = chat["alice"], chat["bob"]
    alice.send({"type": "create_room", "name": "Python"})
    until(alice, "room")
    bob.send({"type": "join_room", "room": "python"})
    until(bob, "room")
    post(alice, "release notes", "python")
    post(bob, "release party", "python")
    post(bob, "release day")
    assert alice.search.texts("release from:bob") == ["release day", "release party"]
    assert alice.search.texts("release in:python") == ["release party", "release notes"]
    assert alice.search.texts("release from:bob in:#Python") == ["release party"]
    assert alice.search.texts("from:alice") == ["release notes"]  # Filters alone: newest first.
    assert alice.search.texts("release", room="python") == ["release party", "release notes"]
    assert alice.search.texts("release from:nobody") == []


def test_nobody_finds_what_they_may_not_read(chat):
    alice, bob, carol = chat["alice"], chat["bob"], chat["carol"]
    alice.send({"type": "open_dm", "user_id": bob.id})
    dm = until(alice, "room")["room"]
    post(alice, "secret plan", dm)
    alice.send({"type": "create_room", "name": "Private"})
    until(alice, "room")
    post(alice, "secret room", "private")
    assert carol.search.texts("secret") == []
    assert carol.search.texts("secret in:private") == []
    assert bob.search.texts("secret") == ["secret plan"]
    assert alice.search.texts("secret") == ["secret room", "secret plan"]
    for room in (dm, "private", "nowhere"):
        status, body = carol.search.get(q="secret", room=room)
        assert (status, body["error"]) == (403, "forbidden")


def test_edits_and_deletions_are_reflected_at_once(chat):
    alice = chat["alice"]
    first = post(alice, "typo in the mesage")
    assert alice.search.texts("mesage") == ["typo in the mesage"]
    client_id = uuid.uuid4().hex
    alice.send({"type": "edit", "id": first["id"], "text": "fixed message", "client_id": client_id})
    answer(alice, client_id)
    assert alice.search.texts("mesage") == []
    assert alice.search.texts("fixed") == ["fixed message"]
    client_id = uuid.uuid4().hex
    alice.send({"type": "delete", "id": first["id"], "client_id": client_id})
    answer(alice, client_id)
    assert alice.search.texts("fixed") == []
    assert alice.search.texts("from:alice") == []  # A deleted message is never found again.


def test_results_are_the_message_as_it_is_now_with_a_safe_snippet(chat):
    alice, bob = chat["alice"], chat["bob"]
    posted = post(alice, f"<script>alert(1)</script> hello <@{bob.id}> " + "word " * 40 + "end")
    client_id = uuid.uuid4().hex
    bob.send({"type": "react", "id": posted["id"], "emoji": "👍", "client_id": client_id})
    answer(bob, client_id)
    status, body = bob.search.get(q="hello")
    assert status == 200
    (result,) = body["results"]
    assert result["message"]["id"] == posted["id"]
    assert result["message"]["reactions"][0]["emoji"] == "👍"
    assert result["message"]["mentions"] == [bob.id]
    snippet = result["snippet"]
    assert snippet.startswith("&lt;script&gt;alert(1)&lt;/script&gt; <mark>hello</mark> @bob")
    assert snippet.endswith("…")
    assert "<script" not in snippet
    assert body["has_more"] is False


def test_pages_go_back_with_before(chat):
    alice = chat["alice"]
    ids = [post(alice, f"page {n}")["id"] for n in range(25)]
    status, first = alice.search.get(q="page")
    assert status == 200
    assert [r["message"]["id"] for r in first["results"]] == ids[::-1][:20]
    assert first["has_more"] is True
    _, rest = alice.search.get(q="page", before=first["results"][-1]["message"]["id"])
    assert [r["message"]["id"] for r in rest["results"]] == ids[::-1][20:]
    assert rest["has_more"] is False


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"q": ""}, "bad_request"),
        ({"q": "   "}, "bad_request"),
        ({"q": "x" * 201}, "bad_request"),
        ({"q": "a*"}, "bad_request"),
        ({"q": " ".join(f"w{n}" for n in range(11))}, "bad_request"),
        ({"q": "hello", "before": "ten"}, "bad_request"),
        ({"q": "hello", "before": "0"}, "bad_request"),
        ({"q": "hello", "before": str(2**60)}, "bad_request"),
    ],
)
def test_bad_searches_get_a_clear_error(chat, params, code):
    status, body = chat["alice"].search.get(**params)
    assert (status, body["error"]) == (400, code)
    assert body["message"]


def test_a_search_needs_a_session_or_a_token(chat):
    searcher = chat["alice"].search
    assert searcher.get(headers={}, q="hello") == (
        401,
        {"error": "unauthenticated", "message": "Log in, or send a token as Bearer."},
    )
    status, _ = searcher.get(headers={"Authorization": "Bearer not-a-token"}, q="hello")
    assert status == 401


def test_the_page_session_searches_too(app, client, make_user, ws_connect):
    from helpers import login

    alice = make_user("alice@example.com")[0]
    post(ws_connect(alice), "through the session")
    login(client)
    response = client.get("/api/search?q=session")
    assert response.status_code == 200
    assert [r["message"]["text"] for r in response.get_json()["results"]] == ["through the session"]


def test_history_around_a_result_and_after_it(chat):
    alice = chat["alice"]
    ids = [post(alice, f"line {n}")["id"] for n in range(30)]
    alice.send({"type": "history", "room": "general", "around": ids[10], "limit": 10})
    window = until(alice, "history")
    assert [m["id"] for m in window["messages"]] == ids[6:16]  # Four before, it, five after.
    assert (window["reset"], window["has_more"], window["has_newer"]) == (True, True, True)
    alice.send({"type": "history", "room": "general", "after": ids[15], "limit": 10})
    newer = until(alice, "history")
    assert [m["id"] for m in newer["messages"]] == ids[16:26]
    assert (newer["reset"], newer["has_newer"]) == (False, True)
    alice.send({"type": "history", "room": "general", "after": ids[25], "limit": 10})
    last = until(alice, "history")
    assert [m["id"] for m in last["messages"]] == ids[26:]
    assert last["has_newer"] is False
    alice.send({"type": "history", "room": "general", "around": ids[1], "limit": 10})
    start = until(alice, "history")
    assert [m["id"] for m in start["messages"]] == ids[:10]  # The window fills from after.
    assert (start["has_more"], start["has_newer"]) == (False, True)
    alice.send({"type": "history", "room": "general", "around": 5, "before": 9})
    assert until(alice, "error")["code"] == "bad_request"
