"""The page's outbox in a real browser: what the server has not confirmed survives a reload, is
sent again with its client_id and stored once, and belongs to one account only.

A page cannot reload while its server is down (the server serves the page), and Playwright's
``set_offline`` leaves an open WebSocket open. So the tests stop the server for typing offline,
and lose the server's answers on the way to the page (``SocketRoute``) to keep a message
unconfirmed across a reload while the server is up.
"""

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from extensions import db
from helpers import PASSWORD, VISIBLE_LIST, Person, SocketRoute, pump_until
from models import Message

RECONNECT_TIMEOUT_MS = 20_000
KEY_ROOT = "chat.outbox."

pytestmark = pytest.mark.browser


@pytest.fixture
def people(browser, gunicorn_server):
    """Two people, each with their own browser context."""
    alice, bob = Person(browser, gunicorn_server.url), Person(browser, gunicorn_server.url)
    yield alice, bob
    alice.context.close()
    bob.context.close()


def stored_texts(app):
    """The text of every stored message, oldest first."""
    with app.app_context():
        return list(db.session.scalars(select(Message.text).order_by(Message.id)))


def stored_message(app, text):
    """``(id, user_id, text, edited_at)`` of the one message stored with ``text`` first."""
    with app.app_context():
        row = db.session.execute(
            select(Message.id, Message.user_id, Message.text, Message.edited_at).where(
                Message.text == text
            )
        ).one()
    return tuple(row)


def outbox_storage(page):
    """Every outbox key in the page's localStorage, with its item decoded."""
    return page.evaluate(
        """root => Object.fromEntries(Object.keys(localStorage)
            .filter(key => key.startsWith(root))
            .map(key => [key, JSON.parse(localStorage.getItem(key))]))""",
        KEY_ROOT,
    )


def pending(person, text):
    return person.page.locator(f"{VISIBLE_LIST} .message.pending .text").filter(has_text=text)


def log_in_as(person, email):
    """Log in from the login page, whatever its language and flashes."""
    person.page.get_by_label("Email").fill(email)
    person.page.get_by_label("Password").fill(PASSWORD)
    person.page.get_by_role("button", name="Log in").click()
    person.expect_connected()


def test_a_message_typed_offline_survives_reloads_and_is_posted_once(app, people, gunicorn_server):
    alice, bob = people
    text = "typed while offline"
    alice.register("alice@example.com")
    bob.register("bob@example.com")
    alice_id = int(alice.page.locator("#chat").get_attribute("data-user-id"))

    gunicorn_server.kill()
    expect(alice.page.locator("#status")).to_have_attribute("data-state", "reconnecting")
    alice.say(text)
    expect(pending(alice, text)).to_have_count(1)
    [(key, item)] = outbox_storage(alice.page).items()
    assert key == f"{KEY_ROOT}{alice_id}.{item['client_id']}"
    assert item["kind"] == "message"
    assert item["room"] == "general"
    assert item["frame"] == {
        "type": "message",
        "room": "general",
        "text": text,
        "client_id": item["client_id"],
    }

    # Back up: the page sends it after hello and the server stores it, but the answers never
    # reach the page (the echo, the replay, the hello's history), so it stays unconfirmed.
    route = SocketRoute(alice.page)
    route.drop_answer = lambda frame: frame.get("type") == "message" and frame["text"] == text
    gunicorn_server.start()
    alice.expect_connected(RECONNECT_TIMEOUT_MS)
    pump_until(alice.page, lambda: stored_texts(app) == [text], "the message to be stored")
    expect(bob.messages(text)).to_have_count(1)
    expect(pending(alice, text)).to_have_count(1)

    # A reload: restored from storage, shown as pending, sent again with the same client_id.
    alice.page.reload()
    alice.expect_connected()
    expect(pending(alice, text)).to_have_count(1)
    pump_until(alice.page, lambda: len(route.client_ids(text)) >= 2, "the re-send")
    assert set(route.client_ids(text)) == {item["client_id"]}
    assert list(outbox_storage(alice.page)) == [key]

    # The answers get through again: the next page sees it saved and forgets it.
    route.drop_answer = lambda frame: False
    alice.page.reload()
    alice.expect_connected()
    expect(alice.messages(text)).to_have_count(1)
    expect(alice.page.locator(".message.pending")).to_have_count(0)
    assert outbox_storage(alice.page) == {}
    assert stored_texts(app) == [text]  # Sent three times, stored once.
    assert stored_message(app, text)[1] == alice_id
    expect(bob.messages(text)).to_have_count(1)
    while_down = ("WebSocket connection", "ERR_CONNECTION_REFUSED")  # The server was away.
    problems = [p for p in alice.problems + bob.problems if not any(w in p for w in while_down)]
    assert problems == []


