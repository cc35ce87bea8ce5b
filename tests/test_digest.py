"""The digest of missed mentions and direct messages (``flask send-digests``), its unsubscribe
link and the profile's checkbox, against a real SMTP server on 127.0.0.1 (aiosmtpd).

Times are set in the database (messages and memberships backdated) rather than waited for; a
send is synchronous, so the message is in the inbox once the command has returned.
"""

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from babel.dates import format_datetime
from itsdangerous import URLSafeSerializer
from sqlalchemy import select, update

from accounts import digest
from accounts.tokens import reset_token
from admin import actions
from core.rooms import create_room, join_general, mark_read, open_direct, set_notify
from extensions import db
from helpers import csrf_token, free_port, login
from models import Membership, Message, Room, User, save_message
from test_mail import Inbox

PUBLIC_URL = "http://chat.example.test"
QUIET = timedelta(hours=1)


@pytest.fixture
def inbox():
    """A real SMTP server on 127.0.0.1 (aiosmtpd)."""
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.url = f"smtp://127.0.0.1:{controller.port}"
    yield box
    controller.stop()


@pytest.fixture
def app_config(app_config, inbox):
    """The test app sends its mail to ``inbox``; its links name ``PUBLIC_URL``."""
    return {**app_config, "CHAT_SMTP_URL": inbox.url, "CHAT_PUBLIC_URL": PUBLIC_URL}


@pytest.fixture
def people(app, make_user):
    """alice, bob and carol, all in ``general`` since yesterday: ``{name: id}``."""
    ids = {name: make_user(f"{name}@example.com")[0] for name in ("alice", "bob", "carol")}
    with app.app_context():
        for user_id in ids.values():
            join_general(user_id)
    return ids


# ---- Helpers ----------------------------------------------------------------------------------


def room_id(app, key="general"):
    with app.app_context():
        return db.session.scalar(select(Room.id).where(Room.key == key))


def direct(app, one, other):
    """The direct room of two people; ``(id, key)``."""
    with app.app_context():
        room, _ = open_direct(one, other)
        return room.id, room.key


def post(app, author, room, text, ago=timedelta(hours=2)):
    """A message by ``author`` in room ``room`` (an id), stored ``ago`` in the past; its id.
    Every membership is backdated to the day before, so that nobody joined after it."""
    with app.app_context():
        data, _ = save_message(author, room, text)
        when = datetime.now(UTC) - ago
        db.session.execute(update(Message).where(Message.id == data["id"]).values(created_at=when))
        yesterday = datetime.now(UTC) - timedelta(days=1)
        db.session.execute(update(Membership).values(joined_at=yesterday))
        db.session.commit()
        return data["id"]


def mention(user_id):
    return f"<@{user_id}>"


def send(runner, code=0):
    """Run ``flask send-digests``; its output."""
    result = runner.invoke(args=["send-digests"])
    assert result.exit_code == code, result.output
    return result.output


def change_user(app, user_id, **values):
    with app.app_context():
        db.session.execute(update(User).where(User.id == user_id).values(**values))
        db.session.commit()


def user_row(app, user_id):
    with app.app_context():
        user = db.session.get(User, user_id)
        db.session.expunge(user)
        return user


def text_of(message):
    return message.get_body(("plain",)).get_content()


def html_of(message):
    return message.get_body(("html",)).get_content()


def unsubscribe_path(message):
    """The path of the unsubscribe link, as the header and both parts carry it."""
    header = message["List-Unsubscribe"]
    link = re.fullmatch(r"<(\S+)>", header).group(1)
    assert link.startswith(f"{PUBLIC_URL}/unsubscribe/")
    assert link in text_of(message)
    assert f'href="{link}"' in html_of(message)
    return urlsplit(link).path


# ---- Who gets a digest, and what it says ------------------------------------------------------


