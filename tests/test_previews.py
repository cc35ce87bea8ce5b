"""Link previews over real sockets, fetched from a real HTTP server on 127.0.0.1 (issue 21).

The server's pages are what a test says they are; a gated page answers only once the test lets
it, so that a test can act while a fetch is under way. Waits are on frames, on the server having
been asked, or on the row the worker stores, never on a fixed sleep.
"""

import io
import json
import threading

import pytest
from PIL import Image
from sqlalchemy import select
from websockets.sync.client import connect

from extensions import db
from helpers import token_issued_at, wait_until
from models import PREVIEW, UNPREVIEW, LinkPreview, Message, MessageChange
from previews.links import first_link, may_have_link
from previews.opengraph import parse
from websites import og_page, serving

TIMEOUT = 2.0  # CHAT_PREVIEW_TIMEOUT here: a gated page that is not let go times out.


@pytest.fixture
def site():
    with serving() as site:
        yield site


@pytest.fixture
def app_config(app_config):
    app_config["CHAT_PREVIEWS"] = True
    app_config["CHAT_FETCH_ALLOW_LOOPBACK"] = True  # The test's site is on 127.0.0.1.
    app_config["CHAT_PREVIEW_TIMEOUT"] = TIMEOUT
    return app_config


def post(chat, text, client_id):
    chat.send({"type": "message", "text": text, "client_id": client_id})
    return chat.recv_type("message")


def changed(chat, kind, timeout=10):
    frame = chat.recv_type("message_changed", timeout)
    assert frame["kind"] == kind, frame
    return frame


def row(app, url):
    with app.app_context():
        return db.session.scalar(select(LinkPreview).where(LinkPreview.url == url))


def no_preview_shown(app, chat, url, message_id):
    """The worker stored a failure for ``url``, and the message got no preview."""
    wait_until(lambda: row(app, url) is not None, "the failure to be stored")
    assert row(app, url).ok is False
    assert not [f for f in chat.sync() if f["type"] == "message_changed"]
    with app.app_context():
        assert db.session.get(Message, message_id).preview_id is None


# ---- Pure parts -------------------------------------------------------------------------------


def test_opengraph_falls_back_to_title_and_description_and_reads_the_charset():
    body = (
        '<html><head><meta charset="iso-8859-1"><title> Caf\xe9\n  page </title>'
        '<meta name="description" content="Cr\xe8me"></head><body>'
        '<meta property="og:title" content="in the body: ignored"></body></html>'
    ).encode("latin-1")
    card = parse(body, "text/html", "https://example.test/a/b")
    assert (card.title, card.description, card.image) == ("Café page", "Crème", None)
    card = parse(og_page(image="../i.png").encode(), "text/html", "https://example.test/a/b")
    assert card.title == "Léa's page"
    assert card.image == "https://example.test/i.png"
    assert (
        parse(og_page(image="javascript:x").encode(), "text/html", "https://e.test/").image is None
    )


def test_the_first_link_is_the_one_the_renderer_links_never_one_in_code():
    assert first_link("see `http://a.test/x` then http://b.test/y") == "http://b.test/y"
    assert first_link("```\nhttp://a.test/\n```") is None
    assert first_link("mail mailto:a@b.test or [this](https://c.test/?a=1&b=2)") == (
        "https://c.test/?a=1&b=2"
    )
    assert first_link("no link here") is None
    assert may_have_link("a.test")
    assert may_have_link("http://localhost:5000/")
    assert not may_have_link("Done. Thanks, 3.14 times")  # Not even parsed.


# ---- Over sockets -----------------------------------------------------------------------------


