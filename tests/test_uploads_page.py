"""The page's side of files (issue 19), in Chromium against gunicorn: attaching by the button,
a drop on the conversation and a paste into the composer; the tray's progress, refusals and
removals; the files in the message on both pages, the download, and the lightbox.

Alice and Bob each have their own browser context, as in test_messages_page. A drop and a paste
are the browser's own events carrying a real DataTransfer of real files (what a drag from the
desktop or a screenshot in the clipboard hand the page). Every wait is on what a page shows
(Playwright's expect), never a sleep.
"""

import base64
import io
import re

import pytest
from PIL import Image
from playwright.sync_api import expect

from helpers import (
    VISIBLE_LIST,
    Person,
    SocketRoute,
    pump_until,
    serious_violations,
    signed_up_in,
)

pytestmark = pytest.mark.browser

MAX_BYTES = 300_000
QUOTA_BYTES = 400_000


@pytest.fixture
def app_config(app_config):
    """Small limits, so a refusal needs a small file."""
    app_config["CHAT_MAX_UPLOAD_BYTES"] = MAX_BYTES
    app_config["CHAT_UPLOAD_QUOTA_BYTES"] = QUOTA_BYTES
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


def png(width=800, height=600):
    """A real PNG: a gradient, so that it compresses to something of a size."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def noise(size):
    """Bytes that compress to nothing smaller: a file of exactly ``size``."""
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


def tray(person):
    return person.page.get_by_role("list", name="Files to send")


def tray_item(person, name):
    return tray(person).locator(".upload").filter(has_text=name)


def attach(person, *files):
    """Pick ``files`` ((name, mime type, bytes)) with the Attach button's file chooser."""
    page = person.page
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Attach files").click()
    payloads = [{"name": n, "mimeType": t, "buffer": b} for n, t, b in files]
    chooser.value.set_files(payloads)


def data_transfer(person, name, mime, data):
    """A DataTransfer holding one real file, made in the page (as a drag or a paste hands it)."""
    return person.page.evaluate_handle(
        """([encoded, name, type]) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type }));
            return transfer;
        }""",
        [base64.b64encode(data).decode(), name, mime],
    )


def message_with_files(person):
    return person.page.locator(f"{VISIBLE_LIST} > .message[data-id]").filter(
        has=person.page.locator(".attachments")
    )


def composer(person):
    return person.page.get_by_role("textbox", name="Message")


def send(person, text=""):
    composer(person).fill(text)
    composer(person).press("Enter")


def natural_width(locator):
    return locator.evaluate("(image) => image.complete ? image.naturalWidth : 0")


def loaded(person, image):
    """Wait until the browser has the image's bytes (decoded: it has a width)."""
    person.page.wait_for_function(
        "(image) => image.complete && image.naturalWidth > 0", arg=image.element_handle()
    )


def refused_loads(person):
    """What the page reported besides the 4xx answers it was meant to get (Chromium logs each)."""
    return [p for p in person.problems if "Failed to load resource" not in p]


# ---- Attaching ------------------------------------------------------------------------------


def test_files_attached_by_the_button_reach_both_pages_with_the_caption(people):
    alice, bob = people
    image, notes = png(), b"Agenda\n1. Ship\n"
    attach(alice, ("plan.png", "image/png", image), ("notes.txt", "text/plain", notes))
    expect(tray_item(alice, "plan.png")).to_contain_text("Ready to send")
    expect(tray_item(alice, "notes.txt")).to_contain_text("Ready to send")
    send(alice, "The plan, and the notes")
    expect(tray(alice)).to_be_hidden()  # Sent: the files are the message's now.
    for person in (alice, bob):
        shown = message_with_files(person)
        expect(shown).to_have_count(1)
        expect(shown.locator(".text")).to_have_text("The plan, and the notes")
        thumbnail = shown.get_by_role("button", name="plan.png, open full size").locator("img")
        # Its box is the thumbnail's before it loads: 800x600 fits 480x360 as 480x360.
        assert (thumbnail.get_attribute("width"), thumbnail.get_attribute("height")) == (
            "480",
            "360",
        )
        expect(thumbnail).to_have_attribute("alt", "plan.png")
        loaded(person, thumbnail)
        assert natural_width(thumbnail) == 480  # The server's WebP thumbnail, not the original.
        download = shown.get_by_role("link", name=re.compile("notes.txt"))
        expect(download).to_contain_text("15 bytes")
        expect(download).to_have_attribute("download", "notes.txt")
    # Bob's page fetches what Alice uploaded, with his own session: the bytes, as a download.
    href = (
        message_with_files(bob)
        .get_by_role("link", name=re.compile("notes.txt"))
        .get_attribute("href")
    )
    response = bob.context.request.get(href)
    assert response.status == 200
    assert response.body() == notes
    assert response.headers["content-disposition"].startswith("attachment")
    assert alice.problems == [] and bob.problems == []  # noqa: PT018 - both pages at once


