"""Logging out holds even when an old session or remember-me cookie comes back afterwards."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from extensions import db
from helpers import PASSWORD, csrf_token, login, submit_form
from models import Login, utcnow

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.


def log_out(client):
    """Log ``client`` out through the page's form; return the response."""
    return client.post("/logout", data={"csrf_token": csrf_token(client.get("/"))})


def logins(app):
    """The ids of the login rows, oldest first."""
    with app.app_context():
        return db.session.scalars(select(Login.id).order_by(Login.created_at)).all()


def assert_signed_out(client):
    """``client`` is anonymous: the chat sends it to log in, the token API refuses it."""
    assert client.get("/").status_code == 302
    assert client.get("/api/token").status_code == 401
    assert client.get("/login").status_code == 200


def test_an_old_session_cookie_is_refused_after_logout(app, client, alice):
    # A request that started before the logout (another tab's page load, token fetch or
    # reconnect) can answer after it and set the old session cookie again: last writer wins.
    # And a tab that navigates away (its socket closed with 4001) drops the logout's answer.
    login(client)
    old_session = client.get_cookie("session").value
    assert len(logins(app)) == 1
    assert log_out(client).status_code == 302
    assert logins(app) == []
    client.set_cookie("session", old_session)
    assert_signed_out(client)


def test_logging_out_leaves_other_devices_signed_in(app, alice):
    laptop, phone = app.test_client(), app.test_client()
    login(laptop)
    login(phone)
    log_out(laptop)
    assert laptop.get("/").status_code == 302
    assert phone.get("/").status_code == 200
    assert phone.get("/api/token").status_code == 200


def test_logout_deletes_the_remember_me_cookie_and_revokes_it(app, client, alice):
    fields = {"email": "alice@example.com", "password": PASSWORD, "remember": "y"}
    submit_form(client, "/login", fields)
    remember = client.get_cookie("remember_token").value
    log_out(client)
    assert client.get_cookie("remember_token") is None
    # Presented again (a copy, or a response that raced the logout), it logs nobody in.
    browser = app.test_client()
    browser.set_cookie("remember_token", remember)
    assert_signed_out(browser)


def test_a_remember_me_cookie_still_logs_in_a_new_browser_session(app, client, alice):
    fields = {"email": "alice@example.com", "password": PASSWORD, "remember": "y"}
    submit_form(client, "/login", fields)
    browser = app.test_client()  # The browser was closed: the session cookie is gone.
    browser.set_cookie("remember_token", client.get_cookie("remember_token").value)
    assert browser.get("/").status_code == 200


def test_logging_out_everywhere_ends_this_and_every_other_login(app, alice):
    laptop, phone = app.test_client(), app.test_client()
    login(laptop)
    login(phone)
    old_laptop_session = laptop.get_cookie("session").value
    laptop.post("/logout-everywhere", data={"csrf_token": csrf_token(laptop.get("/"))})
    assert logins(app) == []
    laptop.set_cookie("session", old_laptop_session)
    assert_signed_out(laptop)
    assert_signed_out(phone)


def test_logging_in_forgets_logins_older_than_a_remember_me_cookie(app, client, alice):
    with app.app_context():
        stale = Login(id="stale", user_id=alice, created_at=utcnow() - timedelta(days=400))
        recent = Login(id="recent", user_id=alice, created_at=utcnow() - timedelta(days=300))
        db.session.add_all([stale, recent])
        db.session.commit()
    login(client)
    remaining = logins(app)
    assert remaining[0] == "recent"
    assert "stale" not in remaining
    assert len(remaining) == 2
