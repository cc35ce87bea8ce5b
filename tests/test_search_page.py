"""The page's search (the box, its results, a result opened in its room), in Chromium.

Messages come from a real WebSocket of someone else (as in test_messages_page); the reader's page
searches through /api/search and opens results over its own socket. Every wait is on what the
page shows (Playwright's expect), never a sleep.
"""

import re

import pytest
from playwright.sync_api import expect

from helpers import (
    CLIENT_IDS,
    VISIBLE_LIST,
    Person,
    chat_socket,
    post,
    serious_violations,
    signed_up_in,
)

FILLERS = 120  # More than two history pages (50): the window around an early one is not the end.
EARLY = 10  # The found message comes after this many fillers.

pytestmark = pytest.mark.browser


@pytest.fixture
def app_config(app_config):
    """Room for a test's burst of messages from one socket."""
    app_config["CHAT_MESSAGE_BURST"] = 300
    app_config["CHAT_FRAME_BURST"] = 400
    return app_config


# ---- Helpers ----------------------------------------------------------------------------------


def post_history(chat):
    """Fillers, with a message to find early on and one holding markup; the found message."""
    found = None
    for n in range(FILLERS):
        if n == EARLY:
            found = post(chat, "Le Déploiement de vendredi est reporté")
            post(chat, "deploiement <script>alert(1)</script> <b>gras</b>")
        post(chat, f"filler {n}")
    return found


def message(person, text):
    page = person.page
    return page.locator(f"{VISIBLE_LIST} > .message").filter(
        has=page.locator(".text", has_text=text)
    )


def shown_ids(person):
    ids = person.page.locator(f"{VISIBLE_LIST} > .message[data-id]").evaluate_all(
        "items => items.map(item => Number(item.dataset.id))"
    )
    assert ids == sorted(ids)  # In order...
    assert len(ids) == len(set(ids))  # ... and none twice.
    return ids


def search(person, query):
    box = person.page.locator("#search-input")
    box.fill(query)
    box.press("Enter")


def results(person):
    return person.page.locator("#search-results .search-result")


def no_problems(person):
    assert person.problems == []
    assert person.dialogs == []


# ---- Finding and opening ------------------------------------------------------------------------


