"""Fixtures: a fresh app and database per test, a live threaded server, real WebSocket clients."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from websockets.sync.client import connect
from werkzeug.serving import make_server

from app import create_app
from extensions import db
from models import User, ensure_general
from realtime.runtime import runtime_of

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"
RECV_TIMEOUT = 5.0


POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_enabled():
    """``CHAT_TEST_DATABASE=postgresql`` runs the suite against PostgreSQL instead of SQLite."""
    return os.environ.get("CHAT_TEST_DATABASE", "sqlite") == "postgresql"


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on 127.0.0.1:5432 (fails in CI, skips elsewhere, when missing)."""
    import psycopg

    require_service("PostgreSQL", "127.0.0.1", 5432)
    with psycopg.connect(POSTGRES.replace("+psycopg", ""), autocommit=True) as connection:
        for (schema,) in connection.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'chat_test_%'"
        ).fetchall():
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')  # Left by an aborted run.
    return POSTGRES


@pytest.fixture
def database_url(request, tmp_path):
    """A fresh, empty database for one test: a SQLite file, or a PostgreSQL schema of its own."""
    if not postgres_enabled():
        yield f"sqlite:///{tmp_path / 'chat.db'}"
        return
    import psycopg

    base = request.getfixturevalue("postgres")
    schema = f"chat_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(base.replace("+psycopg", ""), autocommit=True)
    admin.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{base}?options=-csearch_path%3D{schema}"
    admin.execute("SET lock_timeout = '5s'")
    admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    admin.close()


