"""What one socket of a fan-out costs: ``python -m bench.sends [SOCKETS] [ROUNDS] [MODE ...]``.

Each broadcast hands the same encoded frame to every socket of a room through ``Hub.send``;
this times that inner loop against bare ``socket.send`` calls, over local socket pairs that a
second pass drains (so no write ever blocks). ``direct`` is a send outside ``Hub.ordered()``,
``deferred`` one under it (queued, then flushed once the order lock is free: how the committer
fans messages out).

Times move with the machine's load; to compare two versions of the code, count instructions
instead, one mode at a time: ``valgrind --tool=callgrind python -m bench.sends 500 200 MODE``
for ``raw`` and for the mode measured, on each version; the difference over the number of sends
(here 500 x 200) is what one send costs above a bare system call.
"""

import socket
import sys
import time

from realtime.hub import Hub
from realtime.transport import frames
from realtime.transport.connection import Connection


def connections(count):
    """``count`` connected socket pairs, the sending side wrapped in a ``Connection``."""
    pairs = [socket.socketpair() for _ in range(count)]
    conns = [Connection(ours, 1, "user", queue_size=1000) for ours, _ in pairs]
    return pairs, conns


def fan_out(mode, hub, pairs, conns, frame):
    """One broadcast of ``frame`` to every socket."""
    if mode == "raw":
        for ours, _ in pairs:
            ours.send(frame.data, socket.MSG_DONTWAIT)
    elif mode == "direct":
        for conn in conns:
            hub.send(conn, frame)
    else:
        with hub.ordered():  # Queued under the order lock, written once it is free.
            for conn in conns:
                hub.send(conn, frame)


def drain(pairs):
    """Read everything the peers were sent, so that no send would block."""
    for _, theirs in pairs:
        try:
            while theirs.recv(1 << 20, socket.MSG_DONTWAIT):
                pass
        except BlockingIOError:
            pass


MODES = ("raw", "direct", "deferred")


def main(count=1000, rounds=200, modes=MODES):
    """Microseconds per socket per broadcast, the best of five batches, for each mode."""
    pairs, conns = connections(count)
    hub = Hub()
    frame = frames.message("x" * 200)  # About a chat message frame's size.
    for mode in modes:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(max(rounds // 5, 1)):
                fan_out(mode, hub, pairs, conns, frame)
            elapsed = time.perf_counter() - started
            drain(pairs)
            best = min(best, elapsed / max(rounds // 5, 1) / count * 1e6)
        print(f"{mode:9} {best:6.2f} µs per socket")


if __name__ == "__main__":
    modes = tuple(sys.argv[3:]) or MODES
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"unknown mode {', '.join(sorted(unknown))}: choose from {', '.join(MODES)}")
    main(*(int(arg) for arg in sys.argv[1:3]), modes=modes)
