"""Avatars and grouped messages on the page, in Chromium against gunicorn.

As in test_messages_page: people in their own browser contexts, others posting through a real
WebSocket; times set in the database before a page loads them. Every wait is on what a page
shows (Playwright's expect), never a sleep.
"""

import re
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from playwright.sync_api import expect
from sqlalchemy import update

from extensions import db
from helpers import (
    VISIBLE_LIST,
    Person,
    SocketRoute,
    change,
    chat_socket,
    post,
    serious_violations,
    signed_up_in,
)
from models import Message

FILLERS = 60  # More than a history page (50): the oldest are not loaded at first.
CONTINUED = re.compile(r"\bcontinued\b")

pytestmark = pytest.mark.browser


@pytest.fixture
def app_config(app_config):
    """Room for a test's burst of messages from one socket."""
    app_config["CHAT_MESSAGE_BURST"] = 100
    app_config["CHAT_FRAME_BURST"] = 200
    return app_config


# ---- Helpers ----------------------------------------------------------------------------------


def backdate(app, times):
    """Store ``{message id: minutes ago}`` as when those messages were posted."""
    now = datetime.now(UTC)
    with app.app_context():
        for message_id, minutes in times.items():
            when = now - timedelta(minutes=minutes)
            db.session.execute(
                update(Message).where(Message.id == message_id).values(created_at=when)
            )
        db.session.commit()


def items(person):
    return person.page.locator(f"{VISIBLE_LIST} > .message")


def message(person, text):
    """The message element whose own text (not a reply's quote of it) has ``text``."""
    page = person.page
    return items(person).filter(has=page.locator(":scope > .text", has_text=text))


def expect_groups(person, pattern):
    """``pattern``: one letter per message shown, in order: H a group's head, c continued."""
    classes = [
        re.compile(r"\bcontinued\b") if p == "c" else re.compile(r"^(?!.*\bcontinued\b)")
        for p in pattern
    ]
    expect(items(person)).to_have_class(classes)


def user_id(person):
    return int(person.page.locator("#chat").get_attribute("data-user-id"))


def no_problems(*persons):
    for person in persons:
        assert person.problems == []


@pytest.fixture
def people(browser, gunicorn_server):
    """Alice and Bob, each in their own browser context, signed up."""
    alice, bob = Person(browser, gunicorn_server.url), Person(browser, gunicorn_server.url)
    alice.register("alice@example.com")
    bob.register("bob@example.com")
    yield alice, bob
    alice.context.close()
    bob.context.close()


# ---- Avatars ----------------------------------------------------------------------------------


def test_initials_on_a_colour_that_follows_the_person_from_page_to_page(people):
    alice, bob = people
    alice.say("Hello from Alice")
    bob.say("Hello from Bob")
    for person in people:
        expect(message(person, "Hello from Bob")).to_have_count(1)
    colours = {}
    for person in people:
        for name, text, initials in (
            ("alice", "Hello from Alice", "AL"),
            ("bob", "Hello from Bob", "BO"),
        ):
            avatar = message(person, text).locator(":scope > .avatar")
            expect(avatar).to_have_text(initials)
            expect(avatar).to_have_attribute("aria-hidden", "true")
            expect(avatar).to_have_css("width", "36px")
            expect(avatar).to_have_css("border-radius", "50%")
            seen = (
                avatar.get_attribute("class"),
                avatar.evaluate("e => getComputedStyle(e).backgroundColor"),
            )
            assert colours.setdefault(name, seen) == seen, (person, name)  # The same on both pages.
    assert colours["alice"] != colours["bob"]
    # The online list: a small one before each name, the same colour.
    for person in people:
        online = person.page.locator("#online li")
        expect(online.locator(".person-name")).to_have_text(["alice", "bob"])
        expect(online.locator(".avatar")).to_have_text(["AL", "BO"])
        expect(online.locator(".avatar").first).to_have_css("width", "24px")
        expect(online.locator(".avatar").first).to_have_class(colours["alice"][0])
    no_problems(alice, bob)


