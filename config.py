"""Settings: defaults here, overridden by ``instance/config.py``, the environment, tests."""

import os
import re
import secrets
import tempfile
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

# Settings the environment may override. The type of each default decides how its value is parsed.
ENV_KEYS = ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "DATABASE_URL", "REDIS_URL")
ENV_PREFIX = "CHAT_"
MIN_SECRET_KEY_LENGTH = 32

# What ``_parse_like`` makes of an environment variable.
EnvValue = str | bool | int | float | tuple[str, ...]


class Config:
    """Defaults for every environment; each ``CHAT_*`` key may be set in the environment."""

    SECRET_KEY: str | None = None
    # Old keys still accepted for signatures (sessions, tokens) while a new SECRET_KEY rolls out.
    SECRET_KEY_FALLBACKS: tuple[str, ...] = ()
    DATABASE_URL: str | None = None  # None means SQLite in the instance folder.
    # Set it to run several workers or hosts: they share events, presence and rate limits.
    REDIS_URL: str | None = None

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_TIME_LIMIT: int | None = None  # The CSRF token lives as long as the session.

    CHAT_ENV = "development"
    # Proxies in front that set X-Forwarded-For/-Proto/-Host (1 behind nginx); 0 trusts none.
    CHAT_PROXY_HOPS = 0
    # Other exact origins (scheme://host[:port]) whose pages may open the socket.
    CHAT_ALLOWED_ORIGINS: tuple[str, ...] = ()
    CHAT_LOG_LEVEL = "INFO"
    # "text" (readable, the default) or "json": one JSON object per line, for log shippers.
    CHAT_LOG_FORMAT = "text"
    # GET /metrics (Prometheus text format) is served only when on, and only to these addresses
    # or networks (CIDR), checked against the connecting peer and any forwarded client address.
    CHAT_METRICS = False
    CHAT_METRICS_ALLOW: tuple[str, ...] = ("127.0.0.1", "::1")
    CHAT_TOKEN_MAX_AGE = 900
    CHAT_TOKEN_SALT = "chat-websocket-token"  # noqa: S105 - a namespace, not a secret
    CHAT_MAX_MESSAGE_CHARS = 2000
    CHAT_MAX_FRAME_BYTES = 64 * 1024
    CHAT_PING_INTERVAL = 25
    CHAT_HISTORY_SIZE = 50
    CHAT_RESUME_LIMIT = 500  # messages replayed in all on a resume, before rooms are reset
    CHAT_EDIT_WINDOW = 0  # seconds after posting during which a message may be edited; 0: always
    CHAT_RESUME_WAIT = 10  # seconds a socket opened with ?resume=1 waits for its resume frame
    CHAT_TYPING_INTERVAL = 2
    CHAT_TYPING_TTL = 6
    CHAT_SEND_QUEUE_SIZE = 1024
    # Seconds between presence batches: arrivals and departures within one go out as one frame
    # per room, so a storm of connections costs frames in proportion to its length, not n².
    CHAT_PRESENCE_BATCH = 0.25
    # People listed online per room in ``hello`` and ``room`` frames (the first by name; the
    # count says how many in all, ``who`` asks for everyone): a greeting's size must not grow
    # with the number of people online, or a storm of n greetings costs n².
    CHAT_ONLINE_LISTED = 100
    CHAT_MIN_PASSWORD_LENGTH = 8
    # Werkzeug method string; scrypt at OWASP's recommended cost (N=2^17, r=8, p=1: 128 MiB).
    CHAT_PASSWORD_HASH = "scrypt:131072:8:1"  # noqa: S105 - a hashing method, not a password
    # Flood control, per user for messages and per socket for every frame (token buckets).
    CHAT_MESSAGE_BURST = 10
    CHAT_MESSAGE_RATE = 2.0  # messages per second, sustained
    CHAT_FRAME_BURST = 60
    CHAT_FRAME_RATE = 20.0  # frames per second, sustained
    CHAT_FLOOD_STRIKES = 20  # refused frames in a burst before the socket is closed with 4029
    CHAT_MAX_SOCKETS_PER_USER = 20
    # Sockets one worker serves at once; past it the upgrade gets 503 (each needs a file
    # descriptor: keep it under ``ulimit -n``, see docs/deploy.md).
    CHAT_MAX_SOCKETS = 10_000
    # Threads per worker for the commands of all its sockets (history, rooms, read markers: they
    # wait on the database); chat messages are handled by the worker's epoll thread (poller.py).
    CHAT_SERVE_THREADS = 16
    # With REDIS_URL: the prefix of every Redis key and channel, so that several chats can share
    # one Redis; how often a worker proves it is alive, and after how long without a beat its
    # users count as offline.
    CHAT_REDIS_PREFIX = "chat"
    CHAT_PRESENCE_HEARTBEAT = 5
    CHAT_PRESENCE_TTL = 15
    # Files (README "Files", docs/deploy.md "Files"). A folder under instance/ unless
    # CHAT_S3_BUCKET is set; "" means instance/uploads.
    CHAT_UPLOAD_DIR = ""
    CHAT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
    CHAT_UPLOAD_QUOTA_BYTES = 1024 * 1024 * 1024  # per person, every file they keep; 0: none
    CHAT_MAX_IMAGE_PIXELS = 50_000_000  # all frames of an animation together
    CHAT_MAX_AVATAR_BYTES = 5 * 1024 * 1024  # an uploaded profile picture, before it is cropped
    CHAT_MAX_ATTACHMENTS = 10  # files in one message
    CHAT_UPLOAD_TTL = 86_400  # seconds an upload that was never posted is kept
    CHAT_UPLOAD_LIMIT = "60 per minute"  # uploads per person (Flask-Limiter syntax)
    # Behind nginx with the local folder: the internal location that serves it
    # (X-Accel-Redirect), e.g. "/_uploads/"; "" streams files from the app.
    CHAT_UPLOAD_ACCEL = ""
    # S3-compatible object storage: the bucket, and the endpoint for anything but AWS itself.
    # Credentials come the usual boto3 ways (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, …).
    CHAT_S3_BUCKET = ""
    CHAT_S3_ENDPOINT_URL = ""
    CHAT_S3_REGION = "us-east-1"
    CHAT_S3_PREFIX = "uploads/"
    # Seconds a presigned URL is valid when the app redirects to the store; 0: the app streams
    # every file itself (no store address reaches the browser, nothing to add to the CSP).
    CHAT_S3_PRESIGN_TTL = 0
    # Who may make an account: "open" (anyone who reaches the server), "invite" (only through
    # an invitation link) or "closed" (administrators make them). The admin page's choice wins.
    CHAT_REGISTRATION = "open"
    CHAT_RESET_MAX_AGE = 86_400  # seconds a password-reset link from the admin page is valid
    # Login and token requests, per client address and per email (Flask-Limiter syntax).
    CHAT_LOGIN_LIMIT_PER_IP = "30 per minute"
    CHAT_LOGIN_LIMIT_PER_EMAIL = "10 per minute"
    # Mail (README "Configuration", docs/deploy.md "Mail"); "" sends none and hides "Forgot
    # password?". smtp://[user:password@]host[:port] (STARTTLS when the server offers it, never
    # with ?starttls=no) or smtps://… (TLS from the first byte); ?timeout=<seconds>, 10.
    CHAT_SMTP_URL = ""
    CHAT_MAIL_FROM = ""  # "" means chat@ the host of CHAT_PUBLIC_URL, else of the SMTP server.
    # The address people open the chat at (https://chat.example.com), for the links mail holds;
    # without it, the request's own (a forged Host header could then mislead a link: production
    # with mail requires it).
    CHAT_PUBLIC_URL = ""
    CHAT_FORGOT_MAX_AGE = 3600  # seconds a "forgot password" link sent by mail is valid
    # What the server fetches for people (link previews, outgoing webhooks) never goes to a
    # loopback, private, link-local or metadata address (``net.guard``). Tests alone turn this on
    # to reach their servers on 127.0.0.1; production refuses to start with it.
    CHAT_FETCH_ALLOW_LOOPBACK = False
    # "Forgot password?" requests, per client address and per email: each may send a mail.
    CHAT_FORGOT_LIMIT_PER_IP = "20 per hour"
    CHAT_FORGOT_LIMIT_PER_EMAIL = "5 per hour"
    # The digest mailed by ``flask send-digests`` (accounts/digest.py): the missed mentions and
    # direct messages at least this many seconds old, of people quiet that long; at most this many
    # listed (then "and N more").
    CHAT_DIGEST_QUIET = 3600
    CHAT_DIGEST_MAX = 20
    # Link previews: the first link of a message gets a card from its page's OpenGraph tags,
    # fetched by the server (at most this many bytes of HTML, within this many seconds).
    CHAT_PREVIEWS = True
    CHAT_PREVIEW_MAX_BYTES = 1024 * 1024
    CHAT_PREVIEW_TIMEOUT = 5.0
    # Web Push (README "Web Push"): who the push services may contact (mailto: or https://; ""
    # means mailto:CHAT_MAIL_FROM, else mailto:admin@localhost), the VAPID private key's file
    # ("" means instance/vapid_private.pem, made once: every host must share it), seconds a push
    # service has to answer, seconds it keeps a push for an offline browser, sender threads per
    # worker, and batches of messages waiting to be pushed (tests reach their push service on
    # 127.0.0.1 with CHAT_FETCH_ALLOW_LOOPBACK).
    CHAT_VAPID_SUBJECT = ""
    CHAT_VAPID_KEY_FILE = ""
    CHAT_PUSH_TIMEOUT = 5.0
    CHAT_PUSH_TTL = 3600
    CHAT_PUSH_SENDERS = 4
    CHAT_PUSH_QUEUE_SIZE = 1000
    # Bots' outgoing webhooks (README "Bots"): seconds a call may take in all, the threads that
    # make calls, and the calls (and batches of messages) that may wait before more are dropped.
    CHAT_WEBHOOK_TIMEOUT = 7.0
    CHAT_WEBHOOK_WORKERS = 4
    CHAT_WEBHOOK_QUEUE = 1000


