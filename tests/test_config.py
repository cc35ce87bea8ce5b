"""Settings: layering, environment parsing, secrets."""

import re

import pytest

from app import create_app
from config import Config, SmtpSettings, _development_secret, load_environment, smtp_settings
from realtime.runtime import runtime_of


def make(tmp_path, **overrides):
    base = {"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    return create_app({**base, **overrides})


def test_environment_overrides_defaults_with_the_right_types():
    config = {key: getattr(Config, key) for key in dir(Config) if key.isupper()}
    load_environment(
        config,
        {
            "CHAT_TOKEN_MAX_AGE": "60",
            "CHAT_MAX_MESSAGE_CHARS": "500",
            "SECRET_KEY": "k" * 40,
            "SECRET_KEY_FALLBACKS": "old-1, old-2",
            "DATABASE_URL": "sqlite:////tmp/x.db",
            "CHAT_UNKNOWN": "ignored",
            "HOME": "/root",
        },
    )
    assert config["CHAT_TOKEN_MAX_AGE"] == 60
    assert config["CHAT_MAX_MESSAGE_CHARS"] == 500
    assert config["SECRET_KEY"] == "k" * 40
    assert config["SECRET_KEY_FALLBACKS"] == ("old-1", "old-2")
    assert config["DATABASE_URL"] == "sqlite:////tmp/x.db"
    assert "CHAT_UNKNOWN" not in config
    assert "HOME" not in config


def test_bad_integer_in_environment_is_a_clear_error():
    with pytest.raises(ValueError, match="CHAT_TOKEN_MAX_AGE must be an integer"):
        load_environment({"CHAT_TOKEN_MAX_AGE": 900}, {"CHAT_TOKEN_MAX_AGE": "soon"})


def test_rates_in_environment_may_be_fractional():
    config = {"CHAT_MESSAGE_RATE": 2.0}
    load_environment(config, {"CHAT_MESSAGE_RATE": "0.5"})
    assert config["CHAT_MESSAGE_RATE"] == 0.5
    with pytest.raises(ValueError, match="CHAT_MESSAGE_RATE must be a number"):
        load_environment(config, {"CHAT_MESSAGE_RATE": "fast"})


def test_presence_ttl_must_outlast_two_heartbeats(tmp_path):
    with pytest.raises(RuntimeError, match="CHAT_PRESENCE_TTL"):
        make(tmp_path, CHAT_PRESENCE_HEARTBEAT=5, CHAT_PRESENCE_TTL=9)


def test_environment_variables_reach_the_app(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAT_TOKEN_MAX_AGE", "120")
    assert make(tmp_path, SECRET_KEY="s" * 40).config["CHAT_TOKEN_MAX_AGE"] == 120


def test_development_generates_a_secret_once(tmp_path):
    first = _development_secret(tmp_path)
    assert len(first) == 64
    assert _development_secret(tmp_path) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_production_refuses_to_start_without_a_real_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        make(tmp_path, CHAT_ENV="production")
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        make(tmp_path, CHAT_ENV="production", SECRET_KEY="short")


def test_production_uses_secure_cookies(tmp_path):
    app = make(tmp_path, CHAT_ENV="production", SECRET_KEY="p" * 64)
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["REMEMBER_COOKIE_SECURE"] is True


def test_development_serves_plain_http_cookies(tmp_path):
    app = make(tmp_path, SECRET_KEY="d" * 40)
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True


def test_unknown_environment_name_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="CHAT_ENV"):
        make(tmp_path, CHAT_ENV="staging", SECRET_KEY="s" * 40)


def test_default_database_is_sqlite_in_the_instance_folder(tmp_path):
    app = create_app({"SECRET_KEY": "s" * 40})
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("instance/chat.db")


def test_apps_do_not_share_a_hub(tmp_path):
    first, second = make(tmp_path, SECRET_KEY="s" * 40), make(tmp_path, SECRET_KEY="s" * 40)
    assert runtime_of(first).hub is not runtime_of(second).hub


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://127.0.0.1", SmtpSettings("127.0.0.1", 25, implicit_tls=False, starttls=True)),
        (
            "smtp://me%40example.com:p%40ss%2Fword@mail.example.com:587",
            SmtpSettings(
                "mail.example.com", 587, False, True, "me@example.com", "p@ss/word", timeout=10
            ),
        ),
        ("smtps://mail.example.com", SmtpSettings("mail.example.com", 465, True, False)),
        (
            "smtp://localhost:2525?starttls=no&timeout=2.5",
            SmtpSettings("localhost", 2525, False, False, timeout=2.5),
        ),
    ],
)
def test_smtp_urls_name_the_server_the_login_and_tls(url, expected):
    assert smtp_settings(url) == expected
    assert "word" not in repr(smtp_settings(url))  # A settings' repr never shows the password.


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("smtp://:secret@mail.example.com", "a password needs a user name"),
        ("smtp://mail.example.com:70000", "the port must be a number"),
        ("smtp://mail.example.com/inbox", "it has a path"),
        ("smtp://mail.example.com?tls=1", "unknown option 'tls'"),
        ("smtps://mail.example.com?starttls=no", "only for smtp://"),
        ("smtp://mail.example.com?timeout=0", "timeout is a number of seconds"),
        ("smtp://", "it names no host"),
        ("imap://mail.example.com", "the scheme must be smtp or smtps"),
    ],
)
def test_malformed_smtp_urls_are_refused_with_a_reason(tmp_path, url, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        smtp_settings(url)
    with pytest.raises(
        RuntimeError, match=f"CHAT_SMTP_URL must be smtp://.*: .*{re.escape(reason)}"
    ):
        make(tmp_path, CHAT_SMTP_URL=url)


def test_the_mail_sender_defaults_to_the_public_host_else_the_smtp_host(tmp_path):
    public = make(tmp_path, CHAT_SMTP_URL="smtp://relay", CHAT_PUBLIC_URL="https://chat.example")
    assert public.config["CHAT_MAIL_FROM"] == "chat@chat.example"
    assert make(tmp_path, CHAT_SMTP_URL="smtp://relay").config["CHAT_MAIL_FROM"] == "chat@relay"
    named = make(tmp_path, CHAT_SMTP_URL="smtp://relay", CHAT_MAIL_FROM="Chat <c@example.com>")
    assert named.config["CHAT_MAIL_FROM"] == "Chat <c@example.com>"
    with pytest.raises(RuntimeError, match="CHAT_MAIL_FROM must be an address"):
        make(tmp_path, CHAT_SMTP_URL="smtp://relay", CHAT_MAIL_FROM="nobody")


def test_a_public_url_is_an_origin_and_production_mail_needs_one(tmp_path):
    with pytest.raises(RuntimeError, match="CHAT_PUBLIC_URL must be scheme://host"):
        make(tmp_path, CHAT_PUBLIC_URL="https://chat.example/app")
    with pytest.raises(RuntimeError, match="CHAT_SMTP_URL needs CHAT_PUBLIC_URL in production"):
        make(tmp_path, CHAT_ENV="production", SECRET_KEY="p" * 64, CHAT_SMTP_URL="smtp://relay")
    app = make(
        tmp_path,
        CHAT_ENV="production",
        SECRET_KEY="p" * 64,
        CHAT_SMTP_URL="smtp://relay",
        CHAT_PUBLIC_URL="https://chat.example",
    )
    assert app.config["CHAT_MAIL_FROM"] == "chat@chat.example"
