"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (it can serve: send it clients).

Neither touches the session or loads a user, neither is rate-limited, neither is cached. A
failed check is named, never explained: an exception's text can hold a URL with a password.
"""

import logging
from collections.abc import Mapping

import redis
from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from extensions import db, limiter
from realtime.runtime import runtime_of

log = logging.getLogger(__name__)

REDIS_KEY = "chat_health_redis"
PROBE_TIMEOUT = 1.0  # seconds a Redis ping may take, to connect and to answer
STATEMENT_TIMEOUT_MS = 1000  # PostgreSQL: how long ``SELECT 1`` may run
BACKPLANE_WAIT = 0.5  # seconds a runtime that was just started gets to subscribe

bp = Blueprint("health", __name__)
limiter.exempt(bp)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is alive and serving HTTP; nothing else is looked at."""
    return _answer({"status": "ok"}, 200)


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Every dependency answers and the worker takes clients: 200, else 503 naming the failures."""
    checks = {"database": _check_database(), "redis": _check_redis()}
    runtime = runtime_of(current_app)
    # Under ``flask run`` nothing else starts the runtime before the first socket, which a load
    # balancer sends only once this says ready (docs/decisions.md, "Operable").
    runtime.start()
    if checks["redis"] == "ok":
        runtime.hub.ready(wait=BACKPLANE_WAIT)
    checks.update({name: _status(ok) for name, ok in runtime.health().items()})
    ready = all(result in {"ok", "not configured"} for result in checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return _answer(body, 200 if ready else 503)


def _check_database() -> str:
    """``SELECT 1`` through the app's engine (and its pool)."""
    try:
        with db.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # SET LOCAL ends with the transaction, which closing the connection rolls back.
                connection.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        log.warning("readiness: the database does not answer (%s)", type(error).__name__)
        return "failed"
    return "ok"


def _check_redis() -> str:
    """``PING`` with the probe's own client, when ``REDIS_URL`` is set."""
    client: redis.Redis | None = current_app.extensions[REDIS_KEY]
    if client is None:
        return "not configured"
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        log.warning("readiness: Redis does not answer (%s)", type(error).__name__)
        return "failed"
    return "ok"


def _status(ok: bool) -> str:
    """A check's result as the body shows it."""
    return "ok" if ok else "failed"


def _answer(body: Mapping[str, object], status: int) -> ResponseReturnValue:
    """``body`` as JSON, never stored by a cache or a proxy."""
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _probe_client(url: str | None) -> redis.Redis | None:
    """A small Redis client of the probe's own: short timeouts, no retries (it only pings)."""
    if not url:
        return None
    return redis.Redis.from_url(
        url,
        socket_timeout=PROBE_TIMEOUT,
        socket_connect_timeout=PROBE_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


def init_app(app: Flask) -> None:
    """Register ``/healthz`` and ``/readyz``; the Redis client connects on the first probe."""
    app.extensions[REDIS_KEY] = _probe_client(app.config.get("REDIS_URL"))
    app.register_blueprint(bp)
