"""What the socket stack counts and announces, for whoever watches it (``ops.metrics`` does).

Nothing here knows Prometheus, and the socket stack never imports ``ops``. What happens often
(a fan-out, a refused frame, a write) is added to plain counters that the watcher reads when it
likes: a ``Tally``, or an attribute (``Connection.bytes_sent``). What happens once a batch or
once a socket (a group commit, a presence batch, a greeting, a lost backplane) is a blinker
signal, sent with the hub as sender: a few microseconds when someone listens, next to nothing
when nobody does.
"""

import enum
import threading

from blinker import Namespace


class Count(enum.IntEnum):
    """What a ``Tally`` counts (numbered: a tally is a list, indexed by them)."""

    MESSAGE_DELIVERIES = 0  # Chat messages handed to sockets: one per message and socket.
    FRAME_DELIVERIES = 1  # Other frames fanned out (presence, typing, read markers...).
    REFUSED_FRAMES = 2  # Frames refused by a socket's frame rate limit.
    REFUSED_MESSAGES = 3  # Chat messages refused by their user's message limit.


class Tally:
    """Counts that several threads add to, read as a whole; one lock, held for an addition.

    A list indexed by ``Count``, not a Counter keyed by it: an Enum's hash runs Python code, on
    the fan-out's path.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * len(Count)

    def add(self, what: Count, amount: int = 1) -> None:
        """Count ``amount`` more of ``what``."""
        with self._lock:
            self._counts[what] += amount

    def read(self) -> dict[Count, int]:
        """Every count so far."""
        with self._lock:
            counts = list(self._counts)
        return {what: counts[what] for what in Count}


_signals = Namespace()

#: A socket's greeting (or resume) began: its upgrade was accepted.
greeting_started = _signals.signal("greeting-started")
#: ``seconds``, ``greeted``: a greeting ended, handed to the poller (``greeted``) or not.
greeting_ended = _signals.signal("greeting-ended")
#: ``posts``, ``stored``, ``seconds``: the committer took ``posts`` posts, stored ``stored`` new
#: messages, and took ``seconds`` to store and publish them (the order lock's wait included).
messages_stored = _signals.signal("messages-stored")
#: ``changes``, ``rooms``: a presence batch announced ``changes`` (user, room) changes in as many
#: frames as ``rooms``.
presence_sent = _signals.signal("presence-sent")
#: This worker lost its backplane subscription (Redis went away) and subscribes again.
backplane_lost = _signals.signal("backplane-lost")
