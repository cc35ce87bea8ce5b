"""The page, polished: accessibility (axe-core), keyboard only, phone and desktop, both themes.

Real Chromium driven by Playwright against gunicorn, like test_browser. Screenshots land in
artifacts/screens/ (CI keeps them; the README shows copies from docs/screens/).
"""

import re

import pytest
from playwright.sync_api import expect

from helpers import ARTIFACTS, PASSWORD, serious_violations

SIZES = {"phone": {"width": 375, "height": 740}, "desktop": {"width": 1440, "height": 900}}
THEMES = ("light", "dark")

pytestmark = pytest.mark.browser


@pytest.fixture
def open_page(browser, gunicorn_server):
    """``open_page(size, theme, locale)``: a fresh browser context; closed at the end."""
    contexts = []

    def make(size="desktop", theme="light", locale="en-US"):
        context = browser.new_context(
            base_url=gunicorn_server.url,
            viewport=SIZES[size],
            color_scheme=theme,
            locale=locale,
            # Playwright injects axe as an inline script, which our CSP rightly forbids.
            bypass_csp=True,
        )
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def register(page, email):
    """Register through the form and wait for the chat to connect."""
    page.goto("/register")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Confirm password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")


def no_sideways_scroll(page):
    """True if nothing is wider than the viewport."""
    return page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("theme", THEMES)
def test_every_page_passes_axe_in_both_themes_and_sizes(open_page, size, theme):
    page = open_page(size, theme)
    for path in ("/login", "/register"):
        page.goto(path)
        assert serious_violations(page) == [], path
        assert no_sideways_scroll(page), path
    register(page, f"axe-{theme}-{size}@example.com")
    page.get_by_role("textbox", name="Message").fill("Hello, accessible world")
    page.keyboard.press("Enter")
    expect(page.locator(".message .text").last).to_have_text("Hello, accessible world")
    assert serious_violations(page) == [], "/"
    assert no_sideways_scroll(page)
    page.goto("/profile")
    assert serious_violations(page) == [], "/profile"
    assert no_sideways_scroll(page), "/profile"


def focused(page):
    """A short description of the focused element."""
    return page.evaluate(
        "() => { const e = document.activeElement;"
        " return `${e.tagName.toLowerCase()}#${e.id}|${e.textContent.trim().slice(0, 40)}`; }"
    )


def tab_to(page, pattern, limit=40, back=False):
    """Press Tab (or Shift+Tab) until the focused element matches ``pattern``."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        if re.search(pattern, focused(page)):
            return
    pytest.fail(f"never reached {pattern!r} with the keyboard; ended on {focused(page)}")


def test_keyboard_only_log_in_send_and_change_rooms(open_page, make_user):
    make_user("kim@example.com")
    page = open_page()
    page.goto("/login")
    # The email field has focus on arrival (autofocus is applied at the next rendering update,
    # a moment after load: expect waits for it); everything below is keys only, no mouse.
    expect(page.locator("#email")).to_be_focused()
    page.keyboard.type("kim@example.com")
    tab_to(page, r"^input#password")
    assert page.locator("#email").input_value() == "kim@example.com"
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")

    tab_to(page, r"^textarea#message-input")
    page.keyboard.type("Typed, never clicked")
    page.keyboard.press("Enter")
    expect(page.locator(".message .text").last).to_have_text("Typed, never clicked")

    tab_to(page, r"^input#room-name", back=True)
    page.keyboard.type("keyboard")
    page.keyboard.press("Enter")
    expect(page.locator("#room-title")).to_have_text("#keyboard")
    tab_to(page, r"^(button|a)#?[^|]*\|#?\s*general", back=True)
    page.keyboard.press("Enter")
    expect(page.locator("#room-title")).to_have_text(re.compile(r"general"))
    # Focus is visible: the focused control draws an outline.
    style = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.boxShadow, document.activeElement.id]; }"
    )
    assert style[0] != "none" or style[1] != "none", style


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("theme", THEMES)
def test_screenshots_at_phone_and_desktop_sizes(open_page, size, theme):
    alice, bob = open_page(size, theme), open_page(size, theme)
    register(alice, f"alice-{theme}-{size}@example.com")
    register(bob, f"bob-{theme}-{size}@example.com")
    for page, text in [
        (alice, "Salut ! Tout le monde est là ?"),
        (bob, "Yes — on my phone, in the dark."),
        (alice, "Parfait. Le thème sombre suit le système."),
    ]:
        page.get_by_role("textbox", name="Message").fill(text)
        page.keyboard.press("Enter")
    expect(alice.locator(".message .text")).to_have_count(3)
    composer = alice.get_by_role("textbox", name="Message")
    expect(composer).to_be_in_viewport()
    assert no_sideways_scroll(alice)
    # The welcome toast fades by itself after a few seconds: picture the page as it then is.
    alice.evaluate("document.querySelector('.flashes')?.remove()")
    (ARTIFACTS / "screens").mkdir(parents=True, exist_ok=True)
    alice.screenshot(path=str(ARTIFACTS / "screens" / f"chat-{size}-{theme}.png"))
    if size == "phone":
        toggle = alice.get_by_role("button", name="Rooms and people")
        toggle.click()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(alice.locator("#room-list")).to_be_visible()
        alice.screenshot(path=str(ARTIFACTS / "screens" / f"chat-{size}-{theme}-panels.png"))


def test_french_speakers_get_a_french_page(open_page):
    page = open_page(locale="fr-FR")
    page.goto("/register")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    page.get_by_label("Adresse e-mail").fill("zoe@example.com")
    page.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
    page.get_by_label("Confirmer le mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Créer le compte").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#status")).to_have_text("Connecté")
    expect(page.get_by_role("button", name="Envoyer")).to_be_visible()


def test_unread_count_in_the_title_while_the_tab_is_hidden(open_page):
    reader, writer = open_page(), open_page()
    register(reader, "reader@example.com")
    register(writer, "writer@example.com")
    title = reader.title()
    # Headless tabs are always visible: pretend this one went to the background.
    reader.evaluate(
        "() => { Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    # general tells its mentions only (the default level): the chatter between is not counted.
    for text in ("<@1> one", "chatter", "<@1> two"):  # The reader is the first account.
        writer.get_by_role("textbox", name="Message").fill(text)
        writer.keyboard.press("Enter")
    expect(reader.locator(".message .text").filter(has_text="@reader two")).to_have_count(1)
    expect(reader).to_have_title(f"(2) {title}")
    reader.evaluate(
        "() => { Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    expect(reader).to_have_title(title)


def test_notifications_are_only_requested_after_a_click(open_page):
    page = open_page()
    asked = []
    page.on("dialog", lambda dialog: asked.append(dialog))
    register(page, "notify@example.com")
    state = page.evaluate("Notification.permission")
    button = page.get_by_role("button", name="Enable notifications")
    if state == "default":
        expect(button).to_be_visible()
        assert asked == []  # Nothing was asked on load.
        button.click()
        expect(button).to_be_hidden()
    else:
        expect(button).to_be_hidden()  # Already decided: nothing to offer.
