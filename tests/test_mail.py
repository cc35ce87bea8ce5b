"""Mail and "forgot password", against a real SMTP server on 127.0.0.1 (aiosmtpd)."""

import email
import email.policy
import logging
import re
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from accounts import mail
from accounts.tokens import FORGOT_SALT, RESET_SALT, reset_token
from admin import actions
from extensions import db
from helpers import csrf_token, free_port, login, submit_form
from models import User

PUBLIC_URL = "http://chat.example.test"
NEW_PASSWORD = "a brand new secret"
SMTP_USER, SMTP_PASSWORD = "chat", "smtp-secret-4d2f"


class Inbox:
    """What the SMTP server received; ``refuse`` answers every recipient with that reply."""

    def __init__(self):
        self.messages = []
        self.refuse = None
        self.logins = []
        self.changed = threading.Condition()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.changed:
            self.messages.append(message)
            self.changed.notify_all()
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        login, password = (bytes(part).decode() for part in auth_data)
        good = (login, password) == (SMTP_USER, SMTP_PASSWORD)
        self.logins.append((login, good))
        # handled=False: the server answers (235 or 535), not this function.
        return AuthResult(success=good, handled=False)

    def wait_for(self, count, timeout=10):
        """The ``count``-th message received, once it is."""
        with self.changed:
            arrived = self.changed.wait_for(lambda: len(self.messages) >= count, timeout)
        assert arrived, f"{count} messages expected, {len(self.messages)} received"
        return self.messages[count - 1]


@pytest.fixture
def inbox():
    """A real SMTP server on 127.0.0.1 (aiosmtpd) that accepts any login as a try."""
    box = Inbox()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=box.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    box.url = f"smtp://127.0.0.1:{controller.port}"
    yield box
    controller.stop()


@pytest.fixture
def app_config(app_config, inbox):
    """The test app sends its mail to ``inbox``; its links name ``PUBLIC_URL``."""
    return {**app_config, "CHAT_SMTP_URL": inbox.url, "CHAT_PUBLIC_URL": PUBLIC_URL}


@pytest.fixture
def outbox(app):
    """The app's outbox, stopped at the end of the test."""
    with app.app_context():
        box = mail.outbox()
    assert box is not None
    yield box
    box.stop()


def forgot(client, address, **headers):
    """Ask for a link for ``address`` through the real form; the response."""
    token = csrf_token(client.get("/forgot", headers=headers))
    return client.post("/forgot", data={"email": address, "csrf_token": token}, headers=headers)


def flashes(client):
    """The flashed messages on the page the last answer redirected to."""
    page = client.get("/login").text
    return re.findall(r'<li class="flash[^"]*">(.*?)</li>', page, re.S)


def link_in(message):
    """The reset link of a forgot-password mail (the text part's, also in the HTML part's)."""
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    link = re.search(r"http\S+/reset/\S+", text).group(0)
    assert f'href="{link}"' in html
    return link


def backdated(token, salt, seconds_ago, secret):
    """``token`` signed again as if issued ``seconds_ago`` seconds ago."""

    class Backdated(TimestampSigner):
        def get_timestamp(self):
            return int(time.time()) - seconds_ago

    payload = URLSafeTimedSerializer(secret, salt=salt).loads(token)
    return URLSafeTimedSerializer(secret, salt=salt, signer=Backdated).dumps(payload)


def app_with(make_app, app_config, **overrides):
    """Another app on the test's database (request ``app`` or ``alice`` first: it makes the
    tables), with ``overrides``; ``(app, its outbox)``."""
    app = make_app({**app_config, **overrides})
    with app.app_context():
        return app, mail.outbox()


