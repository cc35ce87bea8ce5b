"""Bots on the admin page, in Chromium: the first account makes a bot, copies its webhook URL
(shown once), a script posts through it and the open chat shows the message with a "bot"
badge; a failure is shown, the URL is rotated, the bot deleted. axe-core in both languages.
Every wait is on what the page shows."""

import json
import urllib.request

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from extensions import db
from helpers import VISIBLE_LIST, PersonIn, serious_violations, signed_up_in
from models import Bot, utcnow

pytestmark = pytest.mark.browser


def post_json(url, data):
    """POST ``data`` as JSON to ``url`` (the live gunicorn on 127.0.0.1); the JSON answer."""
    request = urllib.request.Request(  # noqa: S310 - the test's own server on 127.0.0.1
        url, json.dumps(data).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        return json.loads(answer.read())


def record_failure(app, reason):
    """What the outgoing webhook would record, written as it does (the page only shows it)."""
    with app.app_context():
        bot = db.session.scalars(select(Bot)).one()
        bot.last_error, bot.last_error_at = reason, utcnow()
        db.session.commit()


@pytest.mark.parametrize("locale", ["en-US", "fr-FR"])
def test_an_administrator_makes_a_bot_that_posts_into_the_chat(
    app, browser, gunicorn_server, locale
):
    root = signed_up_in(browser, gunicorn_server.url, "root@example.com", "light", locale)
    chat = PersonIn(root.context)  # The chat, open in a second tab of the administrator's.
    chat.page.goto("/")
    chat.expect_connected()
    admin = root.page
    admin.goto("/admin/")
    admin.locator("#bot-name").fill("Deploy bot")
    admin.locator("#bot-url").fill("https://ci.example/hook")
    admin.locator("form.bot-create button[type=submit]").click()
    expect(admin.locator(".flash")).to_contain_text("Deploy bot")
    url = admin.locator("#bot-hook-url").input_value()
    assert url.startswith(f"{gunicorn_server.url}/hooks/")
    expect(admin.locator("#bot-signing-secret")).to_be_visible()
    record_failure(app, 'the answer has no "text" string')
    assert serious_violations(admin) == []
    root.screenshot(f"admin-bots-{locale}")

    answer = post_json(url, {"text": "Build **42** is green"})
    assert answer["ok"] is True
    shown = chat.page.locator(f"{VISIBLE_LIST} > .message").filter(has_text="Build 42 is green")
    expect(shown.locator(".author")).to_have_text("Deploy bot")
    expect(shown.locator(".bot-badge")).to_have_text("bot")
    expect(shown.locator("strong")).to_have_text("42")
    assert serious_violations(chat.page) == []

    # The URL is shown once; the failure is; a new URL replaces the old one at once.
    admin.reload()
    expect(admin.locator("#bot-hook-url")).to_have_count(0)
    row = admin.locator("tr[data-bot]")
    expect(row.locator(".bot-error")).to_have_text('the answer has no "text" string')
    row.locator('form[action$="/rotate"] button').click()
    rotated = admin.locator("#bot-hook-url").input_value()
    assert rotated != url
    with pytest.raises(urllib.error.HTTPError) as gone:
        post_json(url, {"text": "old URL"})
    assert gone.value.code == 404
    assert post_json(rotated, {"text": "new URL"})["ok"] is True
    expect(chat.page.locator(f"{VISIBLE_LIST} .message .text").last).to_have_text("new URL")

    admin.locator('tr[data-bot] form[action$="/delete"] button').click()
    expect(admin.locator(".flash")).to_contain_text("Deploy bot")
    expect(admin.locator("tr[data-bot]")).to_have_count(0)
    assert serious_violations(admin) == []
    chat.page.reload()
    chat.expect_connected()
    kept = chat.page.locator(f"{VISIBLE_LIST} > .message").filter(has_text="Build 42 is green")
    expect(kept.locator(".author")).to_have_text("Deploy bot")  # Its messages stay.
    assert root.problems == []
    assert chat.problems == []
    root.context.close()
