"""Lossless delivery across a server crash: resume from the last ids seen, re-send the outbox."""

import json
import uuid
from contextlib import ExitStack, suppress

import pytest
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from extensions import db
from helpers import stored_ids, token_issued_at, wait_until
from models import Message

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.


class ResumingClient:
    """Does what the page does: remembers the ids it saw, keeps an outbox, resumes, re-sends."""

    def __init__(self, app, server, user_id):
        self.app, self.server, self.user_id = app, server, user_id
        self.history = {}  # room -> ids seen, in the order received
        self.outbox = {}  # client_id -> (room, text), not yet confirmed
        self.stack = ExitStack()
        self.ws = None

    def connect(self):
        """Open a socket that resumes every room from its last id, then re-send the outbox."""
        marks = {room: ids[-1] if ids else 0 for room, ids in self.history.items()}
        token = token_issued_at(self.app, self.user_id)
        url = f"ws://{self.server}/ws?token={token}&resume={1 if marks else 0}"
        self.ws = self.stack.enter_context(connect(url, open_timeout=5))
        if marks:
            self.ws.send(json.dumps({"type": "resume", "rooms": marks}))
        hello = json.loads(self.ws.recv(timeout=5))
        for room in hello["rooms"]:
            self.history.setdefault(room["room"], [])
        for message in hello["history"]:
            self.receive(message)
        for client_id, (room, text) in list(self.outbox.items()):
            self.ws.send(
                json.dumps({"type": "message", "room": room, "text": text, "client_id": client_id})
            )

    def send(self, room, text):
        """Send a message; it stays in the outbox until the server confirms it."""
        client_id = uuid.uuid4().hex
        self.outbox[client_id] = (room, text)
        frame = {"type": "message", "room": room, "text": text, "client_id": client_id}
        with suppress(ConnectionClosed):  # Re-sent after reconnecting.
            self.ws.send(json.dumps(frame))
        return client_id

    def receive(self, frame):
        """Record a frame: ids must only grow per room; a repeat is only ever a retry's answer."""
        if frame["type"] == "room":
            self.history.setdefault(frame["room"], [])
        if frame["type"] != "message":
            return
        ids = self.history.setdefault(frame["room"], [])
        if frame["id"] in ids:
            assert frame["user_id"] == self.user_id, f"duplicate delivery of {frame}"
        else:
            assert not ids or frame["id"] > ids[-1], f"{frame['id']} arrived after {ids[-1]}"
            ids.append(frame["id"])
        if frame["user_id"] == self.user_id:
            self.outbox.pop(frame["client_id"], None)

    def pump(self, done, timeout=10):
        """Receive until ``done()`` is true."""
        while not done():
            self.receive(json.loads(self.ws.recv(timeout=timeout)))

    def drop(self):
        """Forget the dead socket."""
        self.stack.close()
        self.stack = ExitStack()


def test_a_server_crash_mid_conversation_loses_and_repeats_nothing(app, gunicorn_server, make_user):
    server = gunicorn_server.url.removeprefix("http://")
    alice_id, bob_id = make_user("alice@example.com")[0], make_user("bob@example.com")[0]
    alice, bob = ResumingClient(app, server, alice_id), ResumingClient(app, server, bob_id)
    alice.connect()
    bob.connect()
    alice.ws.send(json.dumps({"type": "open_dm", "user_id": bob_id}))
    alice.pump(lambda: len(alice.history) == 2)
    bob.pump(lambda: len(bob.history) == 2)
    dm = next(room for room in alice.history if room.startswith("dm:"))

    sent = []
    for n in range(30):  # No waiting for confirmations: many are in flight at the crash.
        sent.append(alice.send("general", f"alice {n}"))
        sent.append(bob.send("general", f"bob {n}"))
        if n % 3 == 0:
            sent.append(alice.send(dm, f"psst {n}"))
    gunicorn_server.kill()
    for client in (alice, bob):
        try:
            client.pump(lambda: False, timeout=5)
        except ConnectionClosed:
            client.drop()
    assert alice.outbox or bob.outbox, "the crash came too late to test anything in flight"

    gunicorn_server.start()
    alice.connect()
    bob.connect()
    alice.pump(lambda: not alice.outbox)
    bob.pump(lambda: not bob.outbox)
    stored = stored_ids(app)
    for client in (alice, bob):
        client.pump(
            lambda c=client: all(c.history.get(r, [None])[-1:] == s[-1:] for r, s in stored.items())
        )
    assert alice.history == bob.history == stored

    with app.app_context():
        client_ids = db.session.scalars(select(Message.client_id)).all()
    assert sorted(client_ids) == sorted(sent)  # Every message once: none lost, none twice.
    alice.drop()
    bob.drop()


def test_saved_but_unconfirmed_message_is_neither_lost_nor_doubled(app, live_server, make_user):
    """The socket dies after the server saved a message but before its confirmation was read."""
    alice_id = make_user("alice@example.com")[0]
    alice = ResumingClient(app, live_server, alice_id)
    alice.connect()
    alice.ws.send(json.dumps({"type": "message", "text": "seen", "client_id": "c0"}))
    alice.outbox["c0"] = ("general", "seen")
    alice.pump(lambda: not alice.outbox)
    client_id = alice.send("general", "did it arrive?")
    alice.drop()  # Gone without reading the confirmation.
    wait_until(lambda: stored_ids(app).get("general", [])[1:], "the server to save the message")
    assert client_id in alice.outbox  # Saved on the server, still unconfirmed here.

    alice.connect()  # Resumes from "seen", then re-sends "did it arrive?" with its client_id.
    alice.pump(lambda: not alice.outbox)
    assert alice.history["general"] == stored_ids(app)["general"]
    with app.app_context():
        assert db.session.scalars(select(Message.text)).all() == ["seen", "did it arrive?"]
    alice.drop()