def test_thumbnails_load_and_open_full_size_in_a_lightbox(people):
    alice, bob = people
    attach(alice, ("wide.png", "image/png", png(1200, 300)))
    expect(tray_item(alice, "wide.png")).to_contain_text("Ready to send")
    send(alice)
    page = bob.page
    button = message_with_files(bob).get_by_role("button", name="wide.png, open full size")
    thumbnail = button.locator("img")
    assert (thumbnail.get_attribute("width"), thumbnail.get_attribute("height")) == ("480", "120")
    loaded(bob, thumbnail)
    assert natural_width(thumbnail) == 480
    assert message_with_files(bob).locator(".text").count() == 0  # Files alone: no caption.
    button.click()
    lightbox = page.get_by_role("dialog", name="wide.png")
    expect(lightbox).to_be_visible()
    full = lightbox.get_by_role("img", name="wide.png")
    loaded(bob, full)
    assert natural_width(full) == 1200
    expect(lightbox.get_by_role("button", name="Close")).to_be_focused()
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    expect(button).to_be_focused()  # Back where the reader was.
    assert bob.problems == []


def test_a_drop_on_the_conversation_attaches_the_file(people):
    alice, bob = people
    page = alice.page
    transfer = data_transfer(alice, "dropped.png", "image/png", png(300, 200))
    page.dispatch_event("#scroller", "dragover", {"dataTransfer": transfer})
    expect(page.get_by_text("Drop files to attach them")).to_be_visible()
    page.dispatch_event("#scroller", "drop", {"dataTransfer": transfer})
    expect(page.get_by_text("Drop files to attach them")).to_be_hidden()
    expect(tray_item(alice, "dropped.png")).to_contain_text("Ready to send")
    expect(tray_item(alice, "dropped.png").locator("img")).to_have_count(1)
    send(alice, "Dropped in")
    shown = message_with_files(bob)
    expect(shown.get_by_role("button", name="dropped.png, open full size")).to_be_visible()
    assert page.url.endswith("/")  # The browser did not leave the chat to show the file.
    assert alice.problems == []


def test_a_pasted_screenshot_is_attached_under_a_name_of_its_own(people):
    alice, bob = people
    page = alice.page
    transfer = data_transfer(alice, "image.png", "image/png", png(640, 480))
    composer(alice).fill("Look at this")
    composer(alice).evaluate(
        """(box, transfer) => box.dispatchEvent(new ClipboardEvent("paste", {
            clipboardData: transfer, bubbles: true, cancelable: true }))""",
        transfer,
    )
    item = tray(alice).locator(".upload")
    expect(item).to_contain_text(re.compile(r"Pasted image \d{4}-\d\d-\d\d \d\d\.\d\d\.\d\d\.png"))
    expect(item).to_contain_text("Ready to send")
    expect(composer(alice)).to_have_value("Look at this")  # A file paste adds no text.
    composer(alice).press("Enter")
    shown = message_with_files(bob)
    expect(shown.locator(".text")).to_have_text("Look at this")
    expect(
        shown.get_by_role("button", name=re.compile(r"^Pasted image .*\.png, open"))
    ).to_be_visible()
    assert page.locator(".notice").is_hidden()


def test_a_message_with_files_not_confirmed_survives_a_reload_and_is_posted_once(people):
    alice, bob = people
    page = alice.page
    text = "held with its file"
    route = SocketRoute(page)  # The message never reaches the server, until the test says so.
    route.drop_sent = lambda frame: frame.get("type") == "message" and frame["text"] == text
    page.reload()  # A socket opened from now on goes through the route.
    alice.expect_connected()
    attach(alice, ("held.png", "image/png", png(400, 300)))
    expect(tray_item(alice, "held.png")).to_contain_text("Ready to send")
    send(alice, text)
    pump_until(page, lambda: route.client_ids(text), "the message to be sent")
    held = page.locator(f"{VISIBLE_LIST} > .message.pending")
    expect(held.get_by_role("button", name="held.png, open full size")).to_be_visible()
    # Reloaded: drawn pending again with its file, from storage; then sent for real, once.
    route.drop_sent = lambda frame: False
    page.reload()
    alice.expect_connected()
    pump_until(page, lambda: len(route.client_ids(text)) >= 2, "the re-send")
    frames = [f for f in route.sent if f.get("type") == "message" and f["text"] == text]
    assert len({f["client_id"] for f in frames}) == 1
    assert len({tuple(f["attachments"]) for f in frames}) == 1  # The same upload, named again.
    shown = message_with_files(bob)
    expect(shown).to_have_count(1)
    expect(shown.get_by_role("button", name="held.png, open full size")).to_be_visible()
    expect(page.locator(".message.pending")).to_have_count(0)
    expect(message_with_files(alice)).to_have_count(1)


# ---- Progress, refusals, removal ------------------------------------------------------------