def hold_messages(person, text):
    """Route ``person``'s sockets so that messages with ``text`` never reach the server."""
    route = SocketRoute(person.page)
    route.drop_sent = lambda frame: frame.get("type") == "message" and frame["text"] == text
    return route


def expect_nothing_posted_as(app, person, user_id, text):
    """``person`` posts a marker, handled after anything their page sent before it (a socket's
    frames are handled in order): ``text`` was not stored, as anyone."""
    marker = f"marker from {user_id}"
    person.say(marker)
    expect(person.messages(marker)).to_have_count(1)
    expect(person.page.locator(".message.pending")).to_have_count(0)  # Confirmed: stored.
    assert stored_message(app, marker)[1] == user_id
    assert text not in stored_texts(app)


def test_logging_out_discards_the_outbox_and_the_next_account_never_meets_it(
    app, people, bob, gunicorn_server
):
    alice, _ = people
    text = "alice's unsent words"
    route = hold_messages(alice, text)
    alice.register("alice@example.com")
    alice.say(text)
    expect(pending(alice, text)).to_have_count(1)
    pump_until(alice.page, lambda: route.client_ids(text), "the message to be sent")
    assert len(outbox_storage(alice.page)) == 1

    alice.log_out()  # From the chat page: its logout form discards the outbox.
    assert outbox_storage(alice.page) == {}
    route.drop_sent = lambda frame: False  # Anything sent from now on would be stored.
    log_in_as(alice, "bob@example.com")
    expect(alice.page.locator(".message.pending")).to_have_count(0)
    expect(alice.messages(text)).to_have_count(0)
    expect_nothing_posted_as(app, alice, bob, text)
    assert outbox_storage(alice.page) == {}


def test_an_outbox_left_by_a_logout_elsewhere_is_removed_unread_by_the_next_account(
    app, people, bob, gunicorn_server
):
    alice, _ = people
    text = "left behind by alice"
    route = hold_messages(alice, text)
    alice.register("alice@example.com")
    alice_id = int(alice.page.locator("#chat").get_attribute("data-user-id"))
    alice.say(text)
    expect(pending(alice, text)).to_have_count(1)

    # The profile page has no chat script: its logout leaves the outbox in storage.
    alice.page.goto("/profile")
    alice.log_out()
    [key] = outbox_storage(alice.page)
    assert key.startswith(f"{KEY_ROOT}{alice_id}.")

    route.drop_sent = lambda frame: False
    log_in_as(alice, "bob@example.com")
    assert outbox_storage(alice.page) == {}  # Removed at load, before the socket even opened.
    expect(alice.page.locator(".message.pending")).to_have_count(0)
    expect_nothing_posted_as(app, alice, bob, text)
    assert not route.client_ids(text)[1:]  # Only alice's own page ever sent it.


def test_a_socket_revoked_elsewhere_discards_the_outbox(people, gunicorn_server):
    alice, _ = people
    text = "never to be sent"
    hold_messages(alice, text)
    alice.register("alice@example.com")
    alice.say(text)
    expect(pending(alice, text)).to_have_count(1)
    other_tab = alice.context.new_page()
    other_tab.goto("/profile")  # No chat script here: only the first tab can forget.
    other_tab.get_by_role("button", name="Log out", exact=True).click()
    # The first tab's socket is closed with 4001: it forgets, and goes to the login page.
    expect(alice.page).to_have_url(re.compile(r"/login\?next=%2F$"), timeout=10_000)
    assert outbox_storage(other_tab) == {}


