"""The chat page in a real browser: Debian's Chromium driven by Playwright, against gunicorn."""

import re

import pytest
from playwright.sync_api import expect

from helpers import VISIBLE_LIST, Person, stored_ids

RECONNECT_TIMEOUT_MS = 20_000

pytestmark = pytest.mark.browser


@pytest.fixture
def app_config(app_config):
    """A typing indicator lasts 2 s instead of 6 (one test waits for one to expire)."""
    app_config["CHAT_TYPING_TTL"] = 2
    return app_config


@pytest.fixture
def people(browser, gunicorn_server):
    """Two people, each with their own browser context."""
    alice, bob = Person(browser, gunicorn_server.url), Person(browser, gunicorn_server.url)
    yield alice, bob
    alice.context.close()
    bob.context.close()


def test_two_people_chat_safely_and_survive_a_server_restart(people, gunicorn_server):
    alice, bob = people
    alice.register("alice@example.com")
    bob.register("bob@example.com")
    bob.log_out()
    bob.log_in("bob@example.com")
    expect(alice.page.locator("#online li > .person-name")).to_have_text(["alice", "bob"])

    alice.say("Bonjour Bob !")
    expect(bob.messages("Bonjour Bob !")).to_have_count(1)
    expect(alice.page.locator(f"{VISIBLE_LIST} .message.own .text")).to_have_text(["Bonjour Bob !"])
    expect(alice.page.get_by_role("textbox", name="Message")).to_have_value("")
    bob.say("Salut Alice")
    expect(alice.messages("Salut Alice")).to_have_count(1)
    expect(bob.page.locator(f"{VISIBLE_LIST} time").first).to_have_attribute(
        "datetime", re.compile(r"Z$")
    )

    attacks = ("<img src=x onerror=alert(1)>", "<script>alert(2)</script>", "javascript:alert(3)")
    for attack in attacks:
        alice.say(attack)
        expect(bob.messages(attack)).to_have_text([attack])  # Shown as typed...
    lists = bob.page.locator("#message-lists")
    for tag in ("img", "script", "a"):
        expect(lists.locator(tag)).to_have_count(0)  # ...and nothing of it became markup.
    alice.screenshot("chat-alice")
    bob.screenshot("chat-bob")

    gunicorn_server.kill()
    expect(alice.page.locator("#status")).to_have_attribute("data-state", "reconnecting")
    gunicorn_server.start()
    alice.expect_connected(RECONNECT_TIMEOUT_MS)
    bob.expect_connected(RECONNECT_TIMEOUT_MS)
    alice.say("Still here after the restart")
    expect(bob.messages("Still here after the restart")).to_have_count(1)
    expect(bob.messages("Bonjour Bob !")).to_have_count(1)  # History did not duplicate.
    bob.screenshot("chat-bob-after-restart")

    assert alice.dialogs == bob.dialogs == []
    while_down = ("WebSocket connection", "ERR_CONNECTION_REFUSED")  # The server was away.
    problems = [p for p in alice.problems + bob.problems if not any(w in p for w in while_down)]
    assert problems == []


def test_page_goes_to_login_when_the_session_is_gone(people, gunicorn_server):
    alice, _ = people
    alice.register("alice@example.com")
    alice.context.clear_cookies()
    gunicorn_server.kill()
    gunicorn_server.start()
    expect(alice.page).to_have_url(
        f"{gunicorn_server.url}/login?next=%2F", timeout=RECONNECT_TIMEOUT_MS
    )


def test_error_frames_are_shown_to_the_user(people):
    alice, _ = people
    alice.register("alice@example.com")
    long_text = "x" * 2001
    # The textarea stops typing at the limit; a frame sent anyway gets the server's answer.
    alice.page.evaluate(
        "text => document.getElementById('message-input').removeAttribute('maxlength')", long_text
    )
    alice.say(long_text)
    expect(alice.page.locator("#notice")).to_have_text(
        "The message is longer than 2000 characters."
    )
    expect(alice.page.locator(f"{VISIBLE_LIST} .message.failed")).to_have_count(1)


def list_ids(person, room):
    """The ids of the messages shown in ``room``, in page order."""
    selector = f'.messages[data-room="{room}"] .message[data-id]'
    return person.page.eval_on_selector_all(
        selector, "items => items.map(i => Number(i.dataset.id))"
    )


def room_button(person, label):
    return person.page.locator(".room-button").filter(has_text=label)