def test_a_result_opens_in_a_window_that_pages_down_to_the_live_room(
    app, browser, gunicorn_server, make_user
):
    carol, _ = make_user("carol@example.com")
    with chat_socket(app, gunicorn_server, carol) as chat:
        found = post_history(chat)
        alice = Person(browser, gunicorn_server.url)
        alice.register("alice@example.com")
        page = alice.page
        expect(message(alice, f"filler {FILLERS - 1}")).to_have_count(1)

        # Without accents or capitals; the marked words keep theirs.
        search(alice, "deploiement")
        panel = page.get_by_role("region", name="Search results")
        expect(panel).to_be_visible()
        expect(results(alice)).to_have_count(2)
        expect(panel.locator("#search-status")).to_have_text("2 results")
        newest, early = results(alice).nth(0), results(alice).nth(1)
        expect(early.locator(".snippet mark")).to_have_text("Déploiement")
        expect(early.locator(".result-room")).to_have_text("#general")
        expect(early.locator(".author")).to_have_text("carol")
        expect(early.locator("time")).to_have_attribute("datetime", found["ts"])
        # Markup in a message is text in its snippet: only marks are elements.
        expect(newest.locator(".snippet")).to_contain_text("<script>alert(1)</script> <b>gras</b>")
        assert newest.locator(".snippet *").evaluate_all(
            "nodes => nodes.map(node => node.tagName)"
        ) == ["MARK"]

        # By keyboard: Down from the box, Down again, Enter.
        page.keyboard.press("ArrowDown")
        expect(newest).to_be_focused()
        page.keyboard.press("ArrowDown")
        expect(early).to_be_focused()
        page.keyboard.press("Enter")
        expect(panel).to_be_hidden()
        shown = page.locator(f'{VISIBLE_LIST} > .message[data-id="{found["id"]}"]')
        expect(shown).to_be_focused()
        expect(shown).to_be_in_viewport()
        expect(shown).to_have_class(re.compile(r"\bhighlight\b"))
        expect(message(alice, "filler 0")).to_have_count(1)  # Context before it...
        expect(message(alice, f"filler {EARLY + 20}")).to_have_count(1)  # ... and after.
        expect(message(alice, f"filler {FILLERS - 1}")).to_have_count(0)  # Not the latest page.
        ids = shown_ids(alice)
        assert found["id"] in ids
        assert len(ids) == 50
        controls = page.locator("#window-controls")
        expect(controls).to_be_visible()

        # A live message is held, counted, never put below the window.
        live = post(chat, "Live while you read")
        expect(controls).to_contain_text("1 new message")
        edit = {"type": "edit", "id": live["id"], "text": "Live while you read, edited"}
        chat.send({**edit, "client_id": f"edit-{next(CLIENT_IDS)}"})
        assert chat.recv_type("message_changed")["message"]["text"] == edit["text"]
        general = page.locator('.room-button[data-room="general"]')
        expect(general).to_contain_text("1 unread message")
        expect(message(alice, "Live while you read")).to_have_count(0)

        # Newer messages, page after page, until the room is live again.
        newer = page.get_by_role("button", name="Newer messages")
        newer.focus()
        page.keyboard.press("Enter")
        expect(page.locator(f"{VISIBLE_LIST} > .message[data-id]")).to_have_count(100)
        expect(newer).to_be_focused()
        page.keyboard.press("Enter")
        expect(controls).to_be_hidden()
        expect(page.locator("#message-input")).to_be_focused()
        expect(message(alice, f"filler {FILLERS - 1}")).to_have_count(1)
        held = message(alice, "Live while you read, edited")  # As it is now.
        expect(held.locator("time.edited")).to_have_count(1)
        ids = shown_ids(alice)
        assert ids == list(range(ids[0], ids[0] + FILLERS + 3))  # No gap, nothing twice.
        assert page.locator(f"{VISIBLE_LIST} > .message .text").last.text_content() == (
            "Live while you read, edited"
        )
        expect(general.locator(".badge")).to_have_count(0)  # Read, now that it is shown.

        # Live again: the next message goes at the end.
        post(chat, "Live again")
        expect(page.locator(f"{VISIBLE_LIST} > .message .text").last).to_have_text("Live again")
        shown_ids(alice)
    no_problems(alice)
    alice.context.close()


def test_more_results_errors_escape_and_jump_to_latest(app, browser, gunicorn_server, make_user):
    carol, _ = make_user("carol@example.com")
    with chat_socket(app, gunicorn_server, carol) as chat:
        needles = [post(chat, f"needle number {n}") for n in range(25)]
        for n in range(60):
            post(chat, f"hay {n}")
        alice = Person(browser, gunicorn_server.url)
        alice.register("alice@example.com")
        page = alice.page
        expect(message(alice, "hay 59")).to_have_count(1)

        search(alice, "needl*")
        expect(results(alice)).to_have_count(20)
        more = page.get_by_role("button", name="More results")
        expect(more).to_be_visible()
        more.click()
        expect(results(alice)).to_have_count(25)
        expect(more).to_be_hidden()
        expect(results(alice).nth(20)).to_be_focused()  # On to the first new one.
        assert results(alice).evaluate_all(
            "buttons => buttons.map(button => Number(button.dataset.id))"
        ) == [needle["id"] for needle in reversed(needles)]

        # Escape closes the panel and goes back to the box; nothing found says so.
        page.keyboard.press("Escape")
        expect(page.locator("#search-panel")).to_be_hidden()
        expect(page.locator("#search-input")).to_be_focused()
        search(alice, "haystack")
        expect(page.locator("#search-status")).to_have_text("No results.")
        expect(results(alice)).to_have_count(0)

        # A query the server refuses: its message, as it says it.
        expected = page.request.get("/api/search?q=a*")
        assert expected.status == 400
        search(alice, "a*")
        status = page.locator("#search-status")
        expect(status).to_have_text(expected.json()["message"])
        expect(status).to_have_class(re.compile(r"\berror\b"))

        # Open the oldest needle, then straight back to the latest.
        search(alice, "needl*")
        expect(results(alice)).to_have_count(20)
        more.click()
        results(alice).nth(24).click()
        first = page.locator(f'{VISIBLE_LIST} > .message[data-id="{needles[0]["id"]}"]')
        expect(first).to_be_focused()
        expect(message(alice, "hay 59")).to_have_count(0)
        page.get_by_role("button", name="Jump to latest").click()
        expect(message(alice, "hay 59")).to_have_count(1)
        expect(page.locator("#window-controls")).to_be_hidden()
        expect(page.locator(f"{VISIBLE_LIST} > .message[data-id]")).to_have_count(50)
        assert shown_ids(alice)[-1] > needles[-1]["id"]
    # Chromium logs the refused query's 400 as a console error: that one, and only it, expected.
    refused = [p for p in alice.problems if "status of 400" in p]
    assert len(refused) == 1
    alice.problems.remove(refused[0])
    no_problems(alice)
    alice.context.close()


