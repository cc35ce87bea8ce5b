"""Register, log in, log out through the real forms, with CSRF on."""

import re

import pytest
from sqlalchemy import select

from accounts.tokens import TokenError, verify_token
from extensions import db
from helpers import PASSWORD, csrf_token, login, submit_form
from models import User

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.


def register(client, email="alice@example.com", password=PASSWORD, confirm=None):
    data = {"email": email, "password": password, "confirm": confirm or password}
    return submit_form(client, "/register", data)


def users(app):
    with app.app_context():
        return db.session.scalars(select(User.email)).all()


def test_register_creates_a_lowercase_account_and_logs_in(app, client):
    response = register(client, email="  Alice@Example.COM ")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert users(app) == ["alice@example.com"]
    page = client.get("/")
    assert page.status_code == 200
    assert "Signed in as <strong>alice</strong>" in page.text


@pytest.mark.parametrize(
    ("email", "password", "confirm", "error"),
    [
        ("not-an-email", PASSWORD, None, "must have an @-sign"),
        ("alice@localhost", PASSWORD, None, "It should have a period"),
        ("", PASSWORD, None, "This field is required."),
        ("alice@example.com", "short", None, "at least 8 characters"),
        ("alice@example.com", "x" * 129, None, "at most 128 characters"),
        ("alice@example.com", "alice@example.com", None, "must not be your email"),
        ("alice@example.com", PASSWORD, PASSWORD + "!", "The passwords do not match."),
    ],
)
def test_register_explains_what_is_wrong(app, client, email, password, confirm, error):
    response = register(client, email, password, confirm)
    assert response.status_code == 400
    assert error in response.text
    assert users(app) == []


def test_register_refuses_a_duplicate_email(app, client, make_user):
    make_user("alice@example.com")
    response = register(client, email="ALICE@example.com")
    assert response.status_code == 400
    assert "An account with this email already exists." in response.text
    assert users(app) == ["alice@example.com"]


