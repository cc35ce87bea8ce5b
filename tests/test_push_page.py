"""Web Push on the page, in Chromium against gunicorn: the profile's section, the service worker
at /sw.js, and what a push shows.

Headless Chromium has no push service to subscribe to, so the browser cannot make a real
subscription: the test checks what it can. The section renders and tells this browser's state
(and says so plainly when subscribing fails), a subscription stored for the person is listed,
the worker registers at the root scope, a push delivered to it through the DevTools protocol
(ServiceWorker.deliverPushMessage) shows its notification, and the address a notification
opens (/?room=<key>#m<id>) shows the room at that message. Both languages pass axe.
"""

import json

import pytest
from playwright.sync_api import expect
from sqlalchemy import select
from websockets.sync.client import connect

from extensions import db
from helpers import ChatClient, post, pump_until, serious_violations, signed_up_in, token_issued_at
from models import PushSubscription, User

pytestmark = pytest.mark.browser

WORKER_URL = "() => navigator.serviceWorker.ready.then((r) => r.active && r.active.scriptURL)"
NOTIFICATIONS = """() => navigator.serviceWorker.ready
  .then((r) => r.getNotifications())
  .then((all) => all.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data })))"""


@pytest.fixture
def app_config(app_config, tmp_path):
    return {**app_config, "CHAT_VAPID_KEY_FILE": str(tmp_path / "vapid.pem")}


def user_id(app, email):
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.email == email))


def store_subscription(app, email, agent):
    with app.app_context():
        db.session.add(
            PushSubscription(
                user_id=db.session.scalar(select(User.id).where(User.email == email)),
                endpoint=f"https://push.example.com/{agent}",
                p256dh="B" + "A" * 86,
                auth="A" * 22,
                user_agent=agent,
            )
        )
        db.session.commit()


@pytest.mark.parametrize(("theme", "locale"), [("light", "en-US"), ("dark", "fr-FR")])
def test_the_profile_section_registers_the_worker_and_tells_the_state(
    app, browser, gunicorn_server, theme, locale
):
    person = signed_up_in(browser, gunicorn_server.url, "reader@example.com", theme, locale)
    person.context.grant_permissions(["notifications"])
    store_subscription(app, "reader@example.com", "Firefox/200.0 on another computer")
    page = person.page
    page.goto("/profile")
    section = page.locator("#push-section")
    expect(section).to_have_attribute("data-state", "disabled")  # This browser: not subscribed.
    assert page.evaluate(WORKER_URL) == f"{gunicorn_server.url}/sw.js"
    expect(page.locator("#push-status")).to_have_text(section.get_attribute("data-disabled"))
    expect(page.locator("#push-enable")).to_be_visible()
    expect(page.locator("#push-disable")).to_be_hidden()
    listed = page.locator("#push-browsers li")
    expect(listed).to_have_count(1)
    expect(listed).to_contain_text("Firefox/200.0 on another computer")
    assert serious_violations(page) == []
    section.scroll_into_view_if_needed()
    person.screenshot(f"profile-push-{theme}-{locale}")
    # No push service in headless Chromium: subscribing fails, and the page says so.
    page.locator("#push-enable").click()
    expect(page.locator("#push-status")).to_have_text(section.get_attribute("data-failed"))
    assert serious_violations(page) == []
    with app.app_context():
        assert db.session.scalar(select(db.func.count(PushSubscription.id))) == 1
    person.context.close()


def test_a_push_shows_its_notification_and_its_address_opens_the_message(
    app, browser, gunicorn_server
):
    person = signed_up_in(browser, gunicorn_server.url, "reader@example.com", "light", "en-US")
    person.context.grant_permissions(["notifications"])
    page = person.page
    assert page.evaluate(WORKER_URL) == f"{gunicorn_server.url}/sw.js"  # The chat registers it.
    reader = user_id(app, "reader@example.com")
    host = gunicorn_server.url.removeprefix("http://")
    with connect(f"ws://{host}/ws?token={token_issued_at(app, reader)}") as ws:
        chat = ChatClient(ws)
        chat.recv_type("hello")
        first = post(chat, "the message a notification points at")
        for number in range(60):  # More than a page: the message is not among the latest.
            post(chat, f"filler {number}")
    payload = {
        "title": "writer in general",
        "body": "the message a notification points at",
        "url": f"/?room=general#m{first['id']}",
        "tag": "general",
        "room": "general",
        "message_id": first["id"],
    }
    deliver_push(person, gunicorn_server.url, payload)
    shown = wait_for_notifications(page)
    assert shown == [
        {
            "title": "writer in general",
            "body": "the message a notification points at",
            "tag": "general",
            "data": {
                "url": f"{gunicorn_server.url}{payload['url']}",
                "room": "general",
                "id": first["id"],
            },
        }
    ]
    page.goto(payload["url"])  # Where a click opens a new tab.
    target = page.locator(f'.message[data-id="{first["id"]}"]')
    expect(target).to_be_visible()
    assert person.problems == []
    person.context.close()


def deliver_push(person, origin, payload):
    """Dispatch a push event with ``payload`` to the page's service worker (DevTools)."""
    cdp = person.context.new_cdp_session(person.page)
    registrations = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda e: registrations.extend(e["registrations"]),
    )
    cdp.send("ServiceWorker.enable")

    def ours():
        return [r for r in registrations if r["scopeURL"] == f"{origin}/" and not r["isDeleted"]]

    pump_until(person.page, ours, "the worker's registration")  # CDP events need the pump.
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {
            "origin": origin,
            "registrationId": ours()[0]["registrationId"],
            "data": json.dumps(payload),
        },
    )


def wait_for_notifications(page):
    # ``evaluate`` awaits the promise (``wait_for_function`` would take the promise itself as
    # truthy and return before the worker showed anything).
    shown = []
    pump_until(page, lambda: shown.extend(page.evaluate(NOTIFICATIONS)) or shown, "a notification")
    return shown
