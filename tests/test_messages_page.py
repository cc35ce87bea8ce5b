"""The page's side of edits, deletions, replies, reactions and mentions (issue 18), in Chromium.

Two people in their own browser contexts against gunicorn, as in test_browser; a third one,
when a test needs messages the pages did not write, posts through a real WebSocket. Every wait
is on what a page shows (Playwright's expect), never a sleep.
"""

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from extensions import db
from helpers import (
    VISIBLE_LIST,
    Person,
    change,
    chat_socket,
    post,
    serious_violations,
    signed_up_in,
)
from models import Message

FILLERS = 60  # More than a history page (50): the first message is not loaded at first.

pytestmark = pytest.mark.browser


@pytest.fixture
def app_config(app_config):
    """Room for a test's burst of messages from one socket."""
    app_config["CHAT_MESSAGE_BURST"] = 100
    app_config["CHAT_FRAME_BURST"] = 200
    return app_config


@pytest.fixture
def people(browser, gunicorn_server):
    """Alice and Bob, each in their own browser context, signed up."""
    alice, bob = Person(browser, gunicorn_server.url), Person(browser, gunicorn_server.url)
    alice.register("alice@example.com")
    bob.register("bob@example.com")
    yield alice, bob
    alice.context.close()
    bob.context.close()


# ---- Helpers ----------------------------------------------------------------------------------


def message(person, text):
    """The message element whose own text (not a reply's quote of it) has ``text``."""
    page = person.page
    return page.locator(f"{VISIBLE_LIST} > .message").filter(
        has=page.locator(".text", has_text=text)
    )


def composer(person):
    return person.page.get_by_role("textbox", name="Message")


def confirmed(person):
    """Wait until every message this page sent is confirmed (pending ones have no id yet)."""
    expect(person.page.locator(f"{VISIBLE_LIST} .message.pending")).to_have_count(0)


def user_id(person):
    return int(person.page.locator("#chat").get_attribute("data-user-id"))


def no_problems(*persons):
    for person in persons:
        assert person.problems == []
        assert person.dialogs == []  # window.alert/confirm never ran: confirmation is a <dialog>.


def action(person, text, name):
    """A message's action button (Reply, React, Edit, Delete)."""
    return message(person, text).get_by_role("button", name=name, exact=True)


def hover_action(person, text, name):
    """Click a message's action button with the mouse, as its toolbar shows on hover."""
    message(person, text).hover()
    action(person, text, name).click()


# ---- Editing ----------------------------------------------------------------------------------


def test_up_edits_my_last_message_by_keyboard_and_escape_cancels(people):
    alice, bob = people
    alice.say("Frist post")
    alice.say("Second post")
    expect(message(bob, "Second post")).to_have_count(1)
    confirmed(alice)
    box = composer(alice)
    box.press("ArrowUp")  # Empty composer: my last message here, in the box.
    expect(box).to_have_value("Second post")
    expect(alice.page.locator(".compose-context")).to_contain_text("Editing")
    box.fill("Second post, edited")
    box.press("Enter")
    expect(box).to_have_value("")
    expect(alice.page.locator(".compose-context")).to_be_hidden()
    edited = message(bob, "Second post, edited")
    expect(edited.locator("time.edited")).to_have_text("edited")
    expect(edited.locator("time.edited")).to_have_attribute("datetime", re.compile(r"Z$"))
    expect(message(alice, "Second post, edited").locator("time.edited")).to_have_count(1)

    box.press("ArrowUp")
    expect(box).to_have_value("Second post, edited")
    box.fill("Not this")
    box.press("Escape")  # Cancelled: nothing sent, the box empty again.
    expect(box).to_have_value("")
    expect(alice.page.locator(".compose-context")).to_be_hidden()
    box.fill("Third post")
    box.press("Enter")  # A new message, not an edit.
    expect(message(bob, "Third post")).to_have_count(1)
    expect(message(bob, "Second post, edited")).to_have_count(1)
    expect(message(bob, "Not this")).to_have_count(0)
    expect(bob.page.locator(f"{VISIBLE_LIST} time.edited")).to_have_count(1)
    # Only my own messages have Edit and Delete.
    expect(action(bob, "Frist post", "Edit")).to_have_count(0)
    expect(action(alice, "Frist post", "Edit")).to_have_count(1)
    no_problems(alice, bob)


# ---- Deleting ---------------------------------------------------------------------------------


