"""The rooms on the chat page, in Chromium: private rooms, inviting from the room's menu, an
invitation link that lands in its room, topics and renames seen live by others, archiving that
takes the composer away and gives it back; axe-core with the menu open and in an archived room,
in both languages and themes. Every wait is on what a page shows."""

import re

import pytest
from playwright.sync_api import expect

from helpers import VISIBLE_LIST, Person, SocketRoute, serious_violations, signed_up_in

pytestmark = pytest.mark.browser

PRIVATE_KEY = re.compile(r"^p:[0-9a-f]{12}$")


@pytest.fixture
def people(browser, gunicorn_server, make_user):
    """``people("alice", …)``: each registered in a browser context of their own. The server's
    first account is someone else's, so that they are plain members: rooms they manage, they
    manage as their creators."""
    make_user("root@example.com")
    made = []

    def register(*names):
        for name in names:
            person = Person(browser, gunicorn_server.url)
            person.register(f"{name}@example.com")
            made.append(person)
        return made[-len(names) :]

    yield register
    for person in made:
        person.context.close()


def create_room(person, name, private=False):
    page = person.page
    page.get_by_label("New room").fill(name)
    if private:
        page.get_by_label("Private", exact=True).check()
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator("#room-title")).to_contain_text(f"#{name}")


def join_room(person, title):
    person.page.get_by_role("button", name=f"Join #{title}").click()
    expect(person.page.locator("#room-title")).to_have_text(f"#{title}")


def room_button(person, title):
    return person.page.locator("#room-list .room-button").filter(has_text=f"#{title}")


def open_menu_item(person, name):
    page = person.page
    page.get_by_role("button", name="Room menu").click()
    page.get_by_role("menuitem", name=name, exact=True).click()
    return page.get_by_role("dialog")


def menu_items(person):
    """The names of the items the room menu offers, the menu open."""
    page = person.page
    page.get_by_role("button", name="Room menu").click()
    expect(page.get_by_role("menu")).to_be_visible()
    names = page.get_by_role("menuitem").all_inner_texts()
    page.keyboard.press("Escape")
    expect(page.get_by_role("menu")).to_be_hidden()
    return names


def test_a_private_room_is_hidden_until_its_creator_invites_someone(people):
    alice, bob = people("alice", "bob")
    create_room(alice, "secret", private=True)
    expect(alice.page.locator("#room-title")).to_have_text("Private room #secret")
    mark = room_button(alice, "secret")
    expect(mark).to_have_accessible_name(re.compile("^Private room #secret"))
    key = mark.get_attribute("data-room")
    assert PRIVATE_KEY.match(key), key
    # A public room made after it reaches bob's list of rooms to join: the private one, made
    # first, would have come before it. It did not.
    create_room(alice, "open")
    expect(bob.page.get_by_role("button", name="Join #open")).to_be_visible()
    expect(bob.page.locator("#public-list")).not_to_contain_text("secret")
    expect(room_button(bob, "secret")).to_have_count(0)

    room_button(alice, "secret").click()
    dialog = open_menu_item(alice, "Invite people")
    expect(dialog.get_by_role("heading")).to_have_text("Invite people to #secret")
    dialog.get_by_label("Filter by name").fill("bo")
    expect(dialog.get_by_role("button", name="Invite alice")).to_have_count(0)  # Already in it.
    dialog.get_by_role("button", name="Invite bob").click()
    expect(dialog.get_by_role("status")).to_have_text("bob is in the room now.")
    expect(dialog.get_by_role("button", name="Invite bob")).to_have_count(0)
    dialog.get_by_role("button", name="Close").click()
    expect(alice.page.get_by_role("button", name="Room menu")).to_be_focused()

    # Bob's open page has it at once, with who brought him in; he stays where he was.
    expect(bob.page.locator("#notice")).to_have_text("alice added you to #secret")
    expect(bob.page.locator("#room-title")).to_have_text("#general")
    room_button(bob, "secret").click()
    expect(bob.page.locator("#room-title")).to_have_text("Private room #secret")
    bob.say("Only us here")
    expect(alice.messages("Only us here")).to_have_count(1)

    # Its creator takes him out again, from the members list; his page says who did.
    dialog = open_menu_item(alice, "Members")
    expect(dialog.get_by_role("listitem")).to_have_text(
        [re.compile(r"^alice \(you\)$"), re.compile("^bob")]
    )
    expect(dialog.get_by_role("button", name="Remove alice from the room")).to_have_count(0)
    dialog.get_by_role("button", name="Remove bob from the room").click()
    expect(dialog.get_by_role("status")).to_have_text("bob is no longer in the room.")
    expect(dialog.get_by_role("listitem")).to_have_count(1)
    expect(bob.page.locator("#notice")).to_have_text("alice removed you from #secret")
    expect(bob.page.locator("#room-title")).to_have_text("#general")
    expect(room_button(bob, "secret")).to_have_count(0)
    assert alice.problems == [] and bob.problems == []  # noqa: PT018 - both pages at once


