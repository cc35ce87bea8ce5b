"""Frame codecs for the load generator: the chat's JSON frames, and Socket.IO's over Engine.IO.

Pure (no I/O, unit-testable alone): a codec turns a text frame's payload into one of three
kinds, and a frame to send into a payload. The clients stay the same whichever server they load.

Socket.IO v5 over Engine.IO v4, WebSocket transport only
(``/socket.io/?EIO=4&transport=websocket``): the server opens with ``0{"sid", "pingInterval",
…}``, the client joins the default namespace with ``40`` and is answered ``40{"sid": …}``;
events are ``42["name", data]``; the server pings with ``2`` and a client that does not answer
``3`` within pingTimeout is dropped.
"""

import json

# What a payload is, to the client that received it.
FRAME = "frame"  # A frame for the client: the body is its JSON object, still encoded.
REPLY = "reply"  # Protocol housekeeping: send the body back, nothing for the client.
IGNORE = "ignore"  # Protocol housekeeping with no answer.


class JsonCodec:
    """The chat's and the asyncio reference's frames: a JSON object per text frame."""

    path = "/ws"
    # Sent on connect before anything is read (nothing: the server speaks first).
    join = None

    def decode(self, payload: bytes) -> tuple[str, bytes]:
        """Every payload is a frame."""
        return FRAME, payload

    def encode(self, frame: dict) -> bytes:
        """The frame as JSON."""
        return json.dumps(frame).encode()


class SocketIOCodec:
    """Socket.IO events on the default namespace; frames are events whose data is the frame."""

    path = "/socket.io/?EIO=4&transport=websocket"
    # Joining the namespace at once lets a client that never reads still receive broadcasts.
    join = b"40"

    def decode(self, payload: bytes) -> tuple[str, bytes]:
        """An event's data (``42["name",{…}]``), or the answer the protocol wants, if any."""
        if payload.startswith(b"42"):
            # The event name ("hello", "message") has no comma: the data follows the first one.
            return FRAME, payload[payload.index(b",") + 1 : -1]
        if payload == b"2":
            return REPLY, b"3"  # Engine.IO ping, pong.
        if payload.startswith(b"0"):
            return REPLY, b"40"  # Engine.IO open: join the namespace.
        return IGNORE, b""  # 40{"sid": …} (joined), 41 (left), and the rest.

    def encode(self, frame: dict) -> bytes:
        """The frame as a ``message`` event."""
        return b"42" + json.dumps(["message", frame]).encode()


CODECS = {"json": JsonCodec, "socketio": SocketIOCodec}