def test_delete_by_mouse_asks_first_and_leaves_a_tombstone_on_both_pages(people):
    alice, bob = people
    alice.say("Keep me")
    alice.say("Oops, wrong room")
    alice.say("After the oops")
    expect(message(bob, "After the oops")).to_have_count(1)

    hover_action(alice, "Oops, wrong room", "Delete")
    dialog = alice.page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    alice.page.keyboard.press("Escape")  # Cancelled: nothing happens.
    expect(dialog).to_be_hidden()
    expect(action(alice, "Oops, wrong room", "Delete")).to_be_focused()

    hover_action(alice, "Oops, wrong room", "Delete")
    dialog.get_by_role("button", name="Delete", exact=True).click()
    for person in people:
        tombstone = person.page.locator(f"{VISIBLE_LIST} > .message.deleted")
        expect(tombstone).to_have_count(1)
        expect(tombstone.locator(".text")).to_have_text("Message deleted")
        expect(tombstone.get_by_role("button")).to_have_count(0)  # No actions on a tombstone.
        texts = person.page.locator(f"{VISIBLE_LIST} > .message > .text")
        expect(texts).to_have_text(["Keep me", "Message deleted", "After the oops"])  # In place.
    no_problems(alice, bob)


# ---- Replying ---------------------------------------------------------------------------------


def test_replies_by_keyboard_and_mouse_and_a_quote_finds_its_unloaded_parent(
    app, browser, gunicorn_server, make_user
):
    carol, _ = make_user("carol@example.com")
    with chat_socket(app, gunicorn_server, carol) as chat:
        parent = post(chat, "The very first message")
        for n in range(FILLERS):
            post(chat, f"filler {n}")
        alice = Person(browser, gunicorn_server.url)
        alice.register("alice@example.com")
        page = alice.page
        expect(message(alice, f"filler {FILLERS - 1}")).to_have_count(1)
        expect(page.locator(f'.message[data-id="{parent["id"]}"]')).to_have_count(0)

        # By keyboard: the Reply button is a real button, then Enter in the composer sends.
        last = message(alice, f"filler {FILLERS - 1}")
        last.get_by_role("button", name="Reply", exact=True).focus()
        expect(last.locator(".actions")).to_have_css("opacity", "1")  # Shown on focus.
        page.keyboard.press("Enter")
        bar = page.locator(".compose-context")
        expect(bar).to_contain_text(f"Replying to carol: filler {FILLERS - 1}")
        expect(composer(alice)).to_be_focused()
        page.keyboard.type("Replying by keyboard")
        page.keyboard.press("Enter")
        expect(bar).to_be_hidden()
        reply = message(alice, "Replying by keyboard")
        expect(reply.locator(".reply-quote")).to_contain_text(f"carol filler {FILLERS - 1}")
        frame = answer_of(chat, "Replying by keyboard")
        assert frame["reply_to"]["excerpt"] == f"filler {FILLERS - 1}"

        # By mouse; Escape cancels a pending reply, the cancel button too.
        hover_action(alice, f"filler {FILLERS - 2}", "Reply")
        expect(bar).to_be_visible()
        composer(alice).press("Escape")
        expect(bar).to_be_hidden()
        hover_action(alice, f"filler {FILLERS - 2}", "Reply")
        bar.get_by_role("button", name="Cancel the reply").click()
        expect(bar).to_be_hidden()
        hover_action(alice, f"filler {FILLERS - 3}", "Reply")
        alice.say("Replying by mouse")
        quote = message(alice, "Replying by mouse").locator(".reply-quote")
        expect(quote).to_contain_text(f"filler {FILLERS - 3}")
        assert answer_of(chat, "Replying by mouse")["reply_to"]["user"] == "carol"

        # A reply to a message in an older page: its quote loads pages until the parent shows.
        post(chat, "Back to the start", reply_to=parent["id"])
        quote = message(alice, "Back to the start").locator(".reply-quote")
        expect(quote).to_contain_text("The very first message")
        quote.click()
        shown = page.locator(f'.message[data-id="{parent["id"]}"]')
        expect(shown).to_be_in_viewport()
        expect(shown).to_have_class(re.compile(r"\bhighlight\b"))
        expect(shown).to_be_focused()

        # The parent deleted: every reply's quote says so.
        change(chat, {"type": "delete", "id": parent["id"]})
        expect(quote).to_contain_text("deleted message")
        expect(shown.locator(".text")).to_have_text("Message deleted")
    no_problems(alice)
    alice.context.close()