def test_an_invitation_link_brings_a_signed_in_person_into_the_room(people, gunicorn_server):
    alice, carol = people("alice", "carol")
    create_room(alice, "hideout", private=True)
    key = room_button(alice, "hideout").get_attribute("data-room")
    dialog = open_menu_item(alice, "Invitation link")
    dialog.get_by_label("Uses (empty: any number)").fill("1")
    dialog.get_by_role("button", name="Make a link").click()
    field = dialog.get_by_label("Link", exact=True)
    expect(field).to_have_value(re.compile(rf"^{re.escape(gunicorn_server.url)}/join/\S+$"))
    expect(dialog.get_by_role("status")).to_have_text("Link made (never expires, 1 use).")
    link = field.input_value()
    dialog.get_by_role("button", name="Close").click()
    # Shown once: opened again, the dialog has no link until a new one is made.
    dialog = open_menu_item(alice, "Invitation link")
    expect(dialog.get_by_label("Link", exact=True)).to_be_hidden()
    dialog.get_by_role("button", name="Close").click()

    carol.page.goto(link)  # The server joins her and sends her to /?room=<key>.
    carol.expect_connected()
    expect(carol.page.locator("#room-title")).to_have_text("Private room #hideout")
    assert carol.page.url == f"{gunicorn_server.url}/"  # The ?room= is spent.
    expect(room_button(carol, "hideout")).to_have_attribute("data-room", key)
    carol.say("Thanks for the link")
    expect(alice.messages("Thanks for the link")).to_have_count(1)
    # A restart: both pages resume the room by its opaque key and go on in it.
    gunicorn_server.kill()
    expect(carol.page.locator("#status")).to_have_attribute("data-state", "reconnecting")
    gunicorn_server.start()
    alice.expect_connected()
    carol.expect_connected()
    expect(carol.page.locator("#room-title")).to_have_text("Private room #hideout")
    carol.say("Still here after a restart")
    expect(alice.messages("Still here after a restart")).to_have_count(1)
    expect(carol.messages("Thanks for the link")).to_have_count(1)  # Resumed, not doubled.
    assert alice.problems == [] and carol.problems == []  # noqa: PT018 - both pages at once


