"""The page's side of link previews (issue 21), in Chromium against gunicorn: a posted link shows
its card on both pages, its author removes it and the other page sees it go; axe finds nothing
serious with a card shown, in English and in French. The linked site is on 127.0.0.1."""

import re

import pytest
from playwright.sync_api import expect

from helpers import VISIBLE_LIST, Person, serious_violations, signed_up_in
from websites import serving

pytestmark = pytest.mark.browser


@pytest.fixture
def site():
    with serving() as site:
        yield site


@pytest.fixture
def app_config(app_config):
    app_config["CHAT_PREVIEWS"] = True
    app_config["CHAT_FETCH_ALLOW_LOOPBACK"] = True  # The test's site is on 127.0.0.1.
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


def card(person, text):
    """The preview card of the message whose text has ``text``."""
    page = person.page
    message = page.locator(f"{VISIBLE_LIST} > .message").filter(
        has=page.locator(".text", has_text=text)
    )
    return message, message.locator(".preview")


def expect_card(person, text, url):
    """The card is shown as the page said, with our copy of its image, loaded."""
    _message, shown = card(person, text)
    expect(shown).to_have_count(1)
    title = shown.locator("a.preview-title")
    expect(title).to_have_text("Léa's page")
    expect(title).to_have_attribute("href", url)
    expect(title).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(title).to_have_attribute("target", "_blank")
    expect(shown.locator(".preview-description")).to_have_text("All about it")
    expect(shown.locator(".preview-site")).to_have_text("Lea")
    image = shown.locator("img.preview-image")
    expect(image).to_have_attribute("src", re.compile(r"^/previews/\d+/image$"))
    expect(image).to_have_attribute("width", "480")
    expect(image).to_have_attribute("height", "320")
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") == 480  # Served to a member, decoded.


def test_a_posted_link_shows_its_card_and_its_author_removes_it(people, site):
    alice, bob = people
    url = site.url("/page")
    alice.say(f"Have a look: {url}")
    expect_card(alice, "Have a look", url)
    expect_card(bob, "Have a look", url)
    # Only the author has the action; it takes the card off both pages.
    bob_message, _ = card(bob, "Have a look")
    bob_message.hover()
    expect(bob_message.get_by_role("button", name="Remove preview")).to_have_count(0)
    message, shown = card(alice, "Have a look")
    message.hover()
    message.get_by_role("button", name="Remove preview", exact=True).click()
    expect(shown).to_have_count(0)
    expect(card(bob, "Have a look")[1]).to_have_count(0)
    expect(message.get_by_role("button", name="Remove preview")).to_have_count(0)
    # A reload shows it as it is now: no card.
    bob.page.reload()
    bob.expect_connected()
    expect(bob.messages("Have a look")).to_have_count(1)
    expect(card(bob, "Have a look")[1]).to_have_count(0)
    assert site.hits["/page"] == 1
    for person in (alice, bob):
        assert person.problems == []


@pytest.mark.parametrize("locale", ["en-US", "fr-FR"])
def test_a_card_passes_axe(browser, gunicorn_server, site, locale):
    reader = signed_up_in(browser, gunicorn_server.url, "reader@example.com", "light", locale)
    url = site.url("/page")
    box = reader.page.locator("#message-input")
    box.fill(f"Card: {url}")
    box.press("Enter")
    expect_card(reader, "Card:", url)
    message, _ = card(reader, "Card:")
    message.hover()  # Its actions shown, Remove preview among them.
    expect(message.locator("[data-action=unpreview]")).to_be_visible()
    assert serious_violations(reader.page) == []
    reader.screenshot(f"preview-{locale}")
    assert reader.problems == []
    reader.context.close()