def answer_of(chat, text):
    """The next ``message`` frame with ``text`` that ``chat`` receives."""
    while True:
        frame = chat.recv()
        if frame["type"] == "message" and frame["text"] == text:
            return frame


# ---- Reactions --------------------------------------------------------------------------------


def reaction(person, text, emoji):
    return message(person, text).locator(f'.reaction[data-emoji="{emoji}"]')


def test_reactions_from_the_picker_and_any_emoji_toggle_and_count_on_both_pages(people):
    alice, bob = people
    alice.say("React to me")
    expect(message(bob, "React to me")).to_have_count(1)

    # Bob, by mouse: the picker, 👍.
    hover_action(bob, "React to me", "React")
    picker = bob.page.get_by_role("dialog", name="Pick a reaction")
    expect(picker).to_be_visible()
    expect(picker.locator(".picker-emoji")).to_have_count(16)
    picker.get_by_role("button", name="👍").click()
    expect(picker).to_be_hidden()
    for person, mine in ((bob, "true"), (alice, "false")):
        thumbs = reaction(person, "React to me", "👍")
        expect(thumbs).to_have_text("👍 1")
        expect(thumbs).to_have_attribute("aria-pressed", mine)
    expect(reaction(alice, "React to me", "👍")).to_have_attribute("title", "bob reacted")
    expect(reaction(alice, "React to me", "👍")).to_have_accessible_name("👍 1: bob reacted")

    # Alice, by keyboard: the picker's own box takes any emoji; Escape closes, focus returns.
    react = message(alice, "React to me").get_by_role("button", name="React", exact=True)
    react.focus()
    alice.page.keyboard.press("Enter")
    picker = alice.page.get_by_role("dialog", name="Pick a reaction")
    expect(picker).to_be_visible()
    alice.page.keyboard.press("Escape")
    expect(picker).to_be_hidden()
    expect(react).to_be_focused()
    alice.page.keyboard.press("Enter")
    picker.get_by_label("Any emoji").fill("🦄")
    alice.page.keyboard.press("Enter")
    expect(react).to_be_focused()
    for person in people:
        expect(reaction(person, "React to me", "🦄")).to_have_text("🦄 1")

    # Not one emoji: the server says no, shown as errors are.
    alice.page.keyboard.press("Enter")
    picker.get_by_label("Any emoji").fill("not an emoji")
    alice.page.keyboard.press("Enter")
    expect(alice.page.locator("#notice")).to_be_visible()
    expect(message(alice, "React to me").locator(".reaction")).to_have_count(2)

    # Toggling: Alice adds hers to 👍 (2), Bob takes his back (1).
    reaction(alice, "React to me", "👍").click()
    expect(reaction(bob, "React to me", "👍")).to_have_text("👍 2")
    expect(reaction(bob, "React to me", "👍")).to_have_attribute("title", "bob and alice reacted")
    reaction(bob, "React to me", "👍").press("Enter")  # By keyboard; the focus stays on it.
    for person, mine in ((bob, "false"), (alice, "true")):
        expect(reaction(person, "React to me", "👍")).to_have_text("👍 1")
        expect(reaction(person, "React to me", "👍")).to_have_attribute("aria-pressed", mine)
    expect(reaction(bob, "React to me", "👍")).to_be_focused()
    reaction(alice, "React to me", "🦄").click()
    for person in people:
        expect(reaction(person, "React to me", "🦄")).to_have_count(0)
    no_problems(bob)


# ---- Mentions ---------------------------------------------------------------------------------


