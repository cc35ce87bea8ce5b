"""``/api/token``: credentials in, token out; a session gets a fresh token."""

import pytest

from accounts.tokens import verify_token
from helpers import PASSWORD, login


@pytest.fixture
def user_id(make_user):
    return make_user()[0]


def test_json_credentials_get_a_token(app, client, user_id):
    response = client.post("/api/token", json={"email": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json["expires_in"] == 900
    assert response.headers["Cache-Control"] == "no-store"
    with app.app_context():
        assert verify_token(response.json["token"]).id == user_id


def test_form_credentials_get_a_token(client, user_id):
    response = client.post("/api/token", data={"email": "ALICE@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json["token"]


@pytest.mark.parametrize(
    "body",
    [
        {"email": "alice@example.com", "password": "wrong"},
        {"email": "nobody@example.com", "password": PASSWORD},
    ],
)
def test_bad_credentials_are_401(client, user_id, body):
    response = client.post("/api/token", json=body)
    assert response.status_code == 401
    assert response.json["error"] == "invalid_credentials"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"email": "alice@example.com"}},
        {"json": {"email": 5, "password": PASSWORD}},
        {"json": ["alice@example.com", PASSWORD]},
        {"json": "alice"},
        {"data": "{not json", "content_type": "application/json"},
        {"data": {}},
        {"json": {"email": "a" * 300 + "@example.com", "password": PASSWORD}},
        {
            "data": '{"email": "\\ud800@example.com", "password": "x"}',
            "content_type": "application/json",
        },
    ],
    ids=[
        "missing",
        "wrong-type",
        "array",
        "string",
        "malformed",
        "empty-form",
        "too-long",
        "surrogate",
    ],
)
def test_malformed_requests_are_400(client, user_id, kwargs):
    response = client.post("/api/token", **kwargs)
    assert response.status_code == 400
    assert response.json["error"] == "bad_request"


def test_session_gets_a_fresh_token(app, client, user_id):
    login(client)
    response = client.get("/api/token")
    assert response.status_code == 200
    with app.app_context():
        assert verify_token(response.json["token"]).id == user_id


def test_no_session_is_401_json(client):
    response = client.get("/api/token")
    assert response.status_code == 401
    assert response.json["error"] == "unauthenticated"


def test_unknown_api_path_is_json_404(client):
    response = client.get("/api/nothing")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"


def test_a_script_asking_for_json_gets_json_errors_anywhere(client):
    asked = client.get("/nowhere", headers={"Accept": "application/json"})
    assert asked.status_code == 404
    assert asked.json["error"] == "not_found"
    browser = client.get(
        "/nowhere", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert browser.status_code == 404
    assert browser.mimetype == "text/html"


def test_wrong_method_is_json_405(client):
    response = client.delete("/api/token")
    assert response.status_code == 405
    assert response.json["error"] == "method_not_allowed"
