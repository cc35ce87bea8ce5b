"""Socket tokens: signed, salted, short-lived, revocable."""

import string

import pytest

from accounts.tokens import TokenError, issue_token, verify_token
from extensions import db
from helpers import login, token_issued_at
from models import User

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.


@pytest.fixture
def user_id(make_user):
    return make_user()[0]


def verify(app, token):
    with app.app_context():
        return verify_token(token).id


def refused(app, token):
    with app.app_context(), pytest.raises(TokenError) as caught:
        verify_token(token)
    return caught.value.code


def test_issued_token_verifies(app, user_id):
    with app.app_context():
        token = issue_token(db.session.get(User, user_id))
    assert verify(app, token) == user_id


def test_token_just_inside_max_age_verifies(app, user_id):
    token = token_issued_at(app, user_id, seconds_ago=app.config["CHAT_TOKEN_MAX_AGE"] - 5)
    assert verify(app, token) == user_id


def test_expired_token(app, user_id):
    token = token_issued_at(app, user_id, seconds_ago=app.config["CHAT_TOKEN_MAX_AGE"] + 1)
    assert refused(app, token) == "expired_token"


def test_max_age_setting_is_enforced(app, user_id):
    app.config["CHAT_TOKEN_MAX_AGE"] = 10
    assert refused(app, token_issued_at(app, user_id, seconds_ago=60)) == "expired_token"


BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


@pytest.mark.parametrize("where", [0, 10, -1])
def test_tampered_token(app, user_id, where):
    token = token_issued_at(app, user_id)
    # Flip the highest of the character's six bits: the last one's lowest bits are only padding.
    flipped = BASE64URL[BASE64URL.index(token[where]) ^ 0b100000]
    tampered = token[:where] + flipped + (token[where + 1 :] if where != -1 else "")
    assert refused(app, tampered) == "invalid_token"


def test_garbage_token(app):
    assert refused(app, "garbage") == "invalid_token"


def test_token_with_another_salt(app, user_id):
    assert refused(app, token_issued_at(app, user_id, salt="password-reset")) == "invalid_token"


def test_session_cookie_signature_is_not_a_token(app, client, user_id):
    login(client)
    cookie = client.get_cookie("session").value
    assert refused(app, cookie) == "invalid_token"


def test_bumped_version_revokes_older_tokens(app, user_id):
    token = token_issued_at(app, user_id, version=0)
    with app.app_context():
        db.session.get(User, user_id).token_version += 1
        db.session.commit()
    assert refused(app, token) == "invalid_token"
    assert verify(app, token_issued_at(app, user_id, version=1)) == user_id


def test_deleted_user(app, user_id):
    token = token_issued_at(app, user_id)
    with app.app_context():
        db.session.delete(db.session.get(User, user_id))
        db.session.commit()
    assert refused(app, token) == "invalid_token"


def test_token_signed_with_a_fallback_key_still_verifies(app, user_id):
    old = token_issued_at(app, user_id)
    app.config["SECRET_KEY_FALLBACKS"] = (app.config["SECRET_KEY"],)
    app.config["SECRET_KEY"] = "a-brand-new-secret-key-for-rotation-0123456789"
    assert verify(app, old) == user_id
    app.config["SECRET_KEY_FALLBACKS"] = ()
    assert refused(app, old) == "invalid_token"