def test_a_mention_picked_by_keyboard_highlights_badges_and_survives_an_edit(
    app, gunicorn_server, people, make_user
):
    alice, bob = people
    carol, _ = make_user("carol@example.com")
    with chat_socket(app, gunicorn_server, carol):
        pass  # Now in general (but offline): only the members frame names her.
    bob.page.get_by_label("New room").fill("elsewhere")
    bob.page.get_by_role("button", name="Create").click()
    expect(bob.page.locator("#room-title")).to_have_text("#elsewhere")

    box = composer(alice)
    box.press_sequentially("Hi @")
    listbox = alice.page.get_by_role("listbox", name="People to mention")
    expect(listbox.get_by_role("option")).to_have_text(["bob", "carol"])  # Not me.
    expect(box).to_have_attribute("aria-activedescendant", "mention-option-0")
    box.press("ArrowDown")
    expect(listbox.get_by_role("option", selected=True)).to_have_text("carol")
    box.press("ArrowUp")
    expect(listbox.get_by_role("option", selected=True)).to_have_text("bob")
    box.press("Escape")  # Closes the list only.
    expect(listbox).to_be_hidden()
    box.press_sequentially("b")  # "@b": the list again, filtered.
    expect(listbox.get_by_role("option")).to_have_text(["bob"])
    box.press("Enter")  # Picks; does not send.
    expect(box).to_have_value("Hi @bob ")
    box.press_sequentially("look at this")
    box.press("Enter")

    # Bob was elsewhere: a mention badge beside the unread count, gone once he reads.
    general = bob.page.locator('.room-button[data-room="general"]')
    expect(general.locator(".mention-badge")).to_have_text("@1")
    expect(general).to_contain_text("1 unread mention")
    bob_id = user_id(bob)
    with app.app_context():  # Stored (Bob was told of it): as the server's mention syntax.
        stored = db.session.scalars(select(Message.text).order_by(Message.id.desc())).first()
    assert stored == f"Hi <@{bob_id}> look at this"
    general.click()
    expect(general.locator(".badge")).to_have_count(0)
    mentioned = message(bob, "look at this")
    expect(mentioned).to_have_class(re.compile(r"\bmentions-me\b"))
    span = mentioned.locator(".text .mention")
    expect(span).to_have_text("@bob")
    expect(span).to_have_attribute("data-user-id", str(bob_id))
    expect(message(alice, "look at this")).not_to_have_class(re.compile(r"\bmentions-me\b"))

    # Editing shows "@bob", and sends "<@id>" again.
    confirmed(alice)
    box.press("ArrowUp")
    expect(box).to_have_value("Hi @bob look at this")
    box.press("End")
    box.press_sequentially(" again")
    box.press("Enter")
    edited = message(bob, "look at this again")
    expect(edited.locator("time.edited")).to_have_count(1)
    expect(edited.locator(".text .mention")).to_have_text("@bob")
    expect(edited).to_have_class(re.compile(r"\bmentions-me\b"))
    no_problems(alice, bob)


# ---- Resuming ---------------------------------------------------------------------------------

RECONNECT_TIMEOUT_MS = 20_000


def test_changes_missed_while_away_come_with_the_resume(app, people, gunicorn_server, make_user):
    alice, bob = people
    carol, _ = make_user("carol@example.com")
    with chat_socket(app, gunicorn_server, carol) as chat:
        edited = post(chat, "Edit me while Bob is away")
        deleted = post(chat, "Delete me while Bob is away")
        liked = post(chat, "React to me while Bob is away")
    expect(message(bob, "React to me while Bob is away")).to_have_count(1)

    # Bob's browser goes offline (the server restarts under him): he cannot reconnect.
    bob.context.set_offline(True)
    gunicorn_server.kill()
    gunicorn_server.start()
    alice.expect_connected(RECONNECT_TIMEOUT_MS)
    with chat_socket(app, gunicorn_server, carol) as chat:
        change(chat, {"type": "edit", "id": edited["id"], "text": "Edited while Bob was away"})
        change(chat, {"type": "delete", "id": deleted["id"]})
        change(chat, {"type": "react", "id": liked["id"], "emoji": "🎉"})
    expect(reaction(alice, "React to me while Bob is away", "🎉")).to_have_text("🎉 1")  # Live.
    expect(message(bob, "Edit me while Bob is away")).to_have_count(1)  # Bob: as he left it.

    bob.context.set_offline(False)
    bob.expect_connected(RECONNECT_TIMEOUT_MS)
    expect(message(bob, "Edited while Bob was away").locator("time.edited")).to_have_count(1)
    expect(bob.page.locator(f'.message[data-id="{deleted["id"]}"]')).to_have_class(
        re.compile(r"\bdeleted\b")
    )
    expect(reaction(bob, "React to me while Bob is away", "🎉")).to_have_text("🎉 1")
    # The resume left Bob where live changes start: the next one comes once.
    with chat_socket(app, gunicorn_server, carol) as chat:
        change(chat, {"type": "react", "id": liked["id"], "emoji": "👀"})
    expect(reaction(bob, "React to me while Bob is away", "👀")).to_have_text("👀 1")
    expect(message(bob, "React to me while Bob is away").locator(".reaction")).to_have_count(2)


