"""The profile's API tokens: made with a name and a scope, shown once, kept hashed, revoked; the
forms' refusals; and the section in Chromium (create, see once, reload: gone, revoke), axe-clean
in English and French."""

import hashlib
import json
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from accounts import api_tokens
from extensions import db
from helpers import Http, csrf_token, login, serious_violations, signed_up_in
from models import ApiToken, User

SECRET = re.compile(r'id="new-api-token" class="new-link" value="(chat_[A-Za-z0-9_-]{43})"')


def create(client, name="deploy", scope="write", **extra):
    """Post the section's form from the profile page; the response (not followed)."""
    token = csrf_token(client.get("/profile"))
    data = {"api_token-csrf_token": token, "api_token-name": name, "api_token-scope": scope}
    return client.post("/profile/tokens", data={**data, **extra})


def shown_secret(client):
    """The secret the profile page shows now, or None."""
    match = SECRET.search(client.get("/profile").text)
    return match.group(1) if match else None


def me(client, secret):
    return client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})


@pytest.fixture
def signed_in(client, alice):
    login(client)
    return client


# ---- The forms, without a browser -------------------------------------------------------------


@pytest.mark.database
def test_a_token_is_shown_once_and_only_its_hash_is_kept(app, signed_in):
    assert "You have no API tokens." in signed_in.get("/profile").text
    response = create(signed_in, "deploy bot", "write")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/profile#api-tokens")
    page = signed_in.get("/profile")
    assert page.headers["Cache-Control"] == "no-store"
    secret = SECRET.search(page.text).group(1)
    assert "will not be shown again" in page.text
    assert shown_secret(signed_in) is None  # Reloaded: gone.
    later = signed_in.get("/profile")
    assert "no-store" not in later.headers.get("Cache-Control", "")
    assert "deploy bot" in later.text
    assert "Read and write" in later.text
    with app.app_context():
        (row,) = db.session.scalars(select(ApiToken)).all()
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr(vars(row))
        assert (row.name, row.scope, row.revoked_at) == ("deploy bot", "write", None)
    assert me(signed_in, secret).json["scope"] == "write"