SMTP_URL_FORMS = "smtp://[user:password@]host[:port] or smtps://[user:password@]host[:port]"
SMTP_PORTS = {"smtp": 25, "smtps": 465}
SMTP_TIMEOUT = 10.0


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send mail, read from ``CHAT_SMTP_URL``."""

    host: str
    port: int
    implicit_tls: bool  # smtps://: TLS from the first byte.
    starttls: bool  # smtp://: upgrade when the server offers it (False with ?starttls=no).
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = SMTP_TIMEOUT


def smtp_settings(url: str) -> SmtpSettings:
    """Parse ``CHAT_SMTP_URL``; raise ValueError with a reason (never the URL, which may hold
    a password)."""
    parts = urlsplit(url)
    if parts.scheme not in SMTP_PORTS:
        raise ValueError("the scheme must be smtp or smtps")
    try:
        port = SMTP_PORTS[parts.scheme] if parts.port is None else parts.port
    except ValueError:  # Not a number, or out of range.
        port = 0
    if not port:
        raise ValueError("the port must be a number from 1 to 65535")
    if not parts.hostname:
        raise ValueError("it names no host")
    if parts.path not in {"", "/"} or parts.fragment:
        raise ValueError("it has a path; only ?starttls=no and ?timeout=<seconds> may follow")
    if parts.password is not None and not parts.username:
        raise ValueError("a password needs a user name")
    options = _smtp_options(parts.query, parts.scheme)
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        implicit_tls=parts.scheme == "smtps",
        starttls=parts.scheme == "smtp" and options.get("starttls", "yes") == "yes",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        timeout=float(options.get("timeout", SMTP_TIMEOUT)),
    )


def _smtp_options(query: str, scheme: str) -> dict[str, str]:
    """The options after ``?``: ``starttls=yes|no`` (smtp:// only), ``timeout=<seconds>``."""
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = options.keys() - {"starttls", "timeout"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r}")
    if options.get("starttls", "yes") not in {"yes", "no"} or (
        "starttls" in options and scheme != "smtp"
    ):
        raise ValueError("starttls is yes or no, and only for smtp://")
    try:
        timeout = float(options.get("timeout", SMTP_TIMEOUT))
    except ValueError:
        timeout = 0
    if not 0 < timeout <= 300:
        raise ValueError("timeout is a number of seconds, above 0 and at most 300")
    return options


def load_environment(
    config: MutableMapping[str, Any], environ: Mapping[str, str] = os.environ
) -> None:
    """Override ``config`` with ``SECRET_KEY``, ``DATABASE_URL`` and ``CHAT_*`` from ``environ``."""
    for key, raw in environ.items():
        if key in ENV_KEYS or (key.startswith(ENV_PREFIX) and key in config):
            config[key] = _parse_like(config.get(key), raw, key)


def _parse_like(default: object, raw: str, key: str) -> EnvValue:
    """Parse ``raw`` to the type of ``default``: bool, int, float, list (comma-separated), str."""
    if isinstance(default, tuple | list):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if isinstance(default, bool):
        if raw.lower() not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
            raise ValueError(f"{key} must be a boolean, got {raw!r}")
        return raw.lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{key} must be an integer, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{key} must be a number, got {raw!r}") from None
    return raw


def finalize(config: MutableMapping[str, Any], instance_path: str) -> None:
    """Fill in derived settings and refuse to run production on an unsafe configuration."""
    if config["CHAT_ENV"] not in {"development", "production"}:
        raise RuntimeError("CHAT_ENV must be 'development' or 'production'")
    production = config["CHAT_ENV"] == "production"
    if config["CHAT_LOG_FORMAT"] not in {"text", "json"}:
        raise RuntimeError("CHAT_LOG_FORMAT must be 'text' or 'json'")
    if config["CHAT_REGISTRATION"] not in {"open", "invite", "closed"}:
        raise RuntimeError("CHAT_REGISTRATION must be 'open', 'invite' or 'closed'")
    if config["CHAT_SEND_QUEUE_SIZE"] <= config["CHAT_RESUME_LIMIT"] + 200:
        # A resume queues up to CHAT_RESUME_LIMIT messages plus a frame per room (200 at most).
        raise RuntimeError("CHAT_SEND_QUEUE_SIZE must exceed CHAT_RESUME_LIMIT + 200")
    if config["CHAT_ONLINE_LISTED"] < 1:
        raise RuntimeError("CHAT_ONLINE_LISTED must be 1 or more")
    if (
        min(config["CHAT_MESSAGE_RATE"], config["CHAT_FRAME_RATE"], config["CHAT_PRESENCE_BATCH"])
        <= 0
    ):
        raise RuntimeError(
            "CHAT_MESSAGE_RATE, CHAT_FRAME_RATE and CHAT_PRESENCE_BATCH must be above 0"
        )
    if config["CHAT_PRESENCE_TTL"] < 2 * config["CHAT_PRESENCE_HEARTBEAT"]:
        # One late heartbeat must not bury a live worker and announce all its users as gone.
        raise RuntimeError("CHAT_PRESENCE_TTL must be at least twice CHAT_PRESENCE_HEARTBEAT")
    _check_mail(config, production)
    if config["CHAT_DIGEST_QUIET"] < 0 or config["CHAT_DIGEST_MAX"] < 1:
        raise RuntimeError("CHAT_DIGEST_QUIET must be at least 0 and CHAT_DIGEST_MAX at least 1")
    if not config["CHAT_S3_BUCKET"] and not config["CHAT_UPLOAD_DIR"]:
        config["CHAT_UPLOAD_DIR"] = str(Path(instance_path) / "uploads")
    if production and config["CHAT_FETCH_ALLOW_LOOPBACK"]:
        raise RuntimeError("CHAT_FETCH_ALLOW_LOOPBACK is for tests: production never sets it")
    if production:
        _require_real_secret(config.get("SECRET_KEY"))
    elif not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = _development_secret(Path(instance_path))
    if production:
        config["SESSION_COOKIE_SECURE"] = config["REMEMBER_COOKIE_SECURE"] = True
    url = config.get("DATABASE_URL") or f"sqlite:///{Path(instance_path) / 'chat.db'}"
    # postgres:// and postgresql:// mean psycopg 3, the driver we ship (not SQLAlchemy's psycopg2).
    url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)
    config["SQLALCHEMY_DATABASE_URI"] = url
    # A server's connections go stale (restarts, idle timeouts): test each one as it leaves the
    # pool. A SQLite file's never do, and the test cost a query per message on the hot path.
    # hide_parameters: a failed statement's log line and exception never carry its values
    # (message text, password hashes).
    config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS",
        {"pool_pre_ping": not url.startswith("sqlite"), "hide_parameters": True},
    )
    # Rate-limit counters live in Redis when there is one, so every worker shares them.
    config.setdefault("RATELIMIT_STORAGE_URI", config.get("REDIS_URL") or "memory://")
    config.setdefault("RATELIMIT_HEADERS_ENABLED", True)