def test_messages_missed_in_another_room_are_counted_once_after_the_resume(
    app, people, gunicorn_server, make_user
):
    alice, bob = people
    carol, _ = make_user("carol@example.com")
    bob.page.get_by_label("New room").fill("elsewhere")
    bob.page.get_by_role("button", name="Create").click()
    expect(bob.page.locator("#room-title")).to_have_text("#elsewhere")  # Bob reads another room.

    bob.context.set_offline(True)
    gunicorn_server.kill()
    gunicorn_server.start()
    alice.expect_connected(RECONNECT_TIMEOUT_MS)
    with chat_socket(app, gunicorn_server, carol) as chat:
        for n in range(3):
            post(chat, f"While Bob is elsewhere {n}")
    bob.context.set_offline(False)
    bob.expect_connected(RECONNECT_TIMEOUT_MS)
    # The hello counted the three; the replay of the same three must not count them again.
    general = bob.page.locator(".room-button").filter(has_text="#general")
    expect(general).to_contain_text("3 unread messages")
    with chat_socket(app, gunicorn_server, carol) as chat:
        post(chat, "A fourth, live")
    expect(general).to_contain_text("4 unread messages")


# ---- Accessibility ----------------------------------------------------------------------------


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("locale", ["en-US", "fr-FR"])
def test_everything_at_once_passes_axe(app, browser, gunicorn_server, make_user, theme, locale):
    reader = signed_up_in(browser, gunicorn_server.url, "reader@example.com", theme, locale)
    context, page = reader.context, reader.page
    me = user_id(reader)
    page.locator("#room-name").fill("side")
    page.locator("#create-room button").click()
    expect(page.locator("#room-title")).to_have_text("#side")
    page.locator('.room-button[data-room="general"]').click()
    writer, _ = make_user("writer@example.com")
    with chat_socket(app, gunicorn_server, writer) as chat:
        chat.send({"type": "join_room", "room": "side"})
        chat.send({"type": "message", "room": "side", "text": f"<@{me}> over here"})
        first = post(chat, "A message, then edited")
        change(chat, {"type": "edit", "id": first["id"], "text": "A message, edited"})
        gone = post(chat, "A message, then deleted")
        post(chat, "A reply to the edited one", reply_to=first["id"])
        post(chat, "A reply to the deleted one", reply_to=gone["id"])
        change(chat, {"type": "delete", "id": gone["id"]})
        liked = post(chat, f"Hello <@{me}>, **look**")
        change(chat, {"type": "react", "id": liked["id"], "emoji": "🎉"})
        change(chat, {"type": "react", "id": liked["id"], "emoji": "👍"})
    expect(message(reader, "look").locator(".reaction")).to_have_count(2)
    expect(page.locator(f"{VISIBLE_LIST} > .message.deleted")).to_have_count(1)
    page.locator("#message-input").fill("One of mine")
    page.locator("#message-input").press("Enter")
    mine = message(reader, "One of mine")
    expect(mine).to_have_attribute("data-id", re.compile(r"\d"))
    reaction(reader, "look", "🎉").click()
    expect(reaction(reader, "look", "🎉")).to_have_attribute("aria-pressed", "true")
    mine.get_by_role("button").first.focus()  # Its toolbar shown.
    # Replying to mine, the picker open on it, and @ completion open in the composer.
    mine.locator("[data-action=reply]").press("Enter")
    mine.locator("[data-action=react]").press("Enter")
    expect(page.locator(".picker")).to_be_visible()
    page.locator("#message-input").focus()
    page.locator("#message-input").press_sequentially("@w")
    expect(page.get_by_role("listbox")).to_be_visible()
    expect(page.locator(".compose-context")).to_be_visible()
    expect(page.locator(".picker")).to_be_visible()
    expect(page.locator(".mention-badge")).to_have_text("@1")  # In #side.
    assert serious_violations(page) == []
    reader.screenshot(f"messages-{theme}-{locale}")
    # The delete confirmation too.
    page.keyboard.press("Escape")
    mine.hover()
    mine.locator("[data-action=delete]").click()
    expect(page.locator("dialog.confirm")).to_be_visible()
    assert serious_violations(page) == []
    reader.screenshot(f"messages-delete-{theme}-{locale}")
    assert reader.problems == []
    context.close()
