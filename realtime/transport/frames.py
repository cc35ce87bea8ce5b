"""What goes out on a socket, by kind: the write policy is named here, not carried by types.

A ``MESSAGE`` is one of ours (a chat message, presence, an error): never sent after a close frame,
so it is dropped once the connection is closing. A ``CONTROL`` frame (a ping, a pong, a close
frame or the reply to the peer's) and the ``REST`` of a frame a non-blocking write cut short are
always sent, in order: a control frame answers the peer, and a half-written frame left unfinished
would corrupt the stream.
"""

import enum
from collections.abc import Callable
from dataclasses import dataclass

from wsproto.connection import Connection as Protocol
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import Event, TextMessage


class Kind(enum.Enum):
    """How a frame is treated once a close frame has gone (see the module's docstring)."""

    MESSAGE = "message"
    CONTROL = "control"
    REST = "rest"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Bytes to write, and their kind. A broadcast shares one among all its recipients."""

    kind: Kind
    data: bytes | memoryview

    @property
    def always_sent(self) -> bool:
        """True unless it is one of our messages, which a close frame makes moot."""
        return self.kind is not Kind.MESSAGE


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """Queued behind what is already queued: send a close frame with ``code``, then hang up."""

    code: int
    reason: str


class Stop:
    """Queued by ``Connection.close``: the writer thread ends once it gets here."""


STOP = Stop()


def encode_text(text: str) -> bytes:
    """A complete, unmasked text frame for ``text``: encoded once, written to every recipient.

    Uncompressed: the server declines permessage-deflate (``adapter.decline_compression``).
    """
    # wsproto's documented low-level connection, as an encoder: a fresh one costs microseconds,
    # once per broadcast, and shares no state between threads.
    return Protocol(ConnectionType.SERVER).send(TextMessage(data=text))


def message(text: str) -> Outgoing:
    """One of our messages, framed."""
    return Outgoing(Kind.MESSAGE, encode_text(text))


def messages(frames: list[bytes]) -> Outgoing:
    """Several framed messages in one buffer, written with one system call."""
    return Outgoing(Kind.MESSAGE, b"".join(frames))


def control(data: bytes) -> Outgoing:
    """A control frame (ping, pong, close, close reply), framed by the connection's protocol."""
    return Outgoing(Kind.CONTROL, data)


def rest(data: bytes | memoryview, sent: int) -> Outgoing:
    """What a non-blocking write left of a frame that it started."""
    return Outgoing(Kind.REST, memoryview(data)[sent:])


def coalesce(frames: list[Outgoing]) -> list[Outgoing]:
    """Consecutive messages joined into one buffer: one write for a group commit's several.

    A ``REST`` stays first and alone, and control frames keep their place between the runs.
    """
    result: list[Outgoing] = []
    run: list[Outgoing] = []
    for frame in frames:
        if frame.kind is Kind.MESSAGE:
            run.append(frame)
            continue
        if run:
            result.append(_joined(run))
            run = []
        result.append(frame)
    if run:
        result.append(_joined(run))
    return result


def _joined(run: list[Outgoing]) -> Outgoing:
    """One ``MESSAGE`` holding every frame of ``run`` (the frame itself if it is alone)."""
    return run[0] if len(run) == 1 else Outgoing(Kind.MESSAGE, b"".join(f.data for f in run))


def if_state(wanted: ConnectionState, event: Event) -> Callable[[ConnectionState], Event | None]:
    """``event`` if the connection is in state ``wanted`` when it is framed, else nothing (the
    choice ``Connection.send_control`` makes under its mutex)."""
    return lambda state: event if state is wanted else None


def if_open(event: Event) -> Callable[[ConnectionState], Event | None]:
    """``event`` while the connection is open, else nothing."""
    return if_state(ConnectionState.OPEN, event)
