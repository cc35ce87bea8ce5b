"""Deploys that lose nothing: ``systemctl reload chat`` (SIGHUP) and a rolling restart of two
gunicorns behind the shipped nginx site, while people chat.

Real gunicorn, nginx, Redis and PostgreSQL (in every run: several processes share it); the
clients are real pages in Chromium and small WebSocket clients that behave as the page does:
reconnect with jittered backoff and a fresh token, resume from the last id seen, and send what
was never confirmed again under the same ``client_id``.
"""

import contextlib
import json
import random
import threading
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from extensions import db
from helpers import Person, token_issued_at, wait_until
from models import Message, Room

pytestmark = [pytest.mark.database, pytest.mark.browser]

SETTLE = 20  # seconds for every client to catch up: generous, only reached on failure
# A page backs off up to 15 s between attempts (static/js/connection.js): while nginx has no
# live upstream (see the rolling restart) its attempts fail and its delay grows.
PAGE_SETTLE = 35
PACE = 0.075  # seconds between two messages of one client (50 to 100 ms)
LIST = '.messages[data-room="general"]'


@pytest.fixture
def database_url(postgres_url):
    """PostgreSQL in every run: the gunicorns share it, and its cross-process order lock."""
    return postgres_url


@pytest.fixture
def deploy_config(behind_proxy, scaled_config):
    """Settings of gunicorns joined by Redis behind nginx (``behind_proxy`` first: it sets the
    proxy hops in the app config that ``scaled_config`` copies)."""
    return scaled_config


class Chatter(threading.Thread):
    """A client that chats in ``general`` as the page does, on one thread.

    It sends a numbered message every ``PACE`` seconds, keeps each until its echo comes back,
    and when its socket drops it reconnects after a jittered backoff with a fresh token,
    resumes from the last id it saw and sends every unconfirmed message again (same
    ``client_id``). It records what arrived, in order.
    """

    def __init__(self, app, user_id, url, label):
        super().__init__(daemon=True, name=f"chatter-{label}")
        self.app, self.user_id, self.url, self.label = app, user_id, url, label
        self.arrivals = []  # (id, client_id) of general's messages, in the order they came
        self.seen = set()
        self.outbox = {}  # client_id -> text: sent, not confirmed yet (dicts keep their order)
        self.created = []  # every client_id it made, in order
        self.retried = set()  # client_ids sent again after a reconnect
        self.greetings = 0
        self.close_codes = []
        self.errors = []  # error frames: none is expected
        self.sending = threading.Event()
        self.stopping = threading.Event()
        self.greeted = threading.Event()

    def run(self):
        """Connect, chat until the socket drops, back off, resume; until stopped."""
        failures = 0  # Attempts since the last greeting: the backoff's exponent, as on the page.
        for _ in range(100):  # Bounded: a broken server cannot keep a test spinning.
            if self.stopping.is_set():
                return
            greetings = self.greetings
            dropped = (ConnectionClosed, InvalidStatus, OSError, TimeoutError)
            with contextlib.suppress(*dropped), self._open() as ws:
                self._serve(ws)
            failures = 0 if self.greetings > greetings else failures + 1
            ceiling = min(2.0, 0.2 * 2**failures)
            self.stopping.wait(random.uniform(ceiling / 2, ceiling))

    def _open(self):
        """A socket through nginx with a fresh token; resuming once it has been greeted."""
        token = token_issued_at(self.app, self.user_id)
        resume = "&resume=1" if self.greetings else ""
        return connect(f"{self.url}/ws?token={token}{resume}", open_timeout=5)

    def _serve(self, ws):
        """Resume, read frames and send the next message when due, until the socket closes."""
        try:
            if self.greetings:
                last = max(self.seen, default=0)
                ws.send(json.dumps({"type": "resume", "rooms": {"general": last}}))
            self._handle(json.loads(ws.recv(timeout=5)), ws)
            due = time.monotonic()
            while not self.stopping.is_set():
                if self.sending.is_set() and time.monotonic() >= due:
                    self._send_next(ws)
                    due = time.monotonic() + random.uniform(0.05, 0.1)
                with contextlib.suppress(TimeoutError):
                    self._handle(json.loads(ws.recv(timeout=0.01)), ws)
        finally:
            self.close_codes.append(ws.close_code)

    def _handle(self, frame, ws):
        kind = frame["type"]
        if kind == "hello":
            self.greetings += 1
            self.greeted.set()
            for message in frame["history"]:
                self._arrived(message)
            for client_id, text in list(self.outbox.items()):  # Everything never confirmed.
                self.retried.add(client_id)
                ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
        elif kind == "message" and frame["room"] == "general":
            self._arrived(frame)
        elif kind == "error":
            self.errors.append(frame)

    def _arrived(self, message):
        self.arrivals.append((message["id"], message["client_id"]))
        self.seen.add(message["id"])
        self.outbox.pop(message["client_id"], None)

    def _send_next(self, ws):
        client_id = f"{self.label}-{len(self.created)}"
        text = f"{self.label} {len(self.created)}"
        self.created.append(client_id)
        self.outbox[client_id] = text
        ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))

    def describe(self):
        """What it is waiting for, for a failure's message."""
        return (
            f"{self.label}'s outbox {list(self.outbox)}: alive {self.is_alive()}, greeted "
            f"{self.greetings} times, closes {self.close_codes}, errors {self.errors}"
        )

    def stop(self):
        self.stopping.set()
        self.join(10)