def test_initials_keep_whole_letters_and_emoji_and_a_broken_picture_falls_back(people):
    alice, _ = people
    results = alice.page.evaluate(
        """async () => {
            const { avatarElement, initialsOf } = await import("/static/js/avatars.js");
            const names = ["jean.dupont", "élodie", "👩🏽‍💻 dev", "ǆemal", "x", "", "anne-marie_b"];
            const initials = names.map((name) => initialsOf(name));
            const picture = avatarElement(3, "zoé", "/no/such/picture.png");
            document.body.append(picture);
            await new Promise((done) => setTimeout(done, 0));
            return { initials, tag: picture.tagName, alt: picture.alt, width: picture.width };
        }"""
    )
    assert results["initials"] == ["JD", "ÉL", "👩🏽‍💻D", "ǄE", "X", "?", "AM"]
    assert (results["tag"], results["alt"], results["width"]) == ("IMG", "", 36)
    # The picture cannot load: the initials take its place, with its colour.
    fallback = alice.page.locator("body > span.avatar")
    expect(fallback).to_have_text("ZO")
    expect(fallback).to_have_class("avatar avatar-3")
    expect(alice.page.locator("body > img.avatar")).to_have_count(0)


# ---- Grouping ---------------------------------------------------------------------------------


def test_quick_messages_share_a_header_that_others_and_time_break(
    app, browser, gunicorn_server, make_user
):
    carol, _ = make_user("carol@example.com")
    dave, _ = make_user("dave@example.com")
    with chat_socket(app, gunicorn_server, carol) as chat:
        c1, c2, c3 = (post(chat, f"Carol {n}") for n in (1, 2, 3))
    with chat_socket(app, gunicorn_server, dave) as chat:
        d1 = post(chat, "Dave 1")
    with chat_socket(app, gunicorn_server, carol) as chat:
        c4, c5 = post(chat, "Carol 4"), post(chat, "Carol 5")
    # Carol 5 comes 14 minutes after Carol 4: a header of its own.
    minutes = {c1["id"]: 20, c2["id"]: 19, c3["id"]: 18, d1["id"]: 17, c4["id"]: 16, c5["id"]: 2}
    backdate(app, minutes)

    alice = Person(browser, gunicorn_server.url)
    route = SocketRoute(alice.page)
    alice.register("alice@example.com")
    expect(items(alice)).to_have_count(6)
    expect_groups(alice, "HccHHH")
    with chat_socket(app, gunicorn_server, carol) as chat:
        post(chat, "Carol 6, live")  # Within 5 minutes of Carol 5.
    expect_groups(alice, "HccHHHc")

    # A continued message: no avatar, no author line to see; hovering shows its time.
    second = message(alice, "Carol 2")
    expect(second.locator(":scope > .avatar")).to_be_hidden()
    expect(second.locator(".author")).to_have_css("position", "absolute")
    expect(second.locator(".gutter-time")).to_be_hidden()
    second.hover()
    expect(second.locator(".gutter-time")).to_be_visible()
    expect(second.locator(".gutter-time")).to_have_text(re.compile(r"\d"))
    # Screen readers still hear who wrote it, and when; not the initials.
    spoken = second.aria_snapshot()
    assert "carol" in spoken, spoken
    assert "Carol 2" in spoken, spoken
    assert "CA" not in spoken, spoken
    assert re.search(r"\d\d:\d\d", spoken), spoken
    expect(message(alice, "Carol 1").locator(".author")).to_be_visible()

    # Mine: a head, then continued; a pending one (never confirmed here) continues too.
    alice.say("Mine 1")
    expect(message(alice, "Mine 1")).to_have_attribute("data-id", re.compile(r"\d"))
    route.drop_sent = lambda frame: frame.get("text") == "Mine 2, pending"
    alice.say("Mine 2, pending")
    expect(message(alice, "Mine 2, pending")).to_have_class(re.compile(r"\bpending\b"))
    expect_groups(alice, "HccHHHcHc")
    own = message(alice, "Mine 2, pending")
    box, bubble = own.bounding_box(), message(alice, "Mine 1").bounding_box()
    assert abs(box["x"] + box["width"] - (bubble["x"] + bubble["width"])) < 1  # Aligned right.
    no_problems(alice)
    alice.context.close()