@pytest.mark.database
def test_a_read_token_is_read_only(signed_in):
    create(signed_in, "reader", "read")
    secret = shown_secret(signed_in)
    assert me(signed_in, secret).json["scope"] == "read"
    response = signed_in.post(
        "/api/v1/rooms/general/messages",
        json={"text": "hi"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 403
    assert response.json["error"] == "insufficient_scope"


@pytest.mark.parametrize(
    ("name", "scope", "error"),
    [
        ("", "read", "Give the token a name."),
        ("   ", "read", "Give the token a name."),
        ("x" * 65, "read", "A name is at most 64 characters."),
        ("bad\x1bname", "read", "A name cannot hold control characters."),
        ("fine", "admin", "Not a valid choice"),
        ("fine", "", "Not a valid choice"),
    ],
)
def test_bad_names_and_scopes_are_told_beside_the_form(app, signed_in, name, scope, error):
    response = create(signed_in, name, scope)
    assert response.status_code == 400
    assert error in response.text
    assert 'aria-invalid="true"' in response.text or 'role="alert"' in response.text
    assert 'id="new-api-token"' not in response.text
    with app.app_context():
        assert db.session.scalar(select(ApiToken.id)) is None


def test_a_name_is_trimmed_and_escaped(app, signed_in):
    create(signed_in, "  <b>bold</b>  ", "read")
    page = signed_in.get("/profile").text
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<b>bold</b>" not in page
    with app.app_context():
        assert db.session.scalar(select(ApiToken.name)) == "<b>bold</b>"


@pytest.mark.database
def test_twenty_live_tokens_at_most(app, signed_in, alice):
    with app.test_request_context():
        user = db.session.get(User, alice)
        for n in range(api_tokens.MAX_LIVE_TOKENS):
            api_tokens.create(user, f"t{n}", "read")
    response = create(signed_in, "one too many", "read")
    assert response.status_code == 400
    assert "You have 20 tokens: revoke one first." in response.text
    first = signed_in.get("/profile").text
    token_id = re.search(r'data-token-id="(\d+)"', first).group(1)
    revoke = signed_in.post(
        f"/profile/tokens/{token_id}/revoke",
        data={"csrf_token": csrf_token(signed_in.get("/profile"))},
    )
    assert revoke.status_code == 302
    assert create(signed_in, "room for one", "read").status_code == 302


def test_the_forms_need_their_csrf_token_and_a_session(client, signed_in):
    response = signed_in.post(
        "/profile/tokens", data={"api_token-name": "x", "api_token-scope": "read"}
    )
    assert response.status_code == 400
    signed_in.post("/logout", data={"csrf_token": csrf_token(signed_in.get("/profile"))})
    response = client.post("/profile/tokens", data={"api_token-name": "x"})
    assert response.status_code in {302, 400}
    assert client.get("/profile").status_code == 302  # Signed out: the login page.


@pytest.mark.database
def test_revoking_stops_the_token_at_once(app, signed_in):
    create(signed_in, "laptop", "write")
    secret = shown_secret(signed_in)
    assert me(signed_in, secret).status_code == 200
    page = signed_in.get("/profile")
    token_id = re.search(r'data-token-id="(\d+)"', page.text).group(1)
    without_csrf = signed_in.post(f"/profile/tokens/{token_id}/revoke")
    assert without_csrf.status_code == 400
    assert me(signed_in, secret).status_code == 200
    response = signed_in.post(
        f"/profile/tokens/{token_id}/revoke",
        data={"csrf_token": csrf_token(page)},
        follow_redirects=True,
    )
    assert "The token “laptop” was revoked." in response.text
    assert 'data-token-id="' not in response.text  # Revoked tokens are kept, not listed.
    assert me(signed_in, secret).json["error"] == "invalid_token"
    with app.app_context():
        assert db.session.scalar(select(ApiToken.revoked_at)) is not None


@pytest.mark.database
def test_nobody_revokes_someone_elses_token(app, client, alice, bob):
    with app.test_request_context():
        _row, secret = api_tokens.create(db.session.get(User, bob), "bobs", "read")
        token_id = _row.id
    login(client)
    page = client.get("/profile")
    assert "bobs" not in page.text
    response = client.post(
        f"/profile/tokens/{token_id}/revoke",
        data={"csrf_token": csrf_token(page)},
        follow_redirects=True,
    )
    assert "There is no such token" in response.text
    assert me(client, secret).status_code == 200


# ---- In Chromium ------------------------------------------------------------------------------


def api_me(app, live_server, secret):
    """``(status, body)`` of ``GET /api/v1/me`` on the live server."""
    headers = {"Authorization": f"Bearer {secret}"}
    status, _headers, body = Http(app, live_server, None).request(
        "GET", "/api/v1/me", None, headers
    )
    return status, json.loads(body)


@pytest.mark.browser
@pytest.mark.parametrize(("theme", "locale"), [("light", "en-US"), ("dark", "fr-FR")])
def test_create_see_once_reload_and_revoke_in_the_page(app, browser, live_server, theme, locale):
    person = signed_up_in(browser, f"http://{live_server}", "maker@example.com", theme, locale)
    person.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = person.page
    page.goto("/profile")
    expect(page.locator("#api-token-none")).to_be_visible()
    assert serious_violations(page) == []
    page.locator("#api_token-submit").click()  # No name: told beside the field.
    expect(page.locator("#api_token-name-error")).to_be_visible()
    assert serious_violations(page) == []
    page.locator("#api_token-name").fill("deploy bot")
    page.locator("#api_token-scope-1").check()
    page.locator("#api_token-submit").click()
    shown = page.locator("#new-api-token")
    expect(shown).to_be_visible()
    secret = shown.input_value()
    assert re.fullmatch(r"chat_[A-Za-z0-9_-]{43}", secret)
    page.locator("#copy-api-token").click()
    expect(page.locator("#copy-api-token-status")).not_to_be_empty()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert serious_violations(page) == []
    person.screenshot(f"profile-api-token-{theme}-{locale}")
    assert api_me(app, live_server, secret)[1]["scope"] == "write"
    page.reload()
    expect(page.locator("#api-token-list")).to_contain_text("deploy bot")
    expect(page.locator("#new-api-token")).to_have_count(0)
    assert secret not in page.content()
    page.locator("#api-token-list tbody tr button").click()
    expect(page.locator(".flash")).to_contain_text("deploy bot")
    expect(page.locator("#api-token-none")).to_be_visible()
    status, body = api_me(app, live_server, secret)
    assert (status, body["error"]) == (401, "invalid_token")
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    assert serious_violations(page) == []
    # The refused form answered 400, as every form's refusal does; nothing else went wrong.
    assert [problem for problem in person.problems if "status of 400" not in problem] == []
    person.context.close()