@pytest.fixture
def app_config(database_url):
    """Settings for the test app; tests may change them before ``app`` is built."""
    return {
        "TESTING": True,
        "SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": database_url,
        # Cheap hashing keeps the suite fast; test_accounts checks the production default.
        "CHAT_PASSWORD_HASH": "scrypt:1024:8:1",
        # Tests send faster than people; the flood tests set their own limits.
        "CHAT_MESSAGE_BURST": 10_000,
        "CHAT_FRAME_BURST": 10_000,
        # Presence batches every 50 ms instead of 250: tests wait for them often.
        "CHAT_PRESENCE_BATCH": 0.05,
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


def csrf_token(response):
    """The CSRF token embedded in a rendered form."""
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', response.text)
    if match is None:
        match = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    assert match is not None, "no CSRF token in the page"
    return match.group(1)


def submit_form(client, path, data, query=""):
    """GET a form, then POST ``data`` with its CSRF token."""
    token = csrf_token(client.get(path))
    return client.post(path + query, data={**data, "csrf_token": token})


def login(client, email="alice@example.com", password=PASSWORD):
    """Log ``client`` in through the real form."""
    return submit_form(client, "/login", {"email": email, "password": password})


def token_issued_at(app, user_id, version=0, seconds_ago=0, salt=None):
    """Sign a token as if it had been issued ``seconds_ago`` seconds ago."""

    class Backdated(TimestampSigner):
        def get_timestamp(self):
            return int(time.time()) - seconds_ago

    serializer = URLSafeTimedSerializer(
        app.config["SECRET_KEY"], salt=salt or app.config["CHAT_TOKEN_SALT"], signer=Backdated
    )
    return serializer.dumps({"uid": user_id, "v": version})


@pytest.fixture
def live_server(app):
    """The app served by a threaded Werkzeug server on an ephemeral port; yields ``host:port``."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


class ChatClient:
    """A real WebSocket client with helpers to read JSON frames."""

    def __init__(self, ws):
        self.ws = ws

    def send(self, frame):
        """Send a dict as JSON, or a str / bytes as is."""
        self.ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    def recv(self, timeout=RECV_TIMEOUT):
        """The next frame, decoded."""
        return json.loads(self.ws.recv(timeout=timeout))

    def recv_type(self, kind, timeout=RECV_TIMEOUT):
        """The next frame of type ``kind``, skipping presence frames only."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            if frame["type"] == kind:
                return frame
            assert frame["type"] == "presence", f"expected {kind}, got {frame}"

    def await_presence(self, online=(), offline=(), room="general", timeout=RECV_TIMEOUT):
        """Read ``presence`` frames of ``room`` until the ids in ``online`` are all shown online
        and those in ``offline`` offline; return the frames read (presence comes in batches)."""
        shown, frames = {}, []
        deadline = time.monotonic() + timeout
        while any(shown.get(uid) is not True for uid in online) or any(
            shown.get(uid) is not False for uid in offline
        ):
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            assert frame["type"] == "presence", f"expected presence, got {frame}"
            frames.append(frame)
            if frame["room"] == room:
                shown.update({person["user_id"]: True for person in frame["online"]})
                shown.update({person["user_id"]: False for person in frame["offline"]})
        return frames

    def settle_presence(self, quiet=0.3):
        """Read ``presence`` frames until none comes for ``quiet`` seconds.

        For a user's own socket after their arrival: that arrival is news to everyone but them,
        so their socket sees it only if it shared a batch with someone else's (timing).
        """
        while True:
            try:
                frame = self.recv(quiet)
            except TimeoutError:
                return
            assert frame["type"] == "presence", f"expected presence, got {frame}"

    def assert_silent(self, wait=0.3):
        """Assert that no frame arrives within ``wait`` seconds."""
        try:
            frame = self.ws.recv(timeout=wait)
        except TimeoutError:
            return
        pytest.fail(f"unexpected frame: {frame}")

    def close(self):
        """Close the socket."""
        self.ws.close()


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


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class GunicornServer:
    """The production server (gunicorn, gthread) in a subprocess, restartable on one port."""

    def __init__(self, app_config, log_path, workers=1):
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        settings = {key: str(value) for key, value in app_config.items() if key != "TESTING"}
        self.env = {**os.environ, **settings, "CHAT_LOG_LEVEL": "INFO"}
        # The browser tests log in through real forms: hash at the production cost there.
        self.env.pop("CHAT_PASSWORD_HASH")
        self.process = None

    def start(self):
        """Start gunicorn and wait until it accepts connections."""
        command = [
            sys.executable, "-m", "gunicorn", "--threads", "20", "-w", str(self.workers),
            "-b", f"127.0.0.1:{self.port}", "--access-logfile", "-", "app:create_app()",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Its own process group, so that kill() ends every worker.
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited:\n{self.log()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0 and self._all_booted():
                    return
            time.sleep(0.05)
        pytest.fail(f"gunicorn did not start:\n{self.log()}")

    def _all_booted(self):
        """True once every worker has logged that it booted."""
        return self.log().count("Booting worker") >= self.workers

    def worker_pids(self):
        """The process ids of the live workers."""
        return {child.pid for child in psutil.Process(self.process.pid).children()}

    def worker_of(self, ws):
        """The pid of the worker serving the client socket ``ws`` (websockets connection)."""
        client_port = ws.socket.getsockname()[1]
        for _ in range(20):
            for pid in self.worker_pids():
                for conn in psutil.Process(pid).net_connections(kind="tcp"):
                    if conn.raddr and conn.raddr.port == client_port:
                        return pid
            time.sleep(0.05)
        pytest.fail(f"no worker of {self.url} holds the connection from port {client_port}")

    def kill(self):
        """Kill the arbiter and its workers at once, as a crash would: open sockets just drop."""
        if self.process and self.process.poll() is None:
            workers = psutil.Process(self.process.pid).children()
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            # The workers too: one still dying holds the old listening socket, and a client that
            # reconnects to a restarted server could land in its backlog and be reset.
            psutil.wait_procs(workers, timeout=10)

    def wait_for_log(self, text, timeout=5):
        """Wait until the server has printed ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} not in the server log:\n{self.log()}")
            time.sleep(0.05)

    def log(self):
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")


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


def require_service(name, host, port):
    """Fail in CI (CI=true), skip elsewhere, when a service the test needs is not listening."""
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex((host, port)) == 0:
            return
    missing(f"{name} is not listening on {host}:{port}")


def missing(message):
    """Something a test needs is not here: fail in CI (CI=true), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


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
def behind_proxy(app_config):
    """Run the app as deployed behind one proxy (request it before ``nginx_server``)."""
    app_config["CHAT_PROXY_HOPS"] = 1


@pytest.fixture
def nginx_server(gunicorn_server, tmp_path):
    """The shipped nginx site (deploy/nginx-chat.conf) in front of ``gunicorn_server``."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if nginx is None:
        missing("nginx is missing: apt-get install nginx")
    port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    site = (ROOT / "deploy" / "nginx-chat.conf").read_text()
    for old, new in {
        "listen 80;": f"listen 127.0.0.1:{port};",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{gunicorn_server.port};",
        "/srv/chat/static/": f"{ROOT}/static/",
        "/var/log/nginx/chat.access.log": f"{prefix}/access.log",
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
    process = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    )
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"nginx did not start: {(prefix / 'error.log').read_text()}")
        time.sleep(0.05)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", access_log=prefix / "access.log")
    process.terminate()
    process.wait(10)