def test_older_pages_join_the_group_at_their_boundary(app, browser, gunicorn_server, make_user):
    carol, _ = make_user("carol@example.com")
    dave, _ = make_user("dave@example.com")
    with chat_socket(app, gunicorn_server, dave) as chat:
        post(chat, "Dave before it all")
    with chat_socket(app, gunicorn_server, carol) as chat:
        for n in range(FILLERS):
            post(chat, f"filler {n}")
    alice = Person(browser, gunicorn_server.url)
    alice.register("alice@example.com")
    first_shown = message(alice, f"filler {FILLERS - 50}")
    expect(first_shown).to_have_count(1)
    expect(message(alice, "filler 0")).to_have_count(0)
    expect(first_shown).not_to_have_class(CONTINUED)  # Nothing above it yet.
    expect(items(alice)).to_have_count(50)
    expect_groups(alice, "H" + "c" * 49)

    alice.page.locator("#load-older").click()
    expect(items(alice)).to_have_count(FILLERS + 1)
    expect(first_shown).to_have_class(CONTINUED)  # Now it follows the page above.
    expect_groups(alice, "HH" + "c" * (FILLERS - 1))
    no_problems(alice)
    alice.context.close()


def test_edits_reactions_replies_and_deletions_keep_the_groups(
    app, browser, gunicorn_server, make_user
):
    carol, _ = make_user("carol@example.com")
    alice = Person(browser, gunicorn_server.url)
    alice.register("alice@example.com")
    with chat_socket(app, gunicorn_server, carol) as chat:
        first, second, third = (post(chat, f"Carol {n}") for n in (1, 2, 3))
        expect_groups(alice, "Hcc")
        change(chat, {"type": "edit", "id": second["id"], "text": "Carol 2, edited"})
        expect(message(alice, "Carol 2, edited").locator("time.edited")).to_be_visible()
        change(chat, {"type": "react", "id": third["id"], "emoji": "🎉"})
        expect(message(alice, "Carol 3").locator(".reaction")).to_have_count(1)
        expect_groups(alice, "Hcc")
        post(chat, "Carol 4, a reply", reply_to=first["id"])
        expect(message(alice, "Carol 4, a reply").locator(".reply-quote")).to_contain_text(
            "Carol 1"
        )
        expect_groups(alice, "Hccc")  # A reply still groups: its quote says what it answers.
        change(chat, {"type": "delete", "id": second["id"]})
        expect(items(alice).nth(1)).to_have_class(re.compile(r"\bdeleted\b"))
        expect_groups(alice, "Hccc")  # A tombstone keeps its place in the group.
        change(chat, {"type": "delete", "id": first["id"]})
        expect(items(alice).first).to_have_class(re.compile(r"\bdeleted\b"))
        expect_groups(alice, "Hccc")  # The head's tombstone keeps the header.
        expect(items(alice).first.locator(".author")).to_be_visible()
    no_problems(alice)
    alice.context.close()