def test_a_tab_greeted_as_another_account_never_sends_the_outbox(app, people, bob):
    alice, _ = people
    text = "meant for alice's session"
    route = hold_messages(alice, text)
    route.hide_server_close = True  # This tab will not hear of alice's logout.
    alice.register("alice@example.com")
    alice.say(text)
    expect(pending(alice, text)).to_have_count(1)
    other_tab = alice.context.new_page()
    other_tab.goto("/profile")
    other_tab.get_by_role("button", name="Log out", exact=True).click()
    other_tab.goto("/login?next=/profile")  # Bob signs in here, and opens no chat page.
    other_tab.get_by_label("Email").fill("bob@example.com")
    other_tab.get_by_label("Password").fill(PASSWORD)
    other_tab.get_by_role("button", name="Log in").click()
    expect(other_tab).to_have_url(re.compile(r"/profile$"))
    assert len(outbox_storage(other_tab)) == 1

    # The first tab reconnects: its fresh token is bob's, and so is its hello.
    route.drop_sent = lambda frame: False
    route.hide_server_close = False
    route.page_side.close(code=1001)
    expect(alice.page.locator("#chat")).to_have_attribute("data-user-id", str(bob))
    alice.expect_connected()
    expect(alice.page.locator(".message.pending")).to_have_count(0)
    expect_nothing_posted_as(app, alice, bob, text)
    assert outbox_storage(alice.page) == {}
    assert len(route.client_ids(text)) == 1  # Only while the tab was alice's.


def test_a_change_kept_across_a_reload_is_sent_again_and_applied(app, people, gunicorn_server):
    alice, bob = people
    route = SocketRoute(alice.page)  # Before the socket opens: it routes only new sockets.
    alice.register("alice@example.com")
    bob.register("bob@example.com")
    alice.say("before the edit")
    expect(bob.messages("before the edit")).to_have_count(1)
    message_id = stored_message(app, "before the edit")[0]

    route.drop_sent = lambda frame: frame.get("type") == "edit"  # The server never gets it.
    client_id = alice.page.evaluate(
        """async ([id]) => {
            const outbox = await import("/static/js/outbox.js");
            return outbox.queueChange({ type: "edit", id, text: "after the edit" });
        }""",
        [message_id],
    )
    [(key, item)] = outbox_storage(alice.page).items()
    assert key.endswith(f".{client_id}")
    assert item["kind"] == "change"
    assert item["frame"] == {
        "type": "edit",
        "id": message_id,
        "text": "after the edit",
        "client_id": client_id,
    }
    pump_until(
        alice.page, lambda: any(f.get("client_id") == client_id for f in route.sent), "the edit"
    )
    assert stored_message(app, "before the edit")[3] is None

    route.drop_sent = lambda frame: False
    alice.page.reload()
    alice.expect_connected()
    expect(alice.messages("after the edit")).to_have_count(1)
    expect(bob.messages("after the edit")).to_have_count(1)
    pump_until(alice.page, lambda: outbox_storage(alice.page) == {}, "the change to be confirmed")
    edits = [f for f in route.sent if f.get("client_id") == client_id]
    assert len(edits) == 2  # Once before the reload (lost), once after it.
    assert stored_message(app, "after the edit")[0] == message_id


def test_a_refused_storage_never_stops_sending(browser, gunicorn_server):
    person = Person(browser, gunicorn_server.url)
    try:
        person.context.add_init_script(
            """Storage.prototype.setItem = () => {
                throw new DOMException("full", "QuotaExceededError");
            };"""
        )
        warnings = []
        person.page.on(
            "console", lambda m: warnings.append(m.text) if m.type == "warning" else None
        )
        person.register("alice@example.com")
        for n in range(2):
            person.say(f"kept in memory {n}")
            expect(person.messages(f"kept in memory {n}")).to_have_count(1)
        expect(person.page.locator(".message.pending")).to_have_count(0)
        assert len([w for w in warnings if "outbox is kept in memory only" in w]) == 1
        assert person.problems == []
    finally:
        person.context.close()