def test_a_slow_upload_shows_progress_and_holds_the_message_until_it_is_in(people):
    alice, bob = people
    page = alice.page
    cdp = alice.context.new_cdp_session(page)
    cdp.send("Network.enable")
    # About 100 kB/s up: the 250 kB file takes a few seconds, long enough to watch.
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 100_000},
    )
    attach(alice, ("big.bin", "application/octet-stream", noise(250_000)))
    item = tray_item(alice, "big.bin")
    bar = item.get_by_role("progressbar", name="Uploading big.bin")
    expect(bar).to_be_visible()
    page.wait_for_function(
        "(bar) => bar.value > 0 && bar.value < 1", arg=bar.element_handle(), timeout=10_000
    )
    send(alice, "Wait for it")
    expect(page.locator("#notice")).to_have_text(re.compile("still uploading"))
    expect(composer(alice)).to_have_value("Wait for it")  # Nothing was sent, nothing lost.
    expect(item).to_contain_text("Ready to send", timeout=20_000)
    expect(bar).to_have_count(0)
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    composer(alice).press("Enter")
    expect(message_with_files(bob).get_by_role("link", name=re.compile("big.bin"))).to_be_visible()
    expect(page.locator("#notice")).to_be_hidden()


def test_refusals_show_in_the_tray_and_hold_the_message_until_removed(people):
    alice, bob = people
    page = alice.page
    sent = []
    page.on("request", lambda request: sent.append(request.url))
    # Too large: refused by the page (it knows the limit), never sent.
    attach(alice, ("huge.bin", "application/octet-stream", noise(MAX_BYTES + 1)))
    expect(tray_item(alice, "huge.bin")).to_contain_text("Too large: a file may be at most")
    # Within the limit, over the quota once the first is in: the server's 413, in the tray.
    attach(alice, ("first.bin", "application/octet-stream", noise(250_000)))
    expect(tray_item(alice, "first.bin")).to_contain_text("Ready to send")
    attach(alice, ("second.bin", "application/octet-stream", noise(250_000)))
    expect(tray_item(alice, "second.bin")).to_contain_text("Your files would take more than")
    # A damaged image: the server's 400.
    attach(alice, ("broken.png", "image/png", png()[:200]))
    expect(tray_item(alice, "broken.png")).to_contain_text("could not be read")
    send(alice, "With files")
    expect(page.locator("#notice")).to_have_text(re.compile("Remove the files that could not"))
    for name in ("huge.bin", "second.bin", "broken.png"):
        tray_item(alice, name).get_by_role("button", name=f"Remove {name}").click()
    expect(tray(alice).locator(".upload")).to_have_count(1)
    composer(alice).press("Enter")
    shown = message_with_files(bob)
    expect(shown.get_by_role("link", name=re.compile("first.bin"))).to_be_visible()
    expect(shown.locator(".attachments li")).to_have_count(1)
    assert sum(url.endswith("/api/uploads") for url in sent) == 3  # Not huge.bin.
    assert refused_loads(alice) == []


def test_more_files_than_a_message_carries_are_refused_in_the_page(people, app):
    alice, _bob = people
    limit = app.config["CHAT_MAX_ATTACHMENTS"]
    files = [(f"f{n}.txt", "text/plain", b"x") for n in range(limit + 2)]
    attach(alice, *files)
    expect(tray(alice).locator(".upload")).to_have_count(limit)
    expect(alice.page.locator("#notice")).to_have_text(
        f"A message may carry at most {limit} files."
    )


# ---- Accessibility ----------------------------------------------------------------------------


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("locale", ["en-US", "fr-FR"])
def test_files_tray_and_lightbox_pass_axe(browser, gunicorn_server, theme, locale):
    person = signed_up_in(browser, gunicorn_server.url, "axe@example.com", theme, locale)
    context, page = person.context, person.page
    with page.expect_file_chooser() as chooser:
        page.locator("#attach").click()
    chooser.value.set_files(
        [
            {"name": "photo.png", "mimeType": "image/png", "buffer": png()},
            {"name": "report.txt", "mimeType": "text/plain", "buffer": b"report"},
        ]
    )
    expect(page.locator(".upload[data-status=done]")).to_have_count(2)
    page.locator("#message-input").press("Enter")
    shown = page.locator(f"{VISIBLE_LIST} > .message[data-id] .attachments")
    expect(shown).to_have_count(1)
    # A tray with one file ready and one refused, beside the message with its files.
    with page.expect_file_chooser() as chooser:
        page.locator("#attach").click()
    chooser.value.set_files(
        [
            {"name": "again.txt", "mimeType": "text/plain", "buffer": b"again"},
            {
                "name": "huge.bin",
                "mimeType": "application/octet-stream",
                "buffer": noise(MAX_BYTES + 1),
            },
        ]
    )
    expect(page.locator(".upload[data-status=done]")).to_have_count(1)
    expect(page.locator(".upload[data-status=failed]")).to_have_count(1)
    assert serious_violations(page) == []
    person.screenshot(f"files-{theme}-{locale}")
    shown.locator(".attachment-image").click()
    expect(page.locator("#lightbox")).to_be_visible()
    assert serious_violations(page) == []
    person.screenshot(f"lightbox-{theme}-{locale}")
    assert refused_loads(person) == []
    context.close()
