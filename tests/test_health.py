"""``/healthz`` and ``/readyz``: what each checks, what each leaves alone, and a stopping worker."""

import json
import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest
from flask import g
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from helpers import ROOT, free_port, login, token_issued_at, wait_until
from realtime.runtime import runtime_of

READY = {
    "status": "ready",
    "checks": {"database": "ok", "redis": "not configured", "backplane": "ok", "worker": "ok"},
}


def assert_probe_headers(response):
    """No cookie is set and no cache keeps the answer."""
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json"


def closed_port_config(app_config, **changes):
    """``app_config`` with ``changes``; ``{port}`` in a value becomes a port nothing listens on."""
    port = free_port()
    return {**app_config, **{key: value.format(port=port) for key, value in changes.items()}}


def test_healthz_answers_ok_and_touches_neither_session_nor_user(app, client, alice):
    login(client)
    with client:  # The request's context is kept for a look at g afterwards.
        response = client.get("/healthz")
        assert "chat_user_id" not in g  # The user loader never ran.
    assert response.status_code == 200
    assert response.json == {"status": "ok"}
    assert_probe_headers(response)


def test_healthz_answers_ok_without_a_database(app_config, make_app):
    app = make_app(closed_port_config(app_config, DATABASE_URL="postgresql://u@127.0.0.1:{port}/x"))
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


@pytest.mark.database
def test_readyz_answers_ready_when_everything_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == READY
    assert_probe_headers(response)


def test_readyz_starts_the_runtime_and_waits_for_the_backplane(app_config, make_app, redis_url):
    app = make_app({**app_config, "REDIS_URL": redis_url})
    client = app.test_client()
    assert not runtime_of(app).hub.ready()  # Nothing started it: no socket, no gunicorn hook.
    wait_until(lambda: client.get("/readyz").status_code == 200, "readiness with Redis")
    response = client.get("/readyz")
    assert response.json["checks"] == {**READY["checks"], "redis": "ok"}
    assert runtime_of(app).hub.ready()


def test_readyz_names_the_database_and_never_its_url(app_config, make_app):
    config = closed_port_config(
        app_config, DATABASE_URL="postgresql://chat:db-pass-123@127.0.0.1:{port}/chat"
    )
    response = make_app(config).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {
        "status": "unavailable",
        "checks": {**READY["checks"], "database": "failed"},
    }
    assert "db-pass-123" not in response.text
    assert_probe_headers(response)


def test_readyz_names_redis_and_the_backplane_when_redis_is_down(app_config, make_app):
    config = closed_port_config(app_config, REDIS_URL="redis://:redis-pass-123@127.0.0.1:{port}/0")
    response = make_app(config).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {
        "status": "unavailable",
        "checks": {**READY["checks"], "redis": "failed", "backplane": "failed"},
    }
    assert "redis-pass-123" not in response.text


def test_readyz_names_the_worker_once_its_sockets_are_being_closed(app, client):
    assert client.get("/readyz").status_code == 200
    runtime_of(app).close_sockets()  # What gunicorn's SIGTERM handler does.
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {**READY["checks"], "worker": "failed"}


def test_probes_are_not_rate_limited(app_config):
    """In a process of its own: Flask-Limiter keeps a default limit for every later app."""
    script = (
        "from app import create_app\n"
        f"config = {{**{app_config!r}, 'RATELIMIT_DEFAULT': '1 per hour'}}\n"
        "app = create_app(config)\n"
        "from extensions import db\n"
        "with app.app_context(): db.create_all()  # The login page reads the settings table.\n"
        "client = app.test_client()\n"
        "paths = ['/login', '/login'] + ['/healthz', '/readyz'] * 3\n"
        "print([client.get(path).status_code for path in paths])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    # The default limit is on (the second /login is refused); the probes are exempt.
    assert run.stdout.strip().splitlines()[-1] == str([200, 429] + [200, 200] * 3)


def test_a_gunicorn_worker_told_to_stop_says_unavailable_until_it_exits(
    app, gunicorn_server, alice
):
    """A request already accepted when SIGTERM arrives is answered 503 (``worker``).

    A stopping gthread worker accepts no new connection, so the probe is sent in two parts: its
    headers but the last line before the signal (the worker is reading it), the rest after the
    worker's SIGTERM handler ran, which the 1001 close of an open socket proves.
    """
    host = gunicorn_server.url.removeprefix("http://")
    token = token_issued_at(app, alice)
    (worker,) = gunicorn_server.worker_pids()
    with (
        connect(f"ws://{host}/ws?token={token}", open_timeout=5) as ws,
        socket.create_connection(("127.0.0.1", gunicorn_server.port), timeout=5) as probe,
    ):
        ws.recv(timeout=5)  # hello
        probe.sendall(f"GET /readyz HTTP/1.1\r\nHost: {host}\r\n".encode())
        client_port = probe.getsockname()[1]
        wait_until(lambda: accepted_by(worker, client_port), "the worker to accept the probe")
        os.kill(worker, signal.SIGTERM)
        assert close_code(ws) == 1001
        probe.sendall(b"Connection: close\r\n\r\n")
        answer = read_all(probe)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert json.loads(body)["checks"]["worker"] == "failed"


def close_code(ws):
    """Read ``ws`` until the server closes it; its close code."""
    try:
        while True:
            ws.recv(timeout=5)
    except ConnectionClosed:
        return ws.close_code


def accepted_by(pid, client_port):
    """True once process ``pid`` holds the server end of the connection from ``client_port``."""
    return any(
        conn.raddr and conn.raddr.port == client_port
        for conn in psutil.Process(pid).net_connections(kind="tcp")
    )


def read_all(sock):
    """Everything ``sock`` receives until its peer closes."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