@pytest.mark.database
def test_a_page_preview_reaches_live_and_resuming_sockets(
    app, alice, bob, ws_connect, site, live_server
):
    url = site.url("/page")
    site.gates["/page"] = gate = threading.Event()
    a, b = ws_connect(alice), ws_connect(bob)
    message = post(a, f"look at {url} please", "m1")
    assert message["preview"] is None
    seen = b.recv_type("message")
    site.asked["/page"].wait(5)
    b.close()  # Bob saw the message, and will miss its preview.
    gate.set()
    frame = changed(a, PREVIEW)
    preview = frame["message"]["preview"]
    assert frame["change"] is not None
    assert frame["message"]["id"] == message["id"]
    assert preview["url"] == url
    assert (preview["title"], preview["description"], preview["site_name"]) == (
        "Léa's page",
        "All about it",
        "Lea",
    )
    assert preview["image_url"].startswith("/previews/")
    assert (preview["image_width"], preview["image_height"]) == (480, 320)  # A thumbnail.
    # Bob comes back from where he was: the change is replayed to him.
    token = token_issued_at(app, bob)
    with connect(f"ws://{live_server}/ws?token={token}&resume=1", open_timeout=5) as ws:
        marks = {"rooms": {"general": seen["id"]}, "changes": b.hello["changes"]}
        ws.send(json.dumps({"type": "resume", **marks}))
        frames = [json.loads(ws.recv(timeout=5))]
        while frames[-1]["type"] != "resumed":
            frames.append(json.loads(ws.recv(timeout=5)))
    replayed = [f for f in frames if f["type"] == "message_changed"]
    assert [(f["kind"], f["message"]["preview"]) for f in replayed] == [(PREVIEW, preview)]
    # A history page shows it too (``describe``).
    a.send({"type": "history", "room": "general", "limit": 5})
    assert a.recv_type("history")["messages"][-1]["preview"] == preview