# ---- Accessibility and looks ------------------------------------------------------------------


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("locale", ["en-US", "fr-FR"])
def test_grouped_messages_pass_axe_and_fit_a_phone(
    app, browser, gunicorn_server, make_user, theme, locale
):
    reader = signed_up_in(browser, gunicorn_server.url, "reader@example.com", theme, locale)
    page = reader.page
    me = user_id(reader)
    names = ["writer", "jean.dupont", "zoé", "sam", "li", "ana-maria", "ok_go", "max"]
    writers = [make_user(f"{name}@example.com")[0] for name in names]
    for uid, name in zip(writers, names, strict=True):
        with chat_socket(app, gunicorn_server, uid) as chat:
            post(chat, f"Hello, I am {name}")
    with chat_socket(app, gunicorn_server, writers[0]) as chat:
        first = post(chat, "A first message from the writer")
        post(chat, "A second one, a minute later, **grouped**")
        post(chat, f"And a third that mentions <@{me}>")
        change(chat, {"type": "edit", "id": first["id"], "text": "A first message, edited"})
        post(chat, "A reply in the group", reply_to=first["id"])
    expect(message(reader, "A reply in the group")).to_have_count(1)
    for text in ("Mine, the first", "Mine, the second, right under it"):
        page.locator("#message-input").fill(text)
        page.locator("#message-input").press("Enter")
    expect(page.locator(f"{VISIBLE_LIST} .message.pending")).to_have_count(0)
    expect(message(reader, "Mine, the second")).to_have_class(CONTINUED)
    expect(page.locator("#online .avatar")).to_have_count(1)  # Only the reader is still here.
    page.evaluate("document.querySelector('.flashes')?.remove()")
    message(reader, "A second one").hover()
    assert serious_violations(page) == []
    reader.screenshot(f"avatars-{theme}-{locale}")

    page.set_viewport_size({"width": 375, "height": 740})
    message(reader, "Mine, the second").hover()
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    for item in (message(reader, "A reply in the group"), message(reader, "Mine, the second")):
        box = item.bounding_box()
        assert box["x"] >= 0, box
        assert box["x"] + box["width"] <= 375, box
    assert serious_violations(page) == []
    reader.screenshot(f"avatars-phone-{theme}-{locale}")
    page.get_by_role("button", name=re.compile("Rooms and people|Salons et personnes")).click()
    expect(page.locator("#online .avatar")).to_be_visible()
    reader.screenshot(f"avatars-phone-panels-{theme}-{locale}")
    assert reader.problems == []
    reader.context.close()


# ---- Uploaded pictures ------------------------------------------------------------------------

AVATAR_SRC = re.compile(r"^/avatars/\d+/[0-9a-f]{16}\.webp$")


