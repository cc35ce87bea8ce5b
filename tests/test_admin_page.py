"""The admin page in Chromium: the first account to sign up runs the server, finds the page
from the header, deactivates someone and makes an invitation link; axe-core in both languages
and themes. Every wait is on what the page shows."""

import pytest
from playwright.sync_api import expect

from helpers import PASSWORD, VISIBLE_LIST, Person, serious_violations, signed_up_in

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


def test_an_administrator_deletes_a_members_message_from_the_page(browser, gunicorn_server):
    root, member = Person(browser, gunicorn_server.url), Person(browser, gunicorn_server.url)
    root.register("root@example.com")  # The first account: the administrator.
    member.register("member@example.com")
    member.say("Buy cheap watches")
    spam = root.page.locator(f"{VISIBLE_LIST} > .message").filter(has_text="Buy cheap watches")
    expect(spam).to_have_count(1)
    # The member sees no Delete on the administrator's messages; the administrator does on theirs.
    root.say("Welcome, everyone")
    own = member.page.locator(f"{VISIBLE_LIST} > .message").filter(has_text="Welcome, everyone")
    expect(own.get_by_role("button", name="Reply", exact=True)).to_have_count(1)
    expect(own.get_by_role("button", name="Delete", exact=True)).to_have_count(0)
    expect(spam.get_by_role("button", name="Edit", exact=True)).to_have_count(0)
    spam.hover()
    spam.get_by_role("button", name="Delete", exact=True).click()
    root.page.get_by_role("dialog").get_by_role("button", name="Delete", exact=True).click()
    for person in (root, member):
        tombstone = person.page.locator(f"{VISIBLE_LIST} > .message.deleted .text")
        expect(tombstone).to_have_text("Message deleted")
    assert root.problems == [] and member.problems == []  # noqa: PT018 - both pages at once
    root.context.close()
    member.context.close()


def test_an_administrator_renames_archives_and_deletes_a_room_from_the_page(
    browser, gunicorn_server
):
    root, member = Person(browser, gunicorn_server.url), Person(browser, gunicorn_server.url)
    root.register("root@example.com")  # The first account: the administrator.
    member.register("member@example.com")
    member.page.get_by_label("New room").fill("standup")
    member.page.get_by_role("button", name="Create").click()
    title = member.page.locator("#room-title")
    expect(title).to_have_text("#standup")
    member.say("notes from monday")
    admin = root.page
    admin.goto(f"{gunicorn_server.url}/admin/")
    row = admin.locator("tr").filter(has=admin.get_by_label("Name of standup"))
    row.get_by_label("Name of standup").fill("daily")
    row.get_by_label("Topic of standup").fill("fifteen minutes, standing")
    row.get_by_role("button", name="Save standup").click()
    expect(admin.locator(".flash")).to_contain_text("daily")
    expect(title).to_have_text("#daily")  # The member's open tab, at once.
    expect(member.page.get_by_text("fifteen minutes, standing")).to_be_visible()
    admin.get_by_role("button", name="Archive daily").click()
    expect(admin.get_by_role("button", name="Unarchive daily")).to_be_visible()
    expect(member.page.get_by_role("textbox", name="Message")).to_have_count(0)
    # Deleting asks for the room's name; a wrong one deletes nothing.
    row = admin.locator("tr").filter(has=admin.get_by_label("Type daily to delete it"))
    row.get_by_label("Type daily to delete it").fill("standup")
    row.get_by_role("button", name="Delete daily").click()
    expect(admin.locator(".flash")).to_contain_text("Type the room's name")
    row = admin.locator("tr").filter(has=admin.get_by_label("Type daily to delete it"))
    row.get_by_label("Type daily to delete it").fill("daily")
    row.get_by_role("button", name="Delete daily").click()
    expect(admin.locator(".flash")).to_contain_text("deleted")
    expect(title).to_have_text("#general")  # The member's tab left the room.
    expect(member.page.locator(".room-button").filter(has_text="#daily")).to_have_count(0)
    admin.goto(f"{gunicorn_server.url}/admin/")
    expect(admin.get_by_text("Room deleted")).to_be_visible()  # In the audit log.
    assert root.problems == []
    assert member.problems == []