def test_the_image_is_ours_re_encoded_and_only_for_members(
    app, client, alice, make_user, ws_connect, site
):
    a = ws_connect(alice)
    message = post(a, site.url("/page"), "m1")
    preview = changed(a, PREVIEW)["message"]["preview"]
    as_alice = {"Authorization": f"Bearer {token_issued_at(app, alice)}"}
    answer = client.get(preview["image_url"], headers=as_alice)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "image/webp"
    assert "immutable" in answer.headers["Cache-Control"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    body = answer.get_data()
    answer.close()
    original = site.pages["/image.jpg"][2]
    assert body != original
    assert b"SecretCam" not in body
    assert b"SecretSoftware" not in body
    with Image.open(io.BytesIO(body)) as served:
        assert served.format == "WEBP"
        assert served.size == (480, 320)
        assert not served.getexif()
        assert "exif" not in served.info
    # Carol is in no room with the message; nobody signed in gets nothing; a bad id is the same.
    carol = make_user("carol@example.com")[0]
    as_carol = {"Authorization": f"Bearer {token_issued_at(app, carol)}"}
    refused = client.get(preview["image_url"], headers=as_carol)
    missing = client.get("/previews/999/image", headers=as_alice)
    assert refused.status_code == missing.status_code == 404
    assert (
        refused.get_json()
        == missing.get_json()
        == {
            "error": "not_found",
            "message": "There is no such image.",
        }
    )
    assert client.get(preview["image_url"]).status_code == 401
    # Once the message is deleted, its preview's image is no one's to see.
    a.send({"type": "delete", "id": message["id"], "client_id": "d1"})
    assert changed(a, "delete")["message"]["preview"] is None
    assert client.get(preview["image_url"], headers=as_alice).status_code == 404


def test_two_messages_with_one_link_fetch_it_once(app, alice, ws_connect, site):
    a = ws_connect(alice)
    first = post(a, site.url("/page"), "m1")
    second = post(a, f"again: {site.url('/page')}", "m2")
    frames = [changed(a, PREVIEW), changed(a, PREVIEW)]
    assert {f["message"]["id"] for f in frames} == {first["id"], second["id"]}
    assert frames[0]["message"]["preview"] == frames[1]["message"]["preview"]
    assert site.hits["/page"] == 1
    assert site.hits["/image.jpg"] == 1


@pytest.mark.parametrize(
    ("path", "page"),
    [
        ("/plain", (200, {"Content-Type": "text/plain"}, og_page().encode())),
        ("/json", (200, {"Content-Type": "application/json"}, b'{"og:title": "x"}')),
        ("/huge", (200, {"Content-Type": "text/html"}, og_page().encode() + b" " * 1_100_000)),
        ("/gone", (404, {"Content-Type": "text/html"}, og_page().encode())),
        ("/to-private", (302, {"Location": "http://10.0.0.1/page"}, b"")),
        ("/to-metadata", (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")),
        ("/to-lan", (301, {"Location": "http://192.168.1.1/"}, b"")),
        ("/empty", (200, {"Content-Type": "text/html"}, b"<html><head></head></html>")),
    ],
)
def test_pages_that_give_no_preview(app, alice, ws_connect, site, path, page):
    site.pages[path] = page
    a = ws_connect(alice)
    url = site.url(path)
    message = post(a, f"see {url}", "m1")
    no_preview_shown(app, a, url, message["id"])
    assert site.hits[path] == 1


def test_a_private_address_is_never_asked(app, alice, ws_connect):
    a = ws_connect(alice)
    message = post(a, "http://10.0.0.1/secret", "m1")
    no_preview_shown(app, a, "http://10.0.0.1/secret", message["id"])


def test_a_slow_page_gives_no_preview_and_does_not_delay_the_chat(
    app, alice, bob, ws_connect, site
):
    site.gates["/slow"] = threading.Event()  # Never set before the guard gives up.
    site.html("/slow", og_page())
    a, b = ws_connect(alice), ws_connect(bob)
    url = site.url("/slow")
    message = post(a, url, "m1")
    assert site.asked["/slow"].wait(5)
    post(a, "still here", "m2")
    assert b.recv_type("message")["id"] == message["id"]
    assert b.recv_type("message")["text"] == "still here"
    assert row(app, url) is None  # The fetch is still waiting: the chat did not wait for it.
    no_preview_shown(app, a, url, message["id"])


def test_the_author_removes_the_preview_and_no_one_else_may(
    app, alice, bob, ws_connect, site, client
):
    a, b = ws_connect(alice), ws_connect(bob)
    message = post(a, site.url("/page"), "m1")
    b.recv_type("message")
    preview = changed(a, PREVIEW)["message"]["preview"]
    changed(b, PREVIEW)
    b.send({"type": "unpreview", "id": message["id"], "client_id": "b1"})
    refused = b.recv_type("error")
    assert (refused["code"], refused["client_id"]) == ("forbidden", "b1")
    a.send({"type": "unpreview", "id": message["id"], "client_id": "u1"})
    for chat in (a, b):
        frame = changed(chat, UNPREVIEW)
        assert frame["message"]["preview"] is None
        assert frame["change"] is not None
    # Again: a confirmation to the sender alone, nothing changed.
    a.send({"type": "unpreview", "id": message["id"], "client_id": "u2"})
    again = changed(a, UNPREVIEW)
    assert (again["change"], again["client_id"]) == (None, "u2")
    assert not [f for f in b.sync() if f["type"] == "message_changed"]
    a.send({"type": "unpreview", "id": 999_999, "client_id": "u3"})
    assert a.recv_type("error")["code"] == "not_found"
    a.send({"type": "unpreview", "client_id": "u4"})
    assert a.recv_type("error")["code"] == "bad_request"
    with app.app_context():
        assert db.session.get(Message, message["id"]).preview_id is None
        kinds = db.session.scalars(select(MessageChange.kind).order_by(MessageChange.id)).all()
        assert kinds == [PREVIEW, UNPREVIEW]
    as_alice = {"Authorization": f"Bearer {token_issued_at(app, alice)}"}
    assert client.get(preview["image_url"], headers=as_alice).status_code == 404