@pytest.mark.database
def test_a_mention_and_a_direct_message_make_one_digest(app, runner, inbox, people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    general = room_id(app)
    dm, dm_key = direct(app, alice, bob)
    post(app, carol, general, "Lunch, anyone?")  # Mentions nobody: not missed.
    post(app, alice, general, f"{mention(bob)} the build is red", ago=timedelta(minutes=150))
    post(app, alice, dm, "Can you look **today**?", ago=timedelta(minutes=90))
    assert send(runner) == "Digests sent: 1, failed: 0.\n"
    message = inbox.wait_for(1)
    assert len(inbox.messages) == 1
    assert message["To"] == "bob@example.com"
    assert message["Subject"] == "2 missed messages in the chat"
    assert message["Content-Language"] == "en"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_path(message)
    text, html = text_of(message), html_of(message)
    assert "Hello bob," in text
    assert "Lunch" not in text
    # By room, the room of the newest message last; each with its link.
    assert text.index("#general") < text.index("- alice") < text.index("@bob the build is red")
    assert text.index("@bob the build is red") < text.index("Direct messages with alice")
    assert text.index("Direct messages with alice") < text.index("Can you look **today**?")
    assert f"{PUBLIC_URL}/?room=general" in text
    assert f"{PUBLIC_URL}/?room={dm_key}" in text  # dm:1:2, as the page reads it back
    assert f'href="{PUBLIC_URL}/?room=general"' in html
    assert "@bob the build is red" in html
    assert "Can you look **today**?" in html  # An excerpt: the text as written, escaped.
    assert "<strong>today" not in html
    with app.app_context():
        sent = db.session.get(User, bob).last_digest_at
    assert sent is not None
    cutoff = datetime.now(UTC) - QUIET
    assert abs((sent.replace(tzinfo=sent.tzinfo or UTC) - cutoff).total_seconds()) < 60


def deactivate(app, user_id):
    with app.app_context():
        actions.deactivate(db.session.get(User, user_id), actor_id=None)


def set_up_read(app, people, bob):
    message = post(app, people["alice"], room_id(app), f"hi {mention(bob)}")
    with app.app_context():
        mark_read(room_id(app), bob, message)


def set_up_muted(app, people, bob):
    with app.app_context():
        set_notify(db.session.get(Room, room_id(app)), bob, "nothing")
    post(app, people["alice"], room_id(app), f"hi {mention(bob)}")


def set_up_own(app, people, bob):
    post(app, bob, room_id(app), f"note to self {mention(bob)}")


def set_up_recent(app, people, bob):
    post(app, people["alice"], room_id(app), f"hi {mention(bob)}", ago=timedelta(minutes=20))


def set_up_deleted(app, people, bob):
    message = post(app, people["alice"], room_id(app), f"hi {mention(bob)}")
    with app.app_context():
        db.session.execute(
            update(Message).where(Message.id == message).values(deleted_at=datetime.now(UTC))
        )
        db.session.commit()


def set_up_around(app, people, bob):
    """bob read a message of the quiet period in another room: he is around, the mail waits."""
    post(app, people["alice"], room_id(app), f"hi {mention(bob)}")
    with app.app_context():
        side = create_room("side", bob).id
    recent = post(app, people["alice"], side, "later", ago=timedelta(minutes=10))
    with app.app_context():
        mark_read(side, bob, recent)


def set_up_posted(app, people, bob):
    post(app, people["alice"], room_id(app), f"hi {mention(bob)}")
    post(app, bob, room_id(app), "back in a minute", ago=timedelta(minutes=5))


def set_up_joined_later(app, people, bob):
    post(app, people["alice"], room_id(app), f"hi {mention(bob)}")
    with app.app_context():
        membership = db.session.get(Membership, (room_id(app), bob))
        membership.joined_at = datetime.now(UTC) - timedelta(minutes=90)
        db.session.commit()


def set_up_deactivated(app, people, bob):
    post(app, people["alice"], room_id(app), f"hi {mention(bob)}")
    deactivate(app, bob)


def set_up_unsubscribed(app, people, bob):
    post(app, people["alice"], room_id(app), f"hi {mention(bob)}")
    change_user(app, bob, digest=False)


def set_up_bot(app, people, bob):
    post(app, people["alice"], room_id(app), f"hi {mention(bob)}")
    change_user(app, bob, is_bot=True)


@pytest.mark.database
@pytest.mark.parametrize(
    "set_up",
    [
        set_up_read,
        set_up_muted,
        set_up_own,
        set_up_recent,
        set_up_deleted,
        set_up_around,
        set_up_posted,
        set_up_joined_later,
        set_up_deactivated,
        set_up_unsubscribed,
        set_up_bot,
    ],
    ids=lambda f: f.__name__.removeprefix("set_up_"),
)
def test_who_gets_no_digest(app, runner, inbox, people, set_up):
    bob, carol = people["bob"], people["carol"]
    dm, _ = direct(app, people["alice"], carol)
    post(app, people["alice"], dm, "carol, as a witness: the run ran")
    set_up(app, people, bob)
    assert send(runner) == "Digests sent: 1, failed: 0.\n"
    assert [message["To"] for message in inbox.messages] == ["carol@example.com"]
    assert user_row(app, bob).last_digest_at is None


def test_without_smtp_or_a_public_url_the_command_fails_and_the_profile_says_nothing(
    app, app_config, make_app, people, inbox
):
    post(app, people["alice"], direct(app, people["alice"], people["bob"])[0], "hello")
    for missing in ({"CHAT_SMTP_URL": ""}, {"CHAT_PUBLIC_URL": ""}):
        other = make_app({**app_config, **missing})
        result = other.test_cli_runner().invoke(args=["send-digests"])
        assert result.exit_code == 1
        assert "CHAT_SMTP_URL and CHAT_PUBLIC_URL must both be set" in result.output
        client = other.test_client()
        login(client, "bob@example.com")
        page = client.get("/profile").text
        assert "Email me a digest" not in page
        assert 'id="digest"' not in page
    assert inbox.messages == []
    assert user_row(app, people["bob"]).last_digest_at is None


@pytest.mark.database
def test_the_digest_speaks_its_readers_language(app, runner, inbox, people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    change_user(app, bob, locale="fr")
    dm_bob, _ = direct(app, alice, bob)
    dm_carol, _ = direct(app, alice, carol)
    first = post(app, alice, dm_bob, "Salut")
    post(app, alice, dm_carol, "Hi")
    send(runner)
    inbox.wait_for(2)
    by_address = {message["To"]: message for message in inbox.messages}
    french, english = by_address["bob@example.com"], by_address["carol@example.com"]
    with app.app_context():
        posted = db.session.get(Message, first).created_at.replace(tzinfo=UTC)
    for message, lang, hello in ((french, "fr", "Bonjour bob,"), (english, "en", "Hello carol,")):
        assert message["Content-Language"] == lang
        assert f'<html lang="{lang}">' in html_of(message)
        assert hello in text_of(message)
        assert hello in html_of(message)
    # Times in the reader's language (the catalog's strings come with the lead's `make i18n`).
    assert format_datetime(posted, "short", tzinfo=UTC, locale="fr") in text_of(french)
    assert format_datetime(posted, "short", tzinfo=UTC, locale="en") not in text_of(french)


@pytest.mark.database
def test_past_the_cap_the_newest_are_listed_and_the_rest_counted(
    app_config, make_app, inbox, people, app
):
    capped = make_app({**app_config, "CHAT_DIGEST_MAX": 3})
    dm, _ = direct(app, people["alice"], people["bob"])
    for n in range(1, 6):
        post(app, people["alice"], dm, f"number {n}", ago=timedelta(minutes=200 - n))
    send(capped.test_cli_runner())
    message = inbox.wait_for(1)
    assert message["Subject"] == "5 missed messages in the chat"
    text = text_of(message)
    assert [int(n) for n in re.findall(r"number (\d)", text)] == [3, 4, 5]  # Newest last.
    assert "And 2 more messages: open the chat to read them." in text
    assert f"{PUBLIC_URL}/" in text.splitlines()  # The chat itself, for the rest.
    assert "And 2 more messages" in html_of(message)


@pytest.mark.database
def test_a_second_run_sends_nothing_new_and_a_later_one_only_what_came_since(
    app, runner, inbox, people
):
    alice, bob = people["alice"], people["bob"]
    dm, _ = direct(app, alice, bob)
    post(app, alice, dm, "old news")
    post(app, alice, dm, "in the quiet period", ago=timedelta(minutes=30))
    assert send(runner) == "Digests sent: 1, failed: 0.\n"
    assert send(runner) == "Digests sent: 0, failed: 0.\n"
    assert len(inbox.messages) == 1
    assert "in the quiet period" not in text_of(inbox.messages[0])
    # Less than a quiet period after the last digest, none: at most one per quiet period.
    post(app, alice, dm, "another one", ago=timedelta(minutes=40))
    assert run_at(app, datetime.now(UTC) + QUIET / 2) == (0, 0)
    # Later the quiet message is old enough, and the first one is not listed again.
    assert run_at(app, datetime.now(UTC) + QUIET * 1.1) == (1, 0)
    later = text_of(inbox.wait_for(2))
    assert "in the quiet period" in later
    assert "another one" in later
    assert "old news" not in later


def run_at(app, now):
    """``send_digests`` as if it ran at ``now``; ``(sent, failed)``."""
    with app.app_context():
        run = digest.send_digests(now=now)
    return run.sent, run.failed


@pytest.mark.database
def test_a_refused_mail_is_not_marked_sent_and_goes_out_next_run(app, runner, inbox, people):
    dm, _ = direct(app, people["alice"], people["bob"])
    post(app, people["alice"], dm, "are you there?")
    inbox.refuse = "550 5.1.1 Mailbox unavailable"
    assert send(runner, code=1) == "Digests sent: 0, failed: 1.\n"
    assert inbox.messages == []
    assert user_row(app, people["bob"]).last_digest_at is None
    inbox.refuse = None
    assert send(runner) == "Digests sent: 1, failed: 0.\n"
    assert "are you there?" in text_of(inbox.wait_for(1))


def test_a_dead_server_fails_every_digest_and_marks_none(app_config, make_app, app, people):
    dead = make_app({**app_config, "CHAT_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"})
    dm, _ = direct(app, people["alice"], people["bob"])
    post(app, people["alice"], dm, "hello?")
    result = dead.test_cli_runner().invoke(args=["send-digests"])
    assert result.exit_code == 1
    assert result.output == "Digests sent: 0, failed: 1.\n"
    assert user_row(app, people["bob"]).last_digest_at is None


# ---- Unsubscribing ----------------------------------------------------------------------------


def bobs_digest(app, runner, inbox, people):
    dm, _ = direct(app, people["alice"], people["bob"])
    post(app, people["alice"], dm, "ping")
    send(runner)
    return inbox.wait_for(1)


@pytest.mark.database
def test_one_click_unsubscribes_without_a_page_or_a_csrf_token(app, runner, inbox, people):
    path = unsubscribe_path(bobs_digest(app, runner, inbox, people))
    answer = app.test_client().post(
        path,
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert answer.status_code == 200
    assert user_row(app, people["bob"]).digest is False
    post(app, people["alice"], direct(app, people["alice"], people["bob"])[0], "pong")
    assert send(runner) == "Digests sent: 0, failed: 0.\n"


def checkbox(page):
    """The profile's digest checkbox, as the page has it."""
    return re.search(r'<input type="checkbox" id="digest"[^>]*>', page)[0]


@pytest.mark.database
def test_the_link_asks_first_and_the_profile_turns_it_back_on(app, runner, inbox, people):
    path = unsubscribe_path(bobs_digest(app, runner, inbox, people))
    client = app.test_client()
    page = client.get(path)  # What a mail scanner does: nothing changes.
    assert page.status_code == 200
    assert f'<form method="post" action="{path}">' in page.text
    assert user_row(app, people["bob"]).digest is True
    done = client.post(path)
    assert done.status_code == 200
    assert "You will get no more digests" in done.text
    assert user_row(app, people["bob"]).digest is False
    assert client.post(path).status_code == 200  # Again: still off, no error.
    login(client, "bob@example.com")
    profile = client.get("/profile")
    assert 'id="digest" name="digest" value="on"' in profile.text
    assert "checked" not in checkbox(profile.text)
    # Without its CSRF token the checkbox's form is refused.
    assert client.post("/profile/digest", data={"digest": "on"}).status_code == 400
    assert user_row(app, people["bob"]).digest is False
    token = csrf_token(profile)
    saved = client.post("/profile/digest", data={"digest": "on", "csrf_token": token})
    assert saved.status_code == 302
    assert saved.headers["Location"] == "/profile"
    assert user_row(app, people["bob"]).digest is True
    assert " checked" in checkbox(client.get("/profile").text)
    # Unticked: the browser sends no field at all.
    client.post("/profile/digest", data={"csrf_token": token})
    assert user_row(app, people["bob"]).digest is False


def test_the_profile_checkbox_needs_a_login(client):
    token = csrf_token(client.get("/login"))
    answer = client.post("/profile/digest", data={"digest": "on", "csrf_token": token})
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/login")
    assert client.get("/profile/digest").status_code == 405


@pytest.mark.database
def test_a_bad_token_is_a_404_and_changes_nothing(app, people):
    bob = people["bob"]
    secret = app.config["SECRET_KEY"]
    with app.app_context():
        good = digest.unsubscribe_token(db.session.get(User, bob))
        reset = reset_token(db.session.get(User, bob))
    other_purpose = URLSafeSerializer(secret, salt=digest.UNSUBSCRIBE_SALT).dumps(
        {"uid": bob, "p": "something else"}
    )
    no_user = URLSafeSerializer(secret, salt=digest.UNSUBSCRIBE_SALT).dumps(
        {"uid": 999, "p": digest.UNSUBSCRIBE}
    )
    other_key = URLSafeSerializer("another key " * 4, salt=digest.UNSUBSCRIBE_SALT).dumps(
        {"uid": bob, "p": digest.UNSUBSCRIBE}
    )
    client = app.test_client()
    for token in (good[:-2], good + "x", "nonsense", reset, other_purpose, no_user, other_key):
        for method in (client.get, client.post):
            answer = method(f"/unsubscribe/{token}")
            assert answer.status_code == 404, token
            assert "This link does not work" in answer.text
    assert user_row(app, bob).digest is True


def test_a_token_signed_with_a_fallback_key_still_works(app_config, make_app, app, people):
    with app.app_context():
        old = digest.unsubscribe_token(db.session.get(User, people["bob"]))
    rotated = make_app(
        {
            **app_config,
            "SECRET_KEY": "a brand new secret key, long enough 0123456789",
            "SECRET_KEY_FALLBACKS": (app_config["SECRET_KEY"],),
        }
    )
    assert rotated.test_client().post(f"/unsubscribe/{old}").status_code == 200
    assert user_row(app, people["bob"]).digest is False


# ---- In a browser ------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.parametrize(("theme", "locale"), [("light", "en-US"), ("dark", "fr-FR")])
def test_the_checkbox_and_the_unsubscribe_page_in_a_browser(
    browser, app, live_server, theme, locale
):
    from playwright.sync_api import expect

    from helpers import serious_violations, signed_up_in

    person = signed_up_in(browser, f"http://{live_server}", "zoe@example.com", theme, locale)
    page = person.page
    page.goto("/profile")
    box = page.locator("#digest")
    expect(box).to_be_checked()
    assert serious_violations(page) == []
    box.uncheck()
    page.locator("#digest-save").click()
    expect(page.locator(".flash.flash-success")).to_be_visible()
    expect(page.locator("#digest")).not_to_be_checked()
    assert serious_violations(page) == []
    page.locator("#digest").check()
    page.locator("#digest-save").click()
    expect(page.locator("#digest")).to_be_checked()
    with app.app_context():
        user = User.by_email("zoe@example.com")
        assert user.digest is True
        token = digest.unsubscribe_token(user)
    page.goto(f"/unsubscribe/{token}")
    assert serious_violations(page) == []
    page.locator("#unsubscribe").click()
    expect(page.locator("h1")).to_be_visible()
    expect(page.locator("#unsubscribe")).to_have_count(0)
    assert serious_violations(page) == []
    page.goto("/profile")
    expect(page.locator("#digest")).not_to_be_checked()
    page.goto("/unsubscribe/nonsense")
    expect(page.locator("[role=alert] h1")).to_be_visible()
    assert serious_violations(page) == []
    person.context.close()
