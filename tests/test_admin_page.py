"""The admin page in Chromium: the first account to sign up runs the server, finds the page
from the header, deactivates someone and makes an invitation link; axe-core in both languages
and themes. Every wait is on what the page shows."""

import pytest
from playwright.sync_api import expect

from helpers import PASSWORD, serious_violations, signed_up_in

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("locale", ["en-US", "fr-FR"])
def test_the_first_account_runs_the_server_from_the_admin_page(
    browser, gunicorn_server, make_user, theme, locale
):
    root = signed_up_in(browser, gunicorn_server.url, "root@example.com", theme, locale)
    make_user("troll@example.com", PASSWORD)
    page = root.page
    page.locator('a[href="/admin/"]').click()
    expect(page.locator("#admin-heading")).to_be_visible()
    troll = page.locator('tr[data-email="troll@example.com"]')
    troll.locator('form[action$="/deactivate"] button').click()
    expect(page.locator(".flash")).to_contain_text("troll")
    expect(troll.locator('form[action$="/reactivate"] button')).to_be_visible()
    page.locator("#invite-uses").fill("5")
    page.locator('form[action$="/invitations"] button[type=submit]').click()
    expect(page.locator("#new-link")).to_be_visible()
    link = page.locator("#new-link").input_value()
    assert "/join/" in link
    assert serious_violations(page) == []
    root.screenshot(f"admin-{theme}-{locale}")
    # The link opens the registration form for someone signed out.
    stranger = browser.new_context(base_url=gunicorn_server.url, locale=locale)
    other = stranger.new_page()
    other.goto(link)
    expect(other.locator("#email")).to_be_visible()
    stranger.close()
    assert root.problems == []
    root.context.close()