def test_rooms_direct_messages_unread_counts_and_typing(people):
    alice, bob = people
    alice.register("alice@example.com")
    bob.register("bob@example.com")

    alice.page.get_by_label("New room").fill("Python")
    alice.page.get_by_role("button", name="Create").click()
    expect(alice.page.locator("#room-title")).to_have_text("#Python")
    bob.page.get_by_role("button", name="Join #Python").click()
    expect(bob.page.locator("#room-title")).to_have_text("#Python")
    alice.say("Welcome to Python")
    expect(bob.messages("Welcome to Python")).to_have_count(1)

    room_button(bob, "#general").click()
    expect(bob.page.locator("#room-title")).to_have_text("#general")
    alice.say("Anyone here?")
    expect(room_button(bob, "#Python").locator(".badge")).to_have_text("1")
    expect(bob.messages("Anyone here?")).to_have_count(0)  # Shown only in its own room.

    room_button(alice, "#general").click()
    alice.page.get_by_role("textbox", name="Message").press_sequentially("hel")
    expect(bob.page.locator("#typing")).to_have_text("alice is typing…")
    expect(bob.page.locator("#typing")).to_have_text("", timeout=10_000)  # It expires by itself.

    alice.page.get_by_role("button", name="Send a direct message to bob").click()
    expect(alice.page.locator("#room-title")).to_have_text("@bob")
    alice.say("psst, bob")
    expect(room_button(bob, "@alice").locator(".badge")).to_have_text("1")
    room_button(bob, "@alice").click()
    expect(bob.messages("psst, bob")).to_have_count(1)
    expect(room_button(bob, "@alice").locator(".badge")).to_have_count(0)
    bob.screenshot("rooms-bob")


def test_every_page_shows_one_identical_history_after_a_crash(app, people, gunicorn_server):
    alice, bob = people
    alice.register("alice@example.com")
    bob.register("bob@example.com")
    alice.page.get_by_role("button", name="Send a direct message to bob").click()
    expect(alice.page.locator("#room-title")).to_have_text("@bob")
    alice.say("first, in private")
    room_button(bob, "@alice").click()
    expect(bob.messages("first, in private")).to_have_count(1)
    room_button(alice, "#general").click()
    room_button(bob, "#general").click()
    for n in range(3):
        bob.say(f"bob before {n}")
    alice.say("in flight")  # Sent, and the server dies before it can confirm it, or even read it.
    gunicorn_server.kill()
    alice.say("typed while offline 1")
    alice.say("typed while offline 2")
    bob.say("bob offline")
    expect(alice.page.locator(".message.pending")).not_to_have_count(0)
    gunicorn_server.start()
    for person in (alice, bob):
        person.expect_connected(RECONNECT_TIMEOUT_MS)
        expect(person.page.locator(".message.pending")).to_have_count(0, timeout=10_000)
    stored = stored_ids(app)
    assert len(stored) == 2  # general and the direct room
    for room, ids in stored.items():
        for person in (alice, bob):
            shown = person.page.locator(f'.messages[data-room="{room}"] .message[data-id]')
            expect(shown).to_have_count(len(ids))
            assert list_ids(person, room) == ids  # Same order, no gap, no duplicate.
    texts = alice.page.locator('.messages[data-room="general"] .message .text').all_text_contents()
    for text in ("in flight", "typed while offline 1", "typed while offline 2", "bob offline"):
        assert texts.count(text) == 1
    alice.screenshot("resume-alice")


def test_a_page_signed_out_elsewhere_goes_to_login_instead_of_reconnecting(people):
    alice, _ = people
    alice.register("alice@example.com")
    other_tab = alice.context.new_page()
    other_tab.goto("/")
    other_tab.get_by_role("button", name="Log out", exact=True).click()
    # The first tab's socket is closed with 4001: it goes to the login page and stays there.
    expect(alice.page).to_have_url(re.compile(r"/login\?next=%2F$"), timeout=10_000)
    expect(alice.page.get_by_role("heading", name="Log in")).to_be_visible()


def test_two_browsers_chat_through_nginx(browser, behind_proxy, nginx_server):
    alice, bob = Person(browser, nginx_server.url), Person(browser, nginx_server.url)
    try:
        alice.register("alice@example.com")
        bob.register("bob@example.com")
        alice.say("Through the proxy")
        expect(bob.messages("Through the proxy")).to_have_count(1)
        bob.say("Loud and clear")
        expect(alice.messages("Loud and clear")).to_have_count(1)
        expect(alice.page.locator("link[rel=stylesheet]")).to_have_count(1)
        assert alice.page.evaluate("getComputedStyle(document.body).display") == "flex"  # CSS came.
        bob.screenshot("through-nginx")
        assert alice.problems == bob.problems == []
    finally:
        alice.context.close()
        bob.context.close()
    assert "token=" not in nginx_server.access_log.read_text()
