"""What the tests share besides fixtures: constants, form and token helpers, real clients and
servers. Test modules import from here, never from ``conftest`` (fixtures only) or each other."""

import base64
import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from playwright.sync_api import expect
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from extensions import db
from models import Message, Room
from realtime.runtime import runtime_of

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
PASSWORD = "correct horse battery"
SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"
RECV_TIMEOUT = 5.0

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_enabled():
    """``CHAT_TEST_DATABASE=postgresql`` runs the suite against PostgreSQL instead of SQLite."""
    return os.environ.get("CHAT_TEST_DATABASE", "sqlite") == "postgresql"


# ---- Services ----------------------------------------------------------------------------------


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


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_sockets(app, user_id, count):
    """Wait until the server holds ``count`` sockets of ``user_id``: a socket closed by the
    client is gone for the server (and its departure noted) only when it is handled."""
    hub = runtime_of(app).hub
    wait_until(lambda: hub.sockets_of(user_id) == count, f"user {user_id} to have {count} sockets")


def wait_until(condition, what, timeout=30):
    """Wait until ``condition()`` holds; fail after ``timeout`` seconds (a failure only)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---- Forms and tokens --------------------------------------------------------------------------


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


# ---- WebSocket clients -------------------------------------------------------------------------


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

    def sync(self, room="general"):
        """The frames sent to this socket before the answer to a marker request; the answer is
        read too, and left out.

        The marker is a request for a one-message ``history`` page of ``room``: the server sends
        its answer behind every frame already queued to this socket, so a frame that is not
        among the ones returned had not been sent to it when the server handled the marker. It
        proves a frame absent without waiting out a quiet window, which a late frame would pass.
        """
        self.send({"type": "history", "room": room, "limit": 1})
        frames = []
        while True:
            frame = self.recv()
            if frame["type"] == "history" and frame["room"] == room and not frame["reset"]:
                return frames
            frames.append(frame)

    def settle_presence(self):
        """Read the ``presence`` frames sent so far (see ``sync``); return them.

        For a user's own socket after their arrival: that arrival is news to everyone but them,
        so their socket sees it only if it shared a batch with someone else's (timing). Call it
        once another client was shown that arrival: the batch that did has been queued to every
        socket it was for by then.
        """
        frames = self.sync()
        assert all(frame["type"] == "presence" for frame in frames), frames
        return frames

    def assert_nothing_sent(self):
        """Assert that nothing was sent to this socket before the answer to a marker request
        (see ``sync``)."""
        assert self.sync() == []

    def close(self):
        """Close the socket."""
        self.ws.close()


def shown_in(frames):
    """``(online, offline)``: the sets of user ids that ``presence`` frames show so."""
    online = {person["user_id"] for frame in frames for person in frame["online"]}
    offline = {person["user_id"] for frame in frames for person in frame["offline"]}
    return online, offline


def rejected(live_server, url_suffix="", headers=None):
    """Try to open a socket that must be refused; return the HTTP response."""
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://{live_server}/ws{url_suffix}", additional_headers=headers, open_timeout=5)
    return refused.value.response


def assert_refused(response, code):
    """A 401 JSON refusal naming ``code``."""
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"
    assert b'"error":"' + code.encode() + b'"' in response.body.replace(b" ", b"")


def raw_socket_that_never_reads(live_server, token):
    """Open a WebSocket by hand with a tiny receive buffer, and never read from it."""
    host, port = live_server.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: {live_server}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock


# ---- Uploads -----------------------------------------------------------------------------------


def multipart(fields):
    """``(body, content type)`` of a multipart form: ``fields`` maps names to
    ``(file name, bytes)`` or to a string."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data = value
            head = (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            )
        else:
            head, data = f'Content-Disposition: form-data; name="{name}"\r\n\r\n', value.encode()
        parts.append(f"--{boundary}\r\n{head}".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Http:
    """Requests to the live server as one person, by socket token."""

    def __init__(self, app, server, user_id):
        self.app, self.server, self.user_id = app, server, user_id

    def headers(self):
        return {"Authorization": f"Bearer {token_issued_at(self.app, self.user_id)}"}

    def request(self, method, path, body=None, headers=None):
        """``(status, headers, body bytes)``; the connection is closed after."""
        host, port = self.server.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def upload(self, data, name="file.bin", headers=None, fields=None):
        """``(status, JSON body)`` of ``POST /api/uploads``."""
        body, content_type = multipart(fields if fields is not None else {"file": (name, data)})
        sent = {"Content-Type": content_type, **(self.headers() if headers is None else headers)}
        status, _, answer = self.request("POST", "/api/uploads", body, sent)
        return status, json.loads(answer)

    def uploaded(self, data, name="file.bin"):
        """The description of a file that must be accepted."""
        status, body = self.upload(data, name)
        assert status == 201, body
        return body

    def get(self, path, headers=None):
        """``(status, headers, body)`` of a GET with this person's token."""
        return self.request("GET", path, headers=self.headers() if headers is None else headers)


# ---- Metrics -----------------------------------------------------------------------------------


def parse(text):
    """``{(sample name, frozenset of labels): value}`` of a scrape."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    """One sample's value; 0 when it is not there (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_client(client):
    """Scrape an app in this process through its test client."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return parse(response.text)


def moved(before, after, name, **labels):
    """How much a sample grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


# ---- The database ------------------------------------------------------------------------------


def stored_ids(app):
    """Every stored message id, per room key."""
    with app.app_context():
        rows = db.session.execute(
            select(Room.key, Message.id).join(Room, Room.id == Message.room_id).order_by(Message.id)
        ).all()
    ids = {}
    for key, message_id in rows:
        ids.setdefault(key, []).append(message_id)
    return ids


# ---- gunicorn ----------------------------------------------------------------------------------


class GunicornServer:
    """The production server (gunicorn, gthread) in a subprocess, restartable on one port."""

    def __init__(self, app_config, log_path, workers=1):
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        settings = {key: str(value) for key, value in app_config.items() if key != "TESTING"}
        self.env = {**os.environ, **settings, "CHAT_LOG_LEVEL": "INFO"}
        # Passwords are hashed at the test cost here too (the test config's, which the tests
        # that make users in this process share): at the production cost every registration
        # and login in the browser tests took 0.4 s. test_hardening checks the production cost.
        self.process = None
        self._old_workers = []  # psutil.Process of the workers being replaced or stopped

    def start(self):
        """Start gunicorn and wait until every worker has booted and it accepts connections."""
        command = [
            sys.executable, "-m", "gunicorn", "--threads", "20", "-w", str(self.workers),
            "-b", f"127.0.0.1:{self.port}", "--access-logfile", "-", "app:create_app()",
        ]  # fmt: skip
        self._log_start = len(self.log()) if self.log_path.exists() else 0  # Restarts append.
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
                    break
            time.sleep(0.05)
        else:
            pytest.fail(f"gunicorn did not start:\n{self.log()}")
        left = max(deadline - time.monotonic(), 1)
        wait_until(self.ready, f"{self.url}/readyz to answer 200", left)

    def ready(self):
        """True when ``GET /readyz`` answers 200: a worker can serve (ops/health.py)."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5):  # noqa: S310 - loopback
                return True
        except OSError:  # urllib.error.HTTPError (a 503) among them
            return False

    def _all_booted(self):
        """True once every worker of this start has logged that it booted."""
        return self.log()[self._log_start :].count("Booting worker") >= self.workers

    def reload(self):
        """SIGHUP to the arbiter, as ``systemctl reload chat`` does; the old workers' pids."""
        old = self.worker_pids()
        self._old_workers = [psutil.Process(pid) for pid in old]
        self.process.send_signal(signal.SIGHUP)
        return old

    def reloaded(self):
        """True once every worker the last ``reload`` replaced has exited and as many new
        ones run."""
        old = {worker.pid for worker in self._old_workers}
        fresh = self.worker_pids() - old
        return all(map(_dead, self._old_workers)) and len(fresh) == self.workers

    def stop(self):
        """SIGTERM to the arbiter, as ``systemctl stop chat`` does (see ``stopped``)."""
        self._old_workers = psutil.Process(self.process.pid).children()
        self.process.terminate()

    def stopped(self):
        """True once the arbiter and every worker have exited after ``stop``."""
        return self.process.poll() is not None and all(map(_dead, self._old_workers))

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
            # reconnects to a restarted server could land in its backlog and be reset. Dead is
            # enough, reaped or not: a zombie holds no socket, and the init process of a
            # container may take seconds to reap an orphan (psutil.wait_procs waits for that).
            wait_until(lambda: all(map(_dead, workers)), "gunicorn's workers to die", 10)

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


def _dead(process):
    """True once ``process`` (a psutil.Process) has exited, reaped or a zombie."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---- The browser -------------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VISIBLE_LIST = ".messages:not([hidden])"


class Person:
    """One person in their own browser context, with what their page reported."""

    def __init__(self, browser, base_url):
        self.context = browser.new_context(
            base_url=base_url, viewport={"width": 1100, "height": 700}
        )
        self.page = self.context.new_page()
        self.problems = []  # Console errors and uncaught exceptions (CSP violations among them).
        self.dialogs = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.on("dialog", self._on_dialog)

    def _on_console(self, message):
        if message.type == "error":
            self.problems.append(message.text)

    def _on_dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def register(self, email):
        self.page.goto("/register")
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password", exact=True).fill(PASSWORD)
        self.page.get_by_label("Confirm password").fill(PASSWORD)
        self.page.get_by_role("button", name="Create account").click()
        self.expect_connected()

    def log_out(self):
        self.page.get_by_role("button", name="Log out", exact=True).click()
        expect(self.page.get_by_role("heading", name="Log in")).to_be_visible()

    def log_in(self, email):
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        self.expect_connected()

    def expect_connected(self, timeout=10_000):
        expect(self.page.locator("#status")).to_have_attribute(
            "data-state", "connected", timeout=timeout
        )

    def say(self, text):
        box = self.page.get_by_role("textbox", name="Message")
        box.fill(text)
        box.press("Enter")

    def messages(self, text):
        return self.page.locator(f"{VISIBLE_LIST} .message .text").filter(has_text=text)

    def screenshot(self, name):
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


class PersonIn(Person):
    """A Person in a browser context made by the test (a theme, a language)."""

    def __init__(self, context):
        self.context, self.page = context, context.new_page()
        self.problems, self.dialogs = [], []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.on("dialog", self._on_dialog)


AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


def signed_up_in(browser, base_url, email, theme, locale):
    """Someone signed up in a browser context of ``theme`` and ``locale``, ready for axe-core
    (which Playwright injects as an inline script: the context bypasses our CSP)."""
    context = browser.new_context(
        base_url=base_url,
        viewport={"width": 1100, "height": 800},
        color_scheme=theme,
        locale=locale,
        bypass_csp=True,
    )
    person = PersonIn(context)
    page = person.page
    page.goto("/register")  # By id: the labels are in French in half of the runs.
    page.locator("#email").fill(email)
    page.locator("#password").fill(PASSWORD)
    page.locator("#confirm").fill(PASSWORD)
    page.locator("#submit").click()
    person.expect_connected()
    assert page.locator("html").get_attribute("lang") == locale[:2]
    return person


def serious_violations(page):
    """axe-core's violations of serious or critical impact on the page as it is now."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `npm ci` (make test does)")
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate("async () => (await axe.run()).violations")
    return [
        (v["id"], v["impact"], [node["target"] for node in v["nodes"]][:5])
        for v in violations
        if v["impact"] in {"serious", "critical"}
    ]


SOCKET_URL = re.compile(r"/ws\?")  # The page's socket, to route through a test.


class SocketRoute:
    """The page's sockets, through the test: it records the frames the page sends, drops those
    ``drop_sent`` matches, and drops the server's answers that ``drop_answer`` matches (in a
    hello's history too), as if the connection had gone each time before they arrived.

    Playwright runs these handlers only while the test is inside a Playwright call: wait with
    ``pump_until``, not ``helpers.wait_until``.
    """

    def __init__(self, page):
        self.sent = []  # Every JSON frame the page sent, decoded.
        self.drop_sent = lambda frame: False
        self.drop_answer = lambda frame: False
        self.hide_server_close = False  # The server closes, the page's socket stays open.
        self.page_side = None  # The page's end of the latest socket, to close it.
        page.route_web_socket(SOCKET_URL, self._route)

    def _route(self, ws):
        self.page_side = ws
        server = ws.connect_to_server()
        ws.on_message(lambda message: self._to_server(server, message))
        server.on_message(lambda message: self._to_page(ws, message))
        if self.hide_server_close:
            server.on_close(lambda code, reason: None)

    def _to_server(self, server, message):
        frame = json.loads(message)  # The page sends JSON only.
        self.sent.append(frame)
        if not self.drop_sent(frame):
            server.send(message)

    def _to_page(self, ws, message):
        frame = json.loads(message)
        if frame["type"] == "hello":
            frame["history"] = [item for item in frame["history"] if not self.drop_answer(item)]
        elif self.drop_answer(frame):
            return
        ws.send(json.dumps(frame))

    def client_ids(self, text):
        """The client_id of each message frame the page sent with ``text``."""
        return [f["client_id"] for f in self.sent if f["type"] == "message" and f["text"] == text]


def pump_until(page, condition, what, timeout=10):
    """Wait until ``condition()`` holds, letting Playwright run the socket route meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        page.wait_for_timeout(20)  # Playwright's event loop runs the route's handlers here.


# ---- A real socket beside the pages (the browser tests post through it) -----------------------

CLIENT_IDS = itertools.count()  # Unique in a test run: a client_id is stored once per user.


@contextmanager
def chat_socket(app, gunicorn_server, uid):
    """A real WebSocket of user ``uid``, greeted."""
    host = gunicorn_server.url.removeprefix("http://")
    with connect(f"ws://{host}/ws?token={token_issued_at(app, uid)}", open_timeout=5) as ws:
        chat = ChatClient(ws)
        chat.recv_type("hello")
        yield chat


def answer(chat, client_id, kind):
    """The frame of type ``kind`` that answers ``client_id``; other frames are skipped."""
    while True:
        frame = chat.recv()
        if frame.get("client_id") == client_id:
            assert frame["type"] == kind, frame
            return frame


def post(chat, text, reply_to=None):
    """Post ``text`` (a reply to ``reply_to``); the saved message."""
    client_id = f"post-{next(CLIENT_IDS)}"
    frame = {"type": "message", "text": text, "client_id": client_id}
    if reply_to is not None:
        frame["reply_to"] = reply_to
    chat.send(frame)
    return answer(chat, client_id, "message")


def change(chat, frame):
    """Send an edit, delete, react or unreact; its message_changed frame."""
    client_id = f"change-{next(CLIENT_IDS)}"
    chat.send({**frame, "client_id": client_id})
    return answer(chat, client_id, "message_changed")
