"""Fixtures only: a fresh app and database per test, live servers, real clients and services.

What tests share besides fixtures (constants, clients, form helpers) is in ``helpers.py``."""

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from contextlib import ExitStack
from types import SimpleNamespace

import psutil
import pytest
from playwright.sync_api import sync_playwright
from websockets.sync.client import connect
from werkzeug.serving import make_server

import push
from app import create_app
from bots import outgoing
from extensions import db
from helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    POSTGRES,
    ROOT,
    SECRET_KEY,
    ChatClient,
    GunicornServer,
    free_port,
    missing,
    postgres_enabled,
    require_service,
    token_issued_at,
)
from models import User, ensure_general
from realtime.runtime import runtime_of

# Which tests run on PostgreSQL too. `make test` runs the whole suite on SQLite, then, with
# CHAT_TEST_DATABASE=postgresql, only the tests marked `database` (`pytest -m database`):
# those whose outcome depends on what the database engine does. They are the models and the
# migrations; how messages are stored (group commit, idempotent client ids, ids in order under
# concurrent writers, a table gone and back); history paging, read markers and resume; rooms and
# memberships; accounts, logins and sessions (unique and case-folded emails, session and token
# versions, login rows and their timestamps, cascading deletes, profile fields); and the
# scale-out tests, where processes share one database and its cross-process order lock (a
# PostgreSQL advisory lock, a file lock beside SQLite). A test that only needs a user in the
# database for something else (the protocol, the transport, origins, headers, rate limits, the
# page in a browser) runs on SQLite alone. Mark a new test `@pytest.mark.database` when it reads
# or writes rows in a way the two engines could disagree on (types, lengths, constraints,
# locking, transactions, ordering, time zones). The whole suite still runs on PostgreSQL with
# `CHAT_TEST_DATABASE=postgresql pytest`.

# Schemas of this run are named after its process id, so that a run cleans up after aborted
# runs without dropping those of another run going on at the same time.
SCHEMA_PREFIX = "chat_test_"


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on 127.0.0.1:5432 (fails in CI, skips elsewhere, when missing)."""
    import psycopg

    require_service("PostgreSQL", "127.0.0.1", 5432)
    with psycopg.connect(POSTGRES.replace("+psycopg", ""), autocommit=True) as connection:
        for (schema,) in connection.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'chat\\_test\\_%'"
        ).fetchall():
            owner = schema.removeprefix(SCHEMA_PREFIX).partition("_")[0]
            if owner.isdigit() and not psutil.pid_exists(int(owner)):
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')  # Left by an aborted run.
    return POSTGRES


@pytest.fixture
def database_url(request, tmp_path):
    """A fresh, empty database for one test: a SQLite file, or a PostgreSQL schema of its own."""
    if not postgres_enabled():
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def postgres_url(postgres):
    """A fresh, empty PostgreSQL schema for one test, whatever the run's database (a test module
    that needs PostgreSQL in every run overrides ``database_url`` with it)."""
    import psycopg

    schema = f"{SCHEMA_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{postgres}?options=-csearch_path%3D{schema}"
        admin.execute("SET lock_timeout = '5s'")
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def app_config(database_url, tmp_path):
    """Settings for the test app; tests may change them before ``app`` is built."""
    return {
        "TESTING": True,
        "CHAT_UPLOAD_DIR": str(tmp_path / "uploads"),
        "SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": database_url,
        # Cheap hashing keeps the suite fast; test_accounts checks the production default.
        "CHAT_PASSWORD_HASH": "scrypt:1024:8:1",
        # Tests send faster than people; the flood tests set their own limits.
        "CHAT_MESSAGE_BURST": 10_000,
        "CHAT_FRAME_BURST": 10_000,
        # Presence batches every 50 ms instead of 250: tests wait for them often.
        "CHAT_PRESENCE_BATCH": 0.05,
        # Links in test messages are never fetched (the internet); test_previews turns it on.
        "CHAT_PREVIEWS": False,
    }


@pytest.fixture
def make_app():
    """Create extra apps (``make_app(config)``); their database connections close at teardown."""
    apps = []

    def make(config):
        apps.append(create_app(config))
        return apps[-1]

    yield make
    for made in apps:
        runtime_of(made).stop()  # Every thread of its socket stack (the backplane's too).
        # And of what listens to new messages: none may hold a connection past the dispose.
        push.sender_of(made).stop()
        outgoing.dispatcher_of(made).stop()
        with made.app_context():
            db.engine.dispose()


@pytest.fixture
def app(app_config, make_app):
    """A fresh app with an empty database."""
    app = make_app(app_config)
    with app.app_context():
        db.create_all()
    return app


@pytest.fixture
def client(app):
    """A test client for HTTP requests."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A runner for the CLI commands."""
    return app.test_cli_runner()


@pytest.fixture
def make_user(app):
    """Create a user and return ``(id, email)``."""

    def make(email="alice@example.com", password=PASSWORD):
        with app.app_context():
            user = User(email=email)
            user.set_password(password)
            db.session.add(user)
            db.session.commit()
            return user.id, email

    return make


@pytest.fixture
def alice(make_user):
    """The id of a user named alice."""
    return make_user("alice@example.com")[0]


@pytest.fixture
def bob(make_user):
    """The id of a user named bob."""
    return make_user("bob@example.com")[0]