@pytest.fixture
def chatters():
    """Chatters to stop at the end of the test."""
    started = []
    yield started
    for chatter in started:
        chatter.stop()


@pytest.fixture
def pages(browser):
    """``pages(url, count)``: people in their own browser contexts, registered and connected."""
    people = []

    def open_pages(url, count):
        for n in range(count):
            person = Person(browser, url)
            person.label = f"page{n}"
            person.sockets = []  # Every WebSocket the page opened.
            person.page.on("websocket", lambda ws, person=person: person.sockets.append(ws))
            people.append(person)
            person.register(f"page{n}@example.com")
        return people

    yield open_pages
    for person in people:
        person.context.close()


class Conversation:
    """Pages and chatters talking in ``general``; the pages are driven from the test's thread
    (Playwright's sync API is not thread-safe), one message each per ``PACE``."""

    def __init__(self, people, chatters):
        self.people, self.chatters = people, chatters
        self.said = {id(person): 0 for person in people}

    def start(self):
        for chatter in self.chatters:
            chatter.sending.set()

    def chat_until(self, condition, what, timeout=SETTLE):
        """Keep the pages talking until ``condition()`` holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            for person in self.people:
                n = self.said[id(person)]
                person.say(f"{person.label} {n}")
                self.said[id(person)] = n + 1
            time.sleep(PACE)  # Paces the stream.

    def chat_for(self, messages):
        """Keep everyone talking until ``messages`` more are stored."""
        target = len(general_rows(self.chatters[0].app)) + messages
        self.chat_until(lambda: len(general_rows(self.chatters[0].app)) >= target, "messages")

    def stop(self):
        """Stop sending, then wait until every message of every client is confirmed."""
        for chatter in self.chatters:
            chatter.sending.clear()
        for chatter in self.chatters:
            wait_until(lambda c=chatter: not c.outbox, Later(chatter.describe), SETTLE)
        for person in self.people:
            pending = person.page.locator(f"{LIST} .message.pending")
            done = lambda p=pending: p.count() == 0  # noqa: E731
            wait_until(done, Later(lambda p=person: describe_page(p)), PAGE_SETTLE)


class Later:
    """A failure's message, made only if the wait fails: ``str()`` calls ``describe``."""

    def __init__(self, describe):
        self.describe = describe

    def __str__(self):
        return self.describe()


def describe_page(person):
    """What a page still waits for."""
    status = person.page.locator("#status").get_attribute("data-state")
    pending = person.page.locator(f"{LIST} .message.pending").all_text_contents()
    return (
        f"{person.label}'s pending messages {pending}: status {status}, "
        f"{len(person.sockets)} sockets, problems {person.problems}"
    )


def general_rows(app):
    """``(id, user_id, text, client_id)`` of general's messages, in id order."""
    with app.app_context():
        rows = db.session.execute(
            select(Message.id, Message.user_id, Message.text, Message.client_id)
            .join(Room, Room.id == Message.room_id)
            .where(Room.key == "general")
            .order_by(Message.id)
        ).all()
        db.session.remove()
    return [tuple(row) for row in rows]


