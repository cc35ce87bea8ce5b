"""Notification levels (issue 21): per room and person, all / mentions and direct messages /
nothing; stored, told to every tab, in every greeting. Sockets over real WebSockets; the page's
use of them (notifications, a muted room's badge) in Chromium."""

import pytest
from playwright.sync_api import expect

from helpers import Person

MISSING = "p:000000000000"


def until(chat, kind):
    while (frame := chat.recv())["type"] != kind:
        pass
    return frame


def room_entry(hello, key):
    return next(entry for entry in hello["rooms"] if entry["room"] == key)


@pytest.mark.database
def test_levels_are_stored_told_to_every_tab_and_greeted(ws_connect, alice, bob):
    chat, other_tab, bobs = ws_connect(alice), ws_connect(alice), ws_connect(bob)
    assert room_entry(chat.hello, "general")["notify"] == "mentions"  # The default.
    chat.send({"type": "open_dm", "user_id": bob})
    direct = until(chat, "room")
    assert direct["notify"] == "all"  # A direct room's default: every message.
    chat.send({"type": "notify", "room": "general", "level": "nothing", "client_id": "n"})
    told = {"type": "notify", "room": "general", "level": "nothing", "client_id": "n"}
    assert until(chat, "notify") == told
    assert until(other_tab, "notify") == told
    later = ws_connect(alice)
    assert room_entry(later.hello, "general")["notify"] == "nothing"
    assert room_entry(later.hello, direct["room"])["notify"] == "all"
    assert room_entry(bobs.hello, "general")["notify"] == "mentions"  # Per person.
    bobs.send({"type": "message", "text": "counted all the same"})
    until(bobs, "message")
    assert room_entry(ws_connect(alice).hello, "general")["unread"] == 1  # Muted, still counted.
    for frame, code in [
        ({"type": "notify", "room": "general", "level": "loud"}, "bad_request"),
        ({"type": "notify", "room": "general"}, "bad_request"),
        ({"type": "notify", "room": MISSING, "level": "all"}, "forbidden"),
        ({"type": "notify", "room": "nowhere", "level": "all"}, "forbidden"),
    ]:
        chat.send(frame)
        assert until(chat, "error")["code"] == code, frame


# ---- The page ------------------------------------------------------------------------------

# Notifications recorded instead of shown, and a tab that can be made hidden.
RECORD_NOTIFICATIONS = """
window.__shown = [];
window.__hidden = false;
Object.defineProperty(document, "hidden", { get: () => window.__hidden });
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__shown.push({ title, body: options.body }); }
  addEventListener() {}
  close() {}
};
"""


def choose_level(person, label):
    page = person.page
    page.get_by_role("button", name="Room menu").click()
    page.get_by_role("menuitem", name="Notifications").click()
    dialog = page.get_by_role("dialog", name="Notifications")
    dialog.get_by_label(label).check()
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()


def shown(person):
    return person.page.evaluate("window.__shown.map(n => n.body)")


@pytest.mark.browser
def test_the_page_tells_as_much_as_each_rooms_level_wants(browser, gunicorn_server):
    alice, bob = Person(browser, gunicorn_server.url), Person(browser, gunicorn_server.url)
    bob.context.add_init_script(RECORD_NOTIFICATIONS)
    alice.register("alice@example.com")
    bob.register("bob@example.com")
    bob.page.evaluate("window.__hidden = true")
    alice.say("just chatting")
    expect(bob.messages("just chatting")).to_have_count(1)
    alice.say("<@2> look")  # Bob, the second account: a mention, as the protocol writes it.
    expect(bob.messages("@bob look")).to_have_count(1)
    assert shown(bob) == ["@bob look"]  # The default: mentions, not every message.
    bob.page.evaluate("window.__hidden = false")
    choose_level(bob, "All messages")
    bob.page.evaluate("window.__hidden = true")
    alice.say("now everything")
    expect(bob.messages("now everything")).to_have_count(1)
    assert shown(bob) == ["@bob look", "now everything"]
    # Muted: nothing told, no badge, but the unread count is kept.
    bob.page.evaluate("window.__hidden = false")
    choose_level(bob, "Nothing: muted (no badge; the unread count is kept)")
    general = bob.page.locator(".room-button").filter(has_text="#general")
    expect(general.locator(".muted-mark")).to_have_count(1)
    bob.page.get_by_label("New room").fill("elsewhere")
    bob.page.get_by_role("button", name="Create").click()
    expect(bob.page.locator("#room-title")).to_have_text("#elsewhere")
    bob.page.evaluate("window.__hidden = true")
    alice.say("nobody hears this")
    # Bob's page has it (in general's list, not on screen), and still no badge.
    arrived = bob.page.locator(".messages .message .text").filter(has_text="nobody hears this")
    expect(arrived).to_have_count(1)
    expect(general.locator(".badge")).to_have_count(0)
    bob.page.evaluate("window.__hidden = false")
    general.click()
    expect(bob.messages("nobody hears this")).to_have_count(1)
    assert shown(bob) == ["@bob look", "now everything"]
    assert alice.problems == []
    assert bob.problems == []