def _check_mail(config: MutableMapping[str, Any], production: bool) -> None:
    """Refuse a malformed ``CHAT_SMTP_URL``, ``CHAT_PUBLIC_URL`` or ``CHAT_MAIL_FROM``; fill in
    the sender's default."""
    public = config["CHAT_PUBLIC_URL"]
    parts = urlsplit(public)
    if public and (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or parts.path not in {"", "/"}
        or parts.query
        or parts.fragment
    ):
        raise RuntimeError(
            "CHAT_PUBLIC_URL must be scheme://host[:port], like https://chat.example"
        )
    if not config["CHAT_SMTP_URL"]:
        return
    try:
        smtp = smtp_settings(config["CHAT_SMTP_URL"])
    except ValueError as error:
        raise RuntimeError(f"CHAT_SMTP_URL must be {SMTP_URL_FORMS}: {error}") from None
    if production and not public:
        raise RuntimeError(
            "CHAT_SMTP_URL needs CHAT_PUBLIC_URL in production: the address links in mail lead to"
        )
    if not config["CHAT_MAIL_FROM"]:
        config["CHAT_MAIL_FROM"] = f"chat@{parts.hostname or smtp.host}"
    sender = config["CHAT_MAIL_FROM"]
    if "@" not in parseaddr(sender)[1] or any(char in sender for char in "\r\n"):
        raise RuntimeError("CHAT_MAIL_FROM must be an address, like chat@example.com")


def _require_real_secret(key: str | bytes | None) -> None:
    """Raise unless ``key`` is long enough to be a generated secret."""
    if not key or len(key) < MIN_SECRET_KEY_LENGTH:
        raise RuntimeError(
            f"CHAT_ENV=production needs SECRET_KEY of at least {MIN_SECRET_KEY_LENGTH} characters; "
            'generate one with: python -c "import secrets; print(secrets.token_hex(32))"'
        )


def _development_secret(instance_path: Path) -> str:
    """Read the development secret from the instance folder, creating it once."""
    path = instance_path / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    # Written aside, then linked into place: two workers starting together agree on one key.
    fd, tmp = tempfile.mkstemp(dir=instance_path)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(key)
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        os.unlink(tmp)
    return key