def assert_nothing_lost_or_repeated(app, conversation):
    """Every client shows every stored message once, in id order; every send stored once."""
    chatters, people = conversation.chatters, conversation.people
    wait_until(
        lambda: all(len(c.seen) == len(general_rows(app)) for c in chatters),
        "every chatter to receive every stored message",
        SETTLE,
    )
    rows = general_rows(app)
    ids = [row[0] for row in rows]
    for chatter in chatters:
        # Live and replayed messages in id order, each once; only the answer to a retry of its
        # own may repeat one (the server answers every retry with the original).
        first = [i for i, client_id in chatter.arrivals if client_id not in chatter.retried]
        assert first == sorted(set(first)), f"{chatter.label}: out of order or repeated"
        missing, extra = sorted(set(ids) - chatter.seen), sorted(chatter.seen - set(ids))
        assert (missing, extra) == ([], []), f"{chatter.label} {chatter.describe()}"
        mine = [client_id for _, user, _, client_id in rows if user == chatter.user_id]
        assert mine == chatter.created  # Every send stored once, in the order it was made.
        assert chatter.errors == []
    for person in people:
        shown = person.page.locator(f"{LIST} .message[data-id]")
        expect(shown).to_have_count(len(ids), timeout=SETTLE * 1000)
        assert (
            person.page.eval_on_selector_all(
                f"{LIST} .message[data-id]", "items => items.map(i => Number(i.dataset.id))"
            )
            == ids
        )
        texts = person.page.locator(f"{LIST} .message .text").all_text_contents()
        assert texts == [row[2] for row in rows]
        label = person.label
        stored = [text for text in texts if text.startswith(f"{label} ")]
        assert stored == [f"{label} {n}" for n in range(conversation.said[id(person)])]
        assert person.page.locator(f"{LIST} .message.failed").count() == 0
        assert person.dialogs == []


def start_chatters(app, make_user, chatters, url, count):
    """``count`` chatters through ``url`` (ws://…), each greeted."""
    for n in range(count):
        user_id = make_user(f"chatter{n}@example.com")[0]
        chatter = Chatter(app, user_id, url.replace("http://", "ws://"), f"chatter{n}")
        chatters.append(chatter)
        chatter.start()
        assert chatter.greeted.wait(10), f"{chatter.label} got no hello"
    return chatters


def test_a_reload_loses_and_repeats_nothing(app, make_user, deploy_config, start_servers,
                                            make_nginx, pages, chatters):  # fmt: skip
    (server,) = start_servers(deploy_config, instances=1, workers=2)
    nginx = make_nginx([server])
    people = pages(nginx.url, 2)
    conversation = Conversation(people, start_chatters(app, make_user, chatters, nginx.url, 3))
    conversation.start()
    conversation.chat_for(30)

    for _ in range(2):  # `systemctl reload chat`, twice while they chat.
        server.reload()
        conversation.chat_until(server.reloaded, "the old workers to exit, new ones to run")
        conversation.chat_for(30)  # The new workers serve.
    conversation.stop()

    assert_nothing_lost_or_repeated(app, conversation)
    for chatter in chatters:
        assert chatter.close_codes.count(1001) >= 2, chatter.close_codes  # Both reloads.
    for person in people:
        assert len(person.sockets) >= 3  # It reconnected by itself, once per reload.


def test_a_rolling_restart_loses_and_repeats_nothing(app, make_user, deploy_config,
                                                     start_servers, make_nginx, pages,
                                                     chatters):  # fmt: skip
    servers = start_servers(deploy_config, instances=2, workers=1)
    nginx = make_nginx(servers)
    people = pages(nginx.url, 2)
    conversation = Conversation(people, start_chatters(app, make_user, chatters, nginx.url, 3))
    conversation.start()
    conversation.chat_for(30)

    for server in servers:  # A, then B, as docs/deploy.md says.
        # The shipped upstream lines have max_fails=0: nginx tries the other instance while one
        # refuses, and takes it back as soon as it is up (with nginx's default, it kept it out
        # for 10 s, and stopping B within them left "no live upstreams": 502s).
        server.stop()
        conversation.chat_until(server.stopped, f"{server.url} to exit")
        conversation.chat_for(20)  # The other instance serves everyone meanwhile.
        server.start()  # And waits for /readyz.
        conversation.chat_for(20)
    conversation.stop()

    assert_nothing_lost_or_repeated(app, conversation)
    assert any(1001 in chatter.close_codes for chatter in chatters)
    for person in people:
        assert len(person.sockets) >= 2  # At least one of the restarts closed its socket.
    assert "no live upstreams" not in (nginx.access_log.parent / "error.log").read_text()