def test_forms_without_csrf_token_are_refused(app, client, make_user):
    make_user()
    data = {"email": "bob@example.com", "password": PASSWORD, "confirm": PASSWORD}
    assert client.post("/register", data=data).status_code == 400
    assert users(app) == ["alice@example.com"]
    response = client.post("/login", data={"email": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 400
    assert "This form expired" in response.text
    assert client.get("/").status_code == 302  # Not logged in.


def test_login_and_logout(client, make_user):
    make_user()
    response = login(client)
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    token = csrf_token(client.get("/"))
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_logout_needs_csrf_and_post(client, make_user):
    make_user()
    login(client)
    assert client.post("/logout").status_code == 400
    assert client.get("/logout").status_code == 405
    assert client.get("/").status_code == 200


@pytest.mark.parametrize(
    ("email", "password"),
    [("alice@example.com", "wrong password"), ("nobody@example.com", PASSWORD)],
)
def test_bad_credentials_get_one_generic_message(client, make_user, email, password):
    make_user()
    response = login(client, email, password)
    assert response.status_code == 401
    assert "Invalid email or password." in response.text
    assert "nobody" not in response.text.replace('value="nobody@example.com"', "")


def test_login_page_requires_its_fields(client):
    response = submit_form(client, "/login", {"email": "", "password": ""})
    assert response.status_code == 400
    assert "This field is required." in response.text


def test_chat_page_sends_anonymous_users_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_login_starts_a_fresh_session(client, make_user):
    make_user()
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    login(client)
    with client.session_transaction() as session:
        assert "planted" not in session


def test_remember_me_sets_a_long_lived_cookie(client, make_user):
    make_user()
    submit_form(
        client, "/login", {"email": "alice@example.com", "password": PASSWORD, "remember": "y"}
    )
    cookie = client.get_cookie("remember_token")
    assert cookie is not None
    assert cookie.http_only


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/", "/"),
        ("/?room=general", "/?room=general"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("http:/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("evil.example", "/"),
        ("/%0d%0aSet-Cookie:x", "/%0d%0aSet-Cookie:x"),
        ("/\r\nLocation: https://evil.example", "/"),
    ],
)
def test_next_only_goes_to_paths_on_this_site(client, make_user, target, expected):
    make_user()
    token = csrf_token(client.get("/login"))
    response = client.post(
        "/login",
        query_string={"next": target},
        data={"email": "alice@example.com", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == expected


def test_logged_in_user_visiting_login_is_redirected(client, make_user):
    make_user()
    login(client)
    response = client.get("/login", query_string={"next": "https://evil.example"})
    assert response.headers["Location"] == "/"


def test_bumping_session_version_ends_sessions(app, client, make_user):
    user_id = make_user()[0]
    login(client)
    with app.app_context():
        db.session.get(User, user_id).session_version += 1
        db.session.commit()
    assert client.get("/").status_code == 302


def test_logout_revokes_socket_tokens_but_not_other_sessions(app, make_user):
    make_user()
    laptop, phone = app.test_client(), app.test_client()
    login(laptop)
    login(phone)
    token = laptop.get("/api/token").json["token"]
    laptop.post("/logout", data={"csrf_token": csrf_token(laptop.get("/"))})
    with app.app_context(), pytest.raises(TokenError):
        verify_token(token)
    fresh = phone.get("/api/token")
    assert fresh.status_code == 200
    with app.app_context():
        assert verify_token(fresh.json["token"]).email == "alice@example.com"


def test_pages_carry_security_headers(client):
    response = client.get("/login")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_chat_page_embeds_a_token_and_is_not_cached(client, make_user):
    make_user()
    login(client)
    response = client.get("/")
    assert response.headers["Cache-Control"] == "no-store"
    assert 'data-token="' in response.text
    # No inline script: the token is a data attribute, the strings are JSON data (never run),
    # and the one script has a src.
    assert re.findall(r"<script\b[^>]*>", response.text) == [
        '<script type="application/json" id="chat-i18n">',
        '<script type="module" src="/static/chat.js">',
    ]


def test_create_user_command(app, runner):
    result = runner.invoke(args=["create-user", "Carol@Example.com", "--password", PASSWORD])
    assert result.exit_code == 0, result.output
    assert "Created user carol" in result.output
    assert users(app) == ["carol@example.com"]


def test_create_user_command_prompts_for_the_password(app, runner):
    result = runner.invoke(
        args=["create-user", "dave@example.com"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert User.by_email("dave@example.com").check_password(PASSWORD)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["create-user", "bad", "--password", PASSWORD], "@-sign"),
        (["create-user", "eve@example.com", "--password", "short"], "at least 8"),
    ],
)
def test_create_user_command_validates(app, runner, args, error):
    result = runner.invoke(args=args)
    assert result.exit_code != 0
    assert error in result.output
    assert users(app) == []


def test_create_user_command_refuses_duplicates(app, runner, make_user):
    make_user("carol@example.com")
    result = runner.invoke(args=["create-user", "carol@example.com", "--password", PASSWORD])
    assert result.exit_code != 0
    assert "already exists" in result.output


def test_init_db_migrates_an_empty_database_and_keeps_data(app_config, make_app):
    fresh = make_app(app_config)  # Without the ``app`` fixture: an empty database.
    runner = fresh.test_cli_runner()
    assert "Database ready." in runner.invoke(args=["init-db"]).output
    runner.invoke(args=["create-user", "zoe@example.com", "--password", PASSWORD])
    result = runner.invoke(args=["init-db"])  # Again: nothing to do, nothing lost.
    assert result.exit_code == 0, result.output
    assert users(fresh) == ["zoe@example.com"]
    # The migrations describe exactly the models: no drift for `flask db migrate` to find.
    check = runner.invoke(args=["db", "check"])
    assert check.exit_code == 0, check.output