def test_a_topic_and_a_new_name_reach_everyone_at_once(people):
    alice, bob, carol = people("alice", "bob", "carol")
    create_room(alice, "plans")
    join_room(bob, "plans")
    dialog = open_menu_item(alice, "Set topic")
    dialog.get_by_label("Topic").fill("Q3 <b>roadmap</b> & more")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    for person in (alice, bob):
        topic = person.page.locator("#room-topic")
        expect(topic).to_have_text("Q3 <b>roadmap</b> & more")  # Text, never markup.
        expect(topic.locator("b")).to_have_count(0)

    dialog = open_menu_item(alice, "Rename")
    expect(dialog.get_by_label("Name", exact=True)).to_have_value("plans")
    dialog.get_by_label("Name", exact=True).fill("Roadmap")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    for person in (alice, bob):
        expect(person.page.locator("#room-title")).to_have_text("#Roadmap")
        expect(room_button(person, "Roadmap")).to_have_count(1)
        expect(person.page.locator(f"{VISIBLE_LIST}")).to_have_attribute(
            "aria-label", "Messages in #Roadmap"
        )
    expect(carol.page.get_by_role("button", name="Join #Roadmap")).to_be_visible()

    # Bob is neither its creator nor an administrator: a topic, yes; a name, no.
    assert menu_items(bob) == [
        "Notifications",
        "Set topic",
        "Invite people",
        "Invitation link",
        "Members",
    ]
    assert "Rename" in menu_items(alice)
    # A name another room has is refused, in the dialog, which stays open.
    dialog = open_menu_item(alice, "Rename")
    dialog.get_by_label("Name", exact=True).fill("General")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.get_by_role("status")).to_contain_text("already exists")
    dialog.get_by_role("button", name="Cancel").click()
    expect(alice.page.locator("#room-title")).to_have_text("#Roadmap")
    problems = alice.problems + bob.problems + carol.problems
    assert problems == []


def test_an_archived_room_is_read_only_until_it_is_unarchived(people, browser, gunicorn_server):
    alice, carol = people("alice", "carol")
    bob = Person(browser, gunicorn_server.url)
    route = SocketRoute(bob.page)  # To hold back, at the end, one frame from his page.
    bob.register("bob@example.com")
    create_room(alice, "old")
    join_room(bob, "old")
    expect(carol.page.get_by_role("button", name="Join #old")).to_be_visible()
    bob.say("Said before the archive")
    message = alice.page.locator(f"{VISIBLE_LIST} > .message").filter(has_text="Said before")
    expect(message).to_have_count(1)
    box = bob.page.get_by_role("textbox", name="Message")
    box.fill("A draft that must survive")

    open_menu_item(alice, "Archive")
    for person in (alice, bob):
        notice = person.page.locator("#archived-notice")
        expect(notice).to_have_text(
            "This room is archived: it can be read and searched, not changed."
        )
        expect(person.page.get_by_role("textbox", name="Message")).to_be_hidden()
        expect(room_button(person, "old")).to_contain_text("archived")
        expect(person.messages("Said before the archive")).to_have_count(1)  # Still readable.
    message.hover()
    expect(message.get_by_role("button", name="Reply", exact=True)).to_have_count(0)
    # It takes nobody new: carol's list of rooms to join no longer offers it.
    expect(carol.page.get_by_role("button", name="Join #old")).to_have_count(0)
    assert menu_items(bob) == ["Notifications", "Members"]
    assert menu_items(alice) == ["Notifications", "Members", "Unarchive"]
    # Still searchable, from the header.
    bob.page.get_by_role("searchbox", name="Search messages").fill("archive")
    bob.page.get_by_role("searchbox", name="Search messages").press("Enter")
    expect(bob.page.locator("#search-results .search-result")).to_have_count(1)
    bob.page.get_by_role("button", name="Close", exact=True).click()

    open_menu_item(alice, "Unarchive")
    expect(carol.page.get_by_role("button", name="Join #old")).to_be_visible()
    expect(box).to_be_visible()
    expect(box).to_have_value("A draft that must survive")  # Nothing typed is lost.
    expect(bob.page.locator("#archived-notice")).to_be_hidden()
    box.press("Enter")
    expect(alice.messages("A draft that must survive")).to_have_count(1)
    message.hover()
    expect(message.get_by_role("button", name="Reply", exact=True)).to_be_visible()

    # Archived again while his page has not heard of it yet (the frame held back): what he
    # sends is refused like any refusal, and stays on his screen, marked as not sent.
    route.drop_answer = lambda frame: frame["type"] == "room_updated" and frame["archived"]
    open_menu_item(alice, "Archive")
    expect(alice.page.locator("#archived-notice")).to_be_visible()
    bob.say("Too late for this one")
    expect(bob.page.locator("#notice")).to_have_text(
        "This room is archived: it can be read and searched, not changed."
    )
    failed = bob.page.locator(f"{VISIBLE_LIST} > .message.failed")
    expect(failed).to_contain_text("Too late for this one")
    expect(alice.messages("Too late for this one")).to_have_count(0)
    assert alice.problems + bob.problems + carol.problems == []
    bob.context.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("locale", ["en-US", "fr-FR"])
