"""What the socket stack counts and announces, for whoever watches it (``ops.metrics`` does).

Nothing here knows Prometheus, and the socket stack never imports ``ops``. What happens often
(a fan-out, a refused frame, a write) is added to plain counters that the watcher reads when it
likes: a ``Tally``, or an attribute (``Connection.bytes_sent``). What happens once a batch or
once a socket (a group commit, a presence batch, a greeting, a lost backplane) is a blinker
signal, sent with the hub as sender: a few microseconds when someone listens, next to nothing
when nobody does.
"""

import collections
import enum
import threading

from blinker import Namespace


class Count(enum.Enum):
    """What a ``Tally`` counts."""

    MESSAGE_DELIVERIES = "message"  # Chat messages handed to sockets: one per message and socket.
    FRAME_DELIVERIES = "frame"  # Other frames fanned out (presence, typing, read markers...).
    REFUSED_FRAMES = "frame rate"  # Frames refused by a socket's frame rate limit.
    REFUSED_MESSAGES = "message rate"  # Chat messages refused by their user's message limit.


class Tally:
    """Counts that several threads add to, read as a whole; one lock, held for an addition."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[Count] = collections.Counter()

    def add(self, what: Count, amount: int = 1) -> None:
        """Count ``amount`` more of ``what``."""
        with self._lock:
            self._counts[what] += amount

    def read(self) -> dict[Count, int]:
        """Every count so far (zero for those not counted yet)."""
        with self._lock:
            return {what: self._counts[what] for what in Count}


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