def test_my_message_in_a_window_brings_back_the_latest_page(
    app, browser, gunicorn_server, make_user
):
    carol, _ = make_user("carol@example.com")
    with chat_socket(app, gunicorn_server, carol) as chat:
        found = post_history(chat)
    alice = Person(browser, gunicorn_server.url)
    alice.register("alice@example.com")
    page = alice.page
    search(alice, "reporte")
    results(alice).first.click()
    expect(page.locator(f'{VISIBLE_LIST} > .message[data-id="{found["id"]}"]')).to_be_focused()
    alice.say("Writing from the window")
    expect(message(alice, "Writing from the window")).to_have_attribute(
        "data-id", re.compile(r"\d")
    )
    expect(page.locator("#window-controls")).to_be_hidden()
    expect(message(alice, f"filler {FILLERS - 1}")).to_have_count(1)
    expect(message(alice, "Writing from the window")).to_have_count(1)
    shown_ids(alice)
    no_problems(alice)
    alice.context.close()


def test_a_search_after_the_session_ended_goes_to_the_login_page(browser, gunicorn_server):
    alice = Person(browser, gunicorn_server.url)
    alice.register("alice@example.com")
    alice.context.clear_cookies()  # The session is gone; the socket is still open.
    search(alice, "anything")
    expect(alice.page.get_by_role("heading", name="Log in")).to_be_visible()
    assert alice.page.url.endswith("/login?next=%2F")
    alice.context.close()


# ---- Accessibility ----------------------------------------------------------------------------


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("locale", ["en-US", "fr-FR"])
def test_search_panel_and_window_pass_axe(app, browser, gunicorn_server, make_user, theme, locale):
    writer, _ = make_user("writer@example.com")
    with chat_socket(app, gunicorn_server, writer) as chat:
        found = post_history(chat)
    reader = signed_up_in(browser, gunicorn_server.url, "reader@example.com", theme, locale)
    context, page = reader.context, reader.page
    search(reader, "deploiement")
    expect(results(reader)).to_have_count(2)
    results(reader).nth(1).hover()
    assert serious_violations(page) == []
    reader.screenshot(f"search-{theme}-{locale}")
    # A result opened: the window and its controls, with a message waiting.
    results(reader).nth(1).press("Enter")
    shown = page.locator(f'{VISIBLE_LIST} > .message[data-id="{found["id"]}"]')
    expect(shown).to_be_focused()
    with chat_socket(app, gunicorn_server, writer) as chat:
        post(chat, "Meanwhile")
    expect(page.locator("#newer-count")).not_to_be_empty()
    assert serious_violations(page) == []
    reader.screenshot(f"search-window-{theme}-{locale}")
    assert reader.problems == []
    context.close()