def app_log(caplog):
    """What the app logged (the SMTP server's own lines, ``mail.log``, left out)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")


def test_forgot_password_mails_a_link_that_works_once(app, client, inbox, outbox, alice):
    assert 'href="/forgot"' in client.get("/login").text
    answer = forgot(client, "Alice@Example.com")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/login"
    assert flashes(client) == [
        "If an account has this address, we sent it a link to set a new password. It works"
        " once, within 60 minutes."
    ]
    message = inbox.wait_for(1)
    assert message["To"] == "alice@example.com"
    assert message["From"] == "chat@chat.example.test"
    assert message["Subject"] == "Set a new password for the chat"
    assert message["Auto-Submitted"] == "auto-generated"
    link = link_in(message)
    assert link.startswith(f"{PUBLIC_URL}/reset/")
    path = urlsplit(link).path
    stranger = app.test_client()
    page = stranger.get(path)
    assert page.status_code == 200
    assert "alice@example.com" in page.text
    done = submit_form(stranger, path, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert done.status_code == 302
    assert login(app.test_client(), password=NEW_PASSWORD).status_code == 302
    assert login(app.test_client()).status_code == 401  # The old password is gone.
    assert app.test_client().get(path).status_code == 404  # Spent by the new password.


def test_the_mail_speaks_the_accounts_language_else_the_requests(app, inbox, outbox, alice, bob):
    with app.app_context():
        db.session.get(User, alice).locale = "fr"
        db.session.commit()
    forgot(app.test_client(), "alice@example.com", **{"Accept-Language": "en"})
    french = inbox.wait_for(1)
    forgot(app.test_client(), "bob@example.com", **{"Accept-Language": "fr-FR,fr;q=0.9"})
    also_french = inbox.wait_for(2)
    forgot(app.test_client(), "bob@example.com")
    english = inbox.wait_for(3)
    for message, lang in ((french, "fr"), (also_french, "fr"), (english, "en")):
        assert message["Content-Language"] == lang
        html = message.get_body(("html",)).get_content()
        assert f'<html lang="{lang}">' in html
    # A sentence the French catalog already has (the reset page's heading), on the link.
    assert "Définir un nouveau mot de passe</a>" in french.get_body(("html",)).get_content()
    assert "Set a new password</a>" in english.get_body(("html",)).get_content()


def test_a_mailed_link_lasts_chat_forgot_max_age_and_an_admins_link_keeps_its_own(
    app, inbox, outbox, alice
):
    forgot(app.test_client(), "alice@example.com")
    token = urlsplit(link_in(inbox.wait_for(1))).path.removeprefix("/reset/")
    secret, max_age = app.config["SECRET_KEY"], app.config["CHAT_FORGOT_MAX_AGE"]
    client = app.test_client()
    fresh_enough = backdated(token, FORGOT_SALT, max_age - 60, secret)
    assert client.get(f"/reset/{fresh_enough}").status_code == 200
    expired = backdated(token, FORGOT_SALT, max_age + 1, secret)
    assert client.get(f"/reset/{expired}").status_code == 404
    with app.app_context():
        admins = reset_token(db.session.get(User, alice))
    day_old = backdated(admins, RESET_SALT, max_age + 1, secret)
    assert client.get(f"/reset/{day_old}").status_code == 200  # CHAT_RESET_MAX_AGE: a day.


def test_unknown_and_deactivated_addresses_get_the_same_answer_and_no_mail(
    app, inbox, outbox, alice, make_user
):
    carol = make_user("carol@example.com")[0]
    with app.app_context():
        actions.deactivate(db.session.get(User, carol), actor_id=None)
    answers = []
    for address in ("nobody@example.com", "carol@example.com", "alice@example.com"):
        client = app.test_client()
        response = forgot(client, address)
        answers.append((response.status_code, response.headers["Location"], flashes(client)))
    assert answers[0] == answers[1] == answers[2]
    # The last one, for alice, is the only mail: queued after the others, received alone.
    assert inbox.wait_for(1)["To"] == "alice@example.com"
    assert outbox.wait_idle(10)
    assert len(inbox.messages) == 1


def test_a_refusing_server_never_breaks_the_page(app, inbox, outbox, alice, caplog):
    inbox.refuse = "550 5.1.1 Mailbox unavailable"
    client = app.test_client()
    answer = forgot(client, "alice@example.com")
    assert answer.status_code == 302
    assert "If an account has this address" in flashes(client)[0]
    assert outbox.wait_idle(10)
    assert inbox.messages == []
    assert "mail not sent through 127.0.0.1" in app_log(caplog)
    assert "SMTPRecipientsRefused" in app_log(caplog)
    assert "/reset/" not in app_log(caplog)


def test_a_dead_server_never_breaks_the_page(app_config, make_app, alice, caplog):
    app, box = app_with(make_app, app_config, CHAT_SMTP_URL=f"smtp://127.0.0.1:{free_port()}")
    client = app.test_client()
    assert forgot(client, "alice@example.com").status_code == 302
    assert "If an account has this address" in flashes(client)[0]
    assert box.wait_idle(10)
    box.stop()
    assert "ConnectionRefusedError" in app_log(caplog)


def test_a_silent_server_holds_no_request_and_times_out(app_config, make_app, alice, caplog):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # Listens, never says a word.
        port = silent.getsockname()[1]
        url = f"smtp://127.0.0.1:{port}?timeout=3"
        app, box = app_with(make_app, app_config, CHAT_SMTP_URL=url)
        client = app.test_client()
        assert forgot(client, "alice@example.com").status_code == 302
        assert not box.wait_idle(0)  # The answer came while the mail still waits on the server.
        assert box.wait_idle(10)
        box.stop()
    assert "mail not sent through 127.0.0.1" in app_log(caplog)
    assert "timed out" in app_log(caplog)


def test_a_password_in_the_url_logs_in_and_never_goes_in_clear_or_to_the_log(
    app_config, make_app, inbox, alice, caplog
):
    host = inbox.url.removeprefix("smtp://")
    caplog.set_level(logging.INFO)
    # The server offers no STARTTLS: without ?starttls=no the password stays here.
    url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@{host}"
    guarded, box = app_with(make_app, app_config, CHAT_SMTP_URL=url)
    forgot(guarded.test_client(), "alice@example.com")
    assert box.wait_idle(10)
    box.stop()
    assert "InsecureServer" in app_log(caplog)
    assert inbox.logins == []
    # Allowed in clear (a relay on this host, say): a wrong password is refused, then the right
    # one sends.
    url = f"smtp://{SMTP_USER}:wrong-{SMTP_PASSWORD}@{host}?starttls=no"
    wrong, box = app_with(make_app, app_config, CHAT_SMTP_URL=url)
    forgot(wrong.test_client(), "alice@example.com")
    assert box.wait_idle(10)
    box.stop()
    assert "SMTPAuthenticationError" in app_log(caplog)
    url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@{host}?starttls=no"
    right, box = app_with(make_app, app_config, CHAT_SMTP_URL=url)
    forgot(right.test_client(), "alice@example.com")
    assert inbox.wait_for(1)["To"] == "alice@example.com"
    box.stop()
    assert (SMTP_USER, False) in inbox.logins
    assert inbox.logins[-1] == (SMTP_USER, True)
    assert SMTP_PASSWORD not in app_log(caplog)
    assert "/reset/" not in app_log(caplog)


def test_forgot_needs_its_csrf_token_and_a_valid_address(client, outbox, inbox, alice):
    assert client.post("/forgot", data={"email": "alice@example.com"}).status_code == 400
    bad = forgot(client, "not an address")
    assert bad.status_code == 400
    assert 'aria-invalid="true"' in bad.text
    assert outbox.wait_idle(10)
    assert inbox.messages == []


def test_forgot_is_rate_limited_per_email_whether_it_has_an_account_or_not(
    app_config, make_app, alice
):
    app, box = app_with(make_app, app_config, CHAT_FORGOT_LIMIT_PER_EMAIL="2 per hour")
    for address in ("nobody@example.com", "alice@example.com"):
        answers = [forgot(app.test_client(), address).status_code for _ in range(3)]
        assert answers == [302, 302, 429], address
    box.stop()


def test_a_full_outbox_drops_the_mail_and_says_so(app, outbox, caplog):
    running, release = threading.Event(), threading.Event()

    def blocking():
        running.set()
        release.wait(10)

    assert outbox.submit(blocking)
    assert running.wait(10)
    assert all(outbox.submit(lambda: None) for _ in range(mail.QUEUE_SIZE))
    assert not outbox.submit(lambda: None)
    assert "mail dropped" in app_log(caplog)
    release.set()
    assert outbox.wait_idle(10)


def test_without_smtp_there_is_no_link_and_no_page(app_config, make_app, app):
    app = make_app({**app_config, "CHAT_SMTP_URL": ""})  # The tables are ``app``'s.
    client = app.test_client()
    assert "/forgot" not in client.get("/login").text
    assert client.get("/forgot").status_code == 404
    token = csrf_token(client.get("/login"))
    answer = client.post("/forgot", data={"email": "a@example.com", "csrf_token": token})
    assert answer.status_code == 404
    with app.app_context():
        assert mail.outbox() is None


def test_without_a_public_url_development_links_name_the_requests_host(
    app_config, make_app, inbox, alice
):
    app, box = app_with(make_app, app_config, CHAT_PUBLIC_URL="")
    forgot(app.test_client(), "alice@example.com")
    message = inbox.wait_for(1)
    box.stop()
    assert link_in(message).startswith("http://localhost/reset/")
    assert message["From"] == "chat@127.0.0.1"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("smtp://chat:hunter2@mail.example.com:smtp", "the port must be a number"),
        ("smtp://chat:hunter2@mail.example.com?starttls=maybe", "starttls is yes or no"),
        ("mail.example.com:587", "the scheme must be smtp or smtps"),
    ],
)
def test_a_malformed_smtp_url_stops_the_start_with_a_clear_message(
    app_config, make_app, url, reason
):
    with pytest.raises(RuntimeError, match="CHAT_SMTP_URL must be smtp://") as raised:
        make_app({**app_config, "CHAT_SMTP_URL": url})
    assert reason in str(raised.value)
    assert "hunter2" not in str(raised.value)


# ---- In a browser ------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.parametrize(("theme", "locale"), [("light", "en-US"), ("dark", "fr-FR")])
def test_forgot_password_in_a_browser_is_accessible_in_both_languages(
    browser, gunicorn_server, make_user, inbox, theme, locale
):
    from playwright.sync_api import expect

    from helpers import PASSWORD, serious_violations

    make_user("zoe@example.com")
    context = browser.new_context(
        base_url=gunicorn_server.url, color_scheme=theme, locale=locale, bypass_csp=True
    )
    page = context.new_page()
    page.goto("/login")
    page.locator('a[href="/forgot"]').click()
    expect(page.locator("#email")).to_be_focused()
    assert serious_violations(page) == []
    page.locator("#email").fill("zoe@example.com")
    page.locator("#submit").click()
    expect(page.locator(".flash")).to_be_visible()  # The same answer for any address.
    assert serious_violations(page) == []
    path = urlsplit(link_in(inbox.wait_for(1))).path  # The mail names the public URL.
    page.goto(path)
    assert serious_violations(page) == []
    page.locator("#password").fill(PASSWORD + "!")
    page.locator("#confirm").fill(PASSWORD + "!")
    page.locator("#submit").click()
    expect(page.locator(".flash.flash-success")).to_be_visible()
    page.goto(path)  # Spent: the new password changed what the link was signed with.
    expect(page.locator("h1")).not_to_have_text("")
    assert page.locator("#password").count() == 0
    context.close()
