"""What the socket stack relies on in simple-websocket, gunicorn and Werkzeug (``adapter.py``).

Each test pins one behaviour of a library that its docs do not promise; an upgrade that changes
it fails here first, by name, instead of somewhere in the chat.
"""

import json
import socket
import struct
import threading
import zlib
from pathlib import Path

import simple_websocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from accounts.tokens import issue_token
from extensions import db
from models import User
from realtime.transport import adapter

UPGRADE = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/ws",
    "HTTP_HOST": "127.0.0.1",
    "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "Upgrade",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
    "HTTP_SEC_WEBSOCKET_EXTENSIONS": "permessage-deflate; client_max_window_bits",
}


def handshake(environ_extra=None, decline=False):
    """Run simple-websocket's server handshake over a socket pair; (101 response, ours, peer)."""
    ours, peer = socket.socketpair()
    environ = {**UPGRADE, "werkzeug.socket": ours, **(environ_extra or {})}
    if decline:
        adapter.decline_compression(environ)
    peer.sendall(b"first bytes of a frame")  # Sent early: whoever reads them would take them.
    simple_websocket.Server(environ, **adapter.server_options({}))
    peer.settimeout(5)
    response = peer.recv(4096)
    return response, ours, peer


def test_the_handshake_reads_nothing_and_starts_no_reader():
    """With our ``thread_class`` the handshake writes its 101 and leaves the socket unread."""
    threads = threading.active_count()
    response, ours, peer = handshake(decline=True)
    with ours, peer:
        assert response.startswith(b"HTTP/1.1 101 ")
        assert threading.active_count() == threads
        assert ours.recv(64, socket.MSG_DONTWAIT) == b"first bytes of a frame"


def test_the_handshake_is_made_from_the_environ_so_declining_removes_compression():
    """Offered permessage-deflate is accepted from the header; without it, no extension."""
    accepted, *pair = handshake()
    for end in pair:
        end.close()
    declined, *pair = handshake(decline=True)
    for end in pair:
        end.close()
    assert b"sec-websocket-extensions: permessage-deflate" in accepted.lower()
    assert b"sec-websocket-extensions" not in declined.lower()


def token_for(app, user_id):
    """A fresh socket token for ``user_id``."""
    with app.app_context():
        return issue_token(db.session.get(User, user_id))


def echo(chat, text):
    """Post ``text`` and wait for its confirmation; the frames read on the way."""
    chat.send(json.dumps({"type": "message", "text": text, "client_id": text}))
    while True:
        frame = json.loads(chat.recv(timeout=5))
        if frame["type"] == "message" and frame.get("client_id") == text:
            return frame


def test_werkzeug_the_connection_outlives_the_handler_and_flask_socks_close(
    app, live_server, make_user
):
    """The handler returns after the greeting; Flask-Sock's close frame and Werkzeug's response
    go to the stand-in: the client gets neither, and the chat goes on."""
    alice = make_user("alice@example.com")[0]
    url = f"ws://{live_server}/ws?token={token_for(app, alice)}"
    with connect(url, open_timeout=5) as chat:
        assert json.loads(chat.recv(timeout=5))["type"] == "hello"
        for n in range(3):
            assert echo(chat, f"still here {n}")["text"] == f"still here {n}"


def test_gunicorn_the_connection_outlives_the_handler(app, gunicorn_server, make_user):
    """The same under gunicorn, whose graceful close of the request lands on the stand-in."""
    alice = make_user("alice@example.com")[0]
    url = f"{gunicorn_server.url.replace('http', 'ws')}/ws?token={token_for(app, alice)}"
    with connect(url, open_timeout=5, compression="deflate") as chat:
        assert chat.response.headers.get("Sec-WebSocket-Extensions") is None
        assert json.loads(chat.recv(timeout=5))["type"] == "hello"
        for n in range(3):
            assert echo(chat, f"still here {n}")["text"] == f"still here {n}"


def deflate_bomb(size):
    """A raw-deflate payload that inflates to ``size`` bytes (about 1,000 times smaller)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"a" * (1 << 20)
    parts = [packer.compress(chunk) for _ in range(size // len(chunk))]
    parts.append(packer.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)[:-4]  # RFC 7692 7.2.1: the empty block's tail is left off.


def compressed_frame(payload):
    """A masked client text frame marked compressed (RSV1), as a deflating browser sends it."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | 0x40 | 0x01, 0x80 | 126]) + struct.pack("!H", len(payload)) + mask + masked


def peak_memory(pid):
    """The most memory process ``pid`` ever held (Linux's VmHWM), in bytes: an inflation freed
    at once still shows here."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc: not Linux?")


def close_code(chat):
    """Read until the server closes the socket; the code of its close frame."""
    try:
        while True:
            chat.recv(timeout=5)  # Presence frames, then the close.
    except ConnectionClosed as closed:
        received = closed.rcvd
    assert received is not None, "no close frame"
    return received.code


def test_compressed_frames_are_refused_unread_and_cost_nobody_else(app, gunicorn_server, make_user):
    """One user sends frames marked compressed (RSV1) that would inflate to 60 MiB, over and
    over with one token: each socket is closed with 1002 without inflating anything, the
    worker's memory does not grow, and another user's messages keep flowing in order."""
    attacker, bob = make_user("mallory@example.com")[0], make_user("bob@example.com")[0]
    base = gunicorn_server.url.replace("http", "ws")
    token = token_for(app, attacker)
    bomb = compressed_frame(deflate_bomb(60 << 20))
    assert len(bomb) < 65536 < 60 << 20  # Under CHAT_MAX_FRAME_BYTES: only inflating is big.
    with connect(f"{base}/ws?token={token_for(app, bob)}", open_timeout=5) as witness:
        assert json.loads(witness.recv(timeout=5))["type"] == "hello"
        worker = gunicorn_server.worker_of(witness)
        before = peak_memory(worker)
        for attempt in range(20):
            url = f"{base}/ws?token={token}"
            with connect(url, open_timeout=5, compression="deflate") as attack:
                assert json.loads(attack.recv(timeout=5))["type"] == "hello"
                attack.socket.sendall(bomb)
                assert close_code(attack) == 1002
            assert echo(witness, f"meanwhile {attempt}")["text"] == f"meanwhile {attempt}"
        grown = peak_memory(worker) - before
    assert grown < 16 << 20, f"the worker's peak memory grew by {grown >> 20} MiB"