@pytest.fixture
def live_server(app):
    """The app served by a threaded Werkzeug server on an ephemeral port; yields ``host:port``."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # Polled every 10 ms for the shutdown below (the default 0.5 s was half a second a test).
    thread = threading.Thread(
        target=server.serve_forever, args=(0.01,), name="live-server", daemon=True
    )
    thread.start()
    yield f"127.0.0.1:{server.port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def ws_connect(app, live_server):
    """Open authenticated sockets: ``ws_connect(user_id)`` returns a ``ChatClient`` after hello."""
    with ExitStack() as sockets:

        def open_socket(user_id, version=0, **options):
            token = token_issued_at(app, user_id, version)
            url = f"ws://{live_server}/ws?token={token}"
            chat = ChatClient(sockets.enter_context(connect(url, open_timeout=5, **options)))
            chat.hello = chat.recv_type("hello")
            return chat

        yield open_socket


@pytest.fixture
def gunicorn_server(app, app_config, tmp_path):
    """A running gunicorn serving the test database (``app`` created its tables)."""
    server = GunicornServer(app_config, tmp_path / "gunicorn.log")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def general(app):
    """The id of the ``general`` room."""
    with app.app_context():
        return ensure_general()


@pytest.fixture
def redis_url():
    """A real Redis on 127.0.0.1:6379, database 15, emptied before and after the test."""
    import redis

    require_service("Redis", "127.0.0.1", 6379)
    url = "redis://127.0.0.1:6379/15"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def scaled_config(app_config, redis_url):
    """Settings for workers joined by Redis, with fast presence expiry for the tests."""
    return {
        **app_config,
        "REDIS_URL": redis_url,
        "CHAT_REDIS_PREFIX": f"chat-test-{uuid.uuid4().hex[:8]}",
        "CHAT_PRESENCE_HEARTBEAT": 1,
        # Short enough for a test to see a dead worker buried, long enough that a loaded CI
        # machine's stall does not bury a live one (it would close its sockets with 1012).
        "CHAT_PRESENCE_TTL": 6,
    }


@pytest.fixture
def start_servers(app, tmp_path):
    """``start_servers(config, instances, workers)`` starts gunicorns, killed at the end."""
    started = []

    def start(config, instances, workers):
        for _ in range(instances):
            server = GunicornServer(config, tmp_path / f"gunicorn-{len(started)}.log", workers)
            started.append(server)
            server.start()
        return started[-instances:]

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def behind_proxy(app_config):
    """Run the app as deployed behind one proxy (request it before ``nginx_server``)."""
    app_config["CHAT_PROXY_HOPS"] = 1


@pytest.fixture
def nginx_server(make_nginx, gunicorn_server):
    """The shipped nginx site (deploy/nginx-chat.conf) in front of ``gunicorn_server``."""
    return make_nginx([gunicorn_server])


@pytest.fixture
def make_nginx(tmp_path):
    """``make_nginx(servers)``: the shipped nginx site with every server of ``servers`` (each
    with a ``port``) in its ``upstream chat_app``; stopped at the end of the test."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if nginx is None:
        missing("nginx is missing: apt-get install nginx")
    processes = []

    def make(servers):
        prefix = tmp_path / f"nginx-{len(processes)}"
        prefix.mkdir()
        port = free_port()
        # nginx sends the uploads of the first server's folder (X-Accel-Redirect).
        upload_dir = getattr(servers[0], "env", {}).get("CHAT_UPLOAD_DIR", prefix / "uploads")
        _write_nginx_conf(prefix, port, [server.port for server in servers], upload_dir)
        processes.append(
            subprocess.Popen(
                [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
            )
        )
        _wait_for_nginx(processes[-1], port, prefix)
        return SimpleNamespace(url=f"http://127.0.0.1:{port}", access_log=prefix / "access.log")

    yield make
    for process in processes:
        process.terminate()
        process.wait(10)


def _write_nginx_conf(prefix, port, upstreams, upload_dir):
    """The shipped site, listening on ``port`` and proxying to the gunicorns on ``upstreams``."""
    site = (ROOT / "deploy" / "nginx-chat.conf").read_text()
    # One upstream line per gunicorn, with the shipped line's parameters (max_fails=...).
    shipped = re.search(r"server 127\.0\.0\.1:8000( [^;]*)?;", site)
    assert shipped, "deploy/nginx-chat.conf no longer has an upstream server 127.0.0.1:8000"
    site = site.replace(
        shipped.group(0),
        " ".join(f"server 127.0.0.1:{upstream}{shipped.group(1) or ''};" for upstream in upstreams),
    )
    for old, new in {
        "listen 80;": f"listen 127.0.0.1:{port};",
        "/srv/chat/static/": f"{ROOT}/static/",
        "/var/log/nginx/chat.access.log": f"{prefix}/access.log",
        "/var/lib/chat/uploads/": f"{upload_dir}/",
    }.items():
        assert old in site, f"deploy/nginx-chat.conf no longer has {old!r}"
        site = site.replace(old, new)
    (prefix / "site.conf").write_text(site)
    temp_paths = " ".join(
        f"{kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"user root; worker_processes 1; pid {prefix}/nginx.pid; error_log {prefix}/error.log;\n"
        f"events {{}}\nhttp {{ include /etc/nginx/mime.types; {temp_paths}\n"
        f"include {prefix}/site.conf; }}\n"
    )


def _wait_for_nginx(process, port, prefix):
    """Wait until nginx listens on ``port``; fail with its error log if it does not start."""
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"nginx did not start: {(prefix / 'error.log').read_text()}")
        time.sleep(0.05)


MOTO_SERVER = ROOT / ".venv" / "moto" / "bin" / "moto_server"


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 server on 127.0.0.1 (``make test`` installs it in .venv/moto; CI
    fails, never skips, without it); yields its endpoint URL."""
    if not MOTO_SERVER.exists():
        missing(f"{MOTO_SERVER} is missing: make .venv/moto/.installed")
    port = free_port()
    process = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("moto_server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh, empty bucket on ``s3_server``, and the credentials boto3 reads from the
    environment; yields ``(client, bucket)``."""
    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = f"chat-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    if listed:
        client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed]}
        )
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; CI fails, never skips, without it."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