def picture_file(tmp_path, name="me.png", size=(400, 300)):
    """A PNG on disk, for the file input: its left half red, its right half blue."""
    image = Image.new("RGB", size, (20, 40, 220))
    image.paste((220, 20, 20), (0, 0, size[0] // 2, size[1]))
    path = tmp_path / name
    image.save(path, "PNG")
    return path


def expect_loaded(image, width=256):
    """``image`` (a locator of an <img>) has loaded the server's picture."""
    expect(image).to_have_attribute("src", AVATAR_SRC)
    expect(image).to_have_js_property("complete", True)
    expect(image).to_have_js_property("naturalWidth", width)


def test_an_uploaded_picture_shows_beside_messages_and_in_the_online_lists(people, tmp_path):
    alice, bob = people
    page = alice.page
    page.goto("/profile")
    current = page.locator("#avatar-current")
    expect(current.locator(".avatar")).to_have_text("AL")  # The initials, as in the chat.
    expect(page.locator("#avatar-remove")).to_be_hidden()

    # A file that is not a picture: told at once, beside the input, before anything is sent.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    field = page.get_by_label("New picture", exact=True)
    field.set_input_files(notes)
    error = page.locator("#avatar-error")
    expect(error).to_have_text(re.compile("This file is not a picture"))
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_attribute("aria-describedby", "avatar-hint avatar-error")
    # A damaged one passes the page's checks; the server's reason is told in the same place.
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(picture_file(tmp_path).read_bytes()[:300])
    field.set_input_files(damaged)
    expect(error).to_be_hidden()
    page.get_by_role("button", name="Upload").click()
    expect(error).to_have_text("This picture could not be read: it may be damaged.")
    expect(field).to_be_focused()
    assert [problem for problem in alice.problems if "400" not in problem] == []
    alice.problems.clear()  # The browser logs the refusal (400): that one was expected.

    # A picture: previewed, then uploaded, and shown as the current one.
    field.set_input_files(picture_file(tmp_path))
    expect(error).to_be_hidden()
    expect(field).not_to_have_attribute("aria-invalid", "true")
    preview = page.locator("#avatar-preview-image")
    expect(preview).to_be_visible()
    expect(preview).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#avatar-status")).to_have_text("Your picture was saved.")
    expect(preview).to_be_hidden()
    expect_loaded(current.locator("img.avatar"))
    url = current.locator("img.avatar").get_attribute("src")
    expect(page.locator("#avatar-remove")).to_be_visible()

    # In the chat: beside her messages, on both pages, and in both online lists.
    page.goto("/")
    alice.expect_connected()
    mine = page.locator("#online li.me > img.avatar")
    expect(mine).to_have_attribute("src", url)  # Known from hello before she says anything.
    alice.say("Look, a picture")
    for person in people:
        avatar = message(person, "Look, a picture").locator(":scope > .avatar")
        expect(avatar).to_have_attribute("src", url)
        expect_loaded(avatar)
        expect(avatar).to_have_css("width", "36px")
        expect(avatar).to_have_attribute("alt", "")
        expect(avatar).to_have_attribute("aria-hidden", "true")
        in_list = person.page.locator("#online li", has_text="alice").locator(".avatar")
        expect(in_list).to_have_attribute("src", url)
        expect(in_list).to_have_css("width", "24px")
    # Bob has none: his initials, everywhere.
    bob.say("Mine are initials")
    expect(message(alice, "Mine are initials").locator(":scope > .avatar")).to_have_text("BO")
    expect(page.locator("#online li", has_text="bob").locator(".avatar")).to_have_text("BO")
    no_problems(alice, bob)

    # Removed on the profile page (a plain form): the initials again, on the profile and in the
    # messages she sends from then on.
    page.goto("/profile")
    page.locator("#avatar-remove").get_by_role("button", name="Remove").click()
    expect(page.locator(".flash")).to_have_text(re.compile("Your picture was removed"))
    expect(current.locator(".avatar")).to_have_text("AL")
    page.goto("/")
    alice.expect_connected()
    alice.say("Back to initials")
    expect(message(bob, "Back to initials").locator(":scope > .avatar")).to_have_text("AL")
    expect(bob.page.locator("#online li", has_text="alice").locator(".avatar")).to_have_text("AL")


def test_a_picture_that_cannot_load_gives_way_to_the_initials(people, browser, tmp_path):
    alice, _ = people
    alice.page.goto("/profile")
    alice.page.get_by_label("New picture", exact=True).set_input_files(picture_file(tmp_path))
    alice.page.get_by_role("button", name="Upload").click()
    expect(alice.page.locator("#avatar-current img.avatar")).to_be_visible()
    alice.page.goto("/")
    alice.expect_connected()
    alice.say("A picture nobody can fetch")

    # Carol's browser cannot fetch pictures (the file gone, a proxy in the way): her page, fresh
    # (nothing cached), shows the initials in their place, in the message and in the list.
    carol = Person(browser, alice.page.url.rsplit("/", 1)[0])
    refused = []
    carol.context.route(
        re.compile(r"/avatars/"), lambda route: (refused.append(1), route.fulfill(status=404))
    )
    carol.register("carol@example.com")
    avatar = message(carol, "A picture nobody can fetch").locator(":scope > .avatar")
    expect(avatar).to_have_text("AL")
    expect(avatar).to_have_class(re.compile(r"^avatar avatar-\d$"))
    assert avatar.evaluate("e => e.tagName") == "SPAN"
    expect(carol.page.locator("#online li", has_text="alice").locator(".avatar")).to_have_text("AL")
    assert refused  # It was asked for, and refused.
    assert all("404" in problem for problem in carol.problems), carol.problems
    carol.context.close()


@pytest.mark.parametrize(("theme", "locale"), [("light", "en-US"), ("dark", "fr-FR")])
def test_the_profile_picture_passes_axe(browser, gunicorn_server, tmp_path, theme, locale):
    person = signed_up_in(browser, gunicorn_server.url, "reader@example.com", theme, locale)
    page = person.page
    page.goto("/profile")
    expect(page.locator("#avatar-current .avatar")).to_have_text("RE")
    assert serious_violations(page) == []
    page.locator("#avatar-upload").click()  # No file: the error, told beside the input.
    expect(page.locator("#avatar-error")).to_be_visible()
    page.locator("#avatar-input").set_input_files(picture_file(tmp_path))
    expect(page.locator("#avatar-preview-image")).to_be_visible()
    assert serious_violations(page) == []
    person.screenshot(f"profile-avatar-preview-{theme}-{locale}")
    page.locator("#avatar-upload").click()
    expect_loaded(page.locator("#avatar-current img.avatar"))
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    assert serious_violations(page) == []
    person.screenshot(f"profile-avatar-phone-{theme}-{locale}")
    assert person.problems == []
    person.context.close()