def test_the_room_menu_and_an_archived_room_pass_axe(browser, gunicorn_server, theme, locale):
    person = signed_up_in(browser, gunicorn_server.url, "axe@example.com", theme, locale)
    page = person.page  # By id: the labels are in French in half of the runs.
    page.locator("#room-name").fill("quiet")
    page.locator("#room-private").check()
    page.locator("#create-room button[type=submit]").click()
    expect(page.locator("#room-title")).to_contain_text("#quiet")
    page.locator("#room-menu-button").click()
    expect(page.locator("#room-menu")).to_be_visible()
    items = page.locator("#room-menu [role=menuitem]:visible")
    expect(items.first).to_be_focused()
    page.keyboard.press("ArrowUp")  # Round to the last item, and back.
    expect(items.last).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(items.first).to_be_focused()
    page.keyboard.press("End")
    expect(page.locator('#room-menu [data-action="archive"]')).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#room-menu")).to_be_hidden()
    expect(page.locator("#room-menu-button")).to_be_focused()
    page.keyboard.press("ArrowDown")  # Opens it again, on its first item.
    expect(items.first).to_be_focused()
    assert serious_violations(page) == [], "the room menu"
    person.screenshot(f"room-menu-{theme}-{locale}")
    page.locator('#room-menu [data-action="invite"]').click()
    expect(page.locator("#invite-dialog")).to_be_visible()
    expect(page.locator("#invite-empty")).to_be_visible()  # Nobody else has an account.
    expect(page.locator("#invite-status")).to_have_text("")  # The lists came.
    assert serious_violations(page) == [], "the invitation dialog"
    person.screenshot(f"room-invite-{theme}-{locale}")
    page.keyboard.press("Escape")
    expect(page.locator("#invite-dialog")).to_be_hidden()
    page.locator("#room-menu-button").click()
    page.locator('#room-menu [data-action="archive"]').click()
    expect(page.locator("#archived-notice")).to_be_visible()
    assert serious_violations(page) == [], "an archived room"
    person.screenshot(f"room-archived-{theme}-{locale}")
    assert person.problems == []
    person.context.close()


def test_leaving_a_private_room_asks_first(people):
    (alice,) = people("alice")
    create_room(alice, "hideout", private=True)
    page = alice.page
    page.get_by_role("button", name="Leave room").click()
    question = page.get_by_role("dialog", name="Leave #hideout?")
    expect(question).to_contain_text("only a new invitation brings you back")
    question.get_by_role("button", name="Cancel").click()
    expect(question).to_be_hidden()
    expect(page.get_by_role("button", name="Leave room")).to_be_focused()
    expect(room_button(alice, "hideout")).to_have_count(1)  # Still in it.
    page.get_by_role("button", name="Leave room").click()
    question.get_by_role("button", name="Leave", exact=True).click()
    expect(room_button(alice, "hideout")).to_have_count(0)
    expect(page.locator("#room-title")).to_have_text("#general")
    # A public room is left at once: it can be joined again.
    create_room(alice, "open")
    page.get_by_role("button", name="Leave room").click()
    expect(room_button(alice, "open")).to_have_count(0)
    assert alice.problems == []
