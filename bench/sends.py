"""What one socket of a fan-out costs: ``python -m bench.sends [SOCKETS] [ROUNDS] [MODE ...]``.

Each broadcast hands the same encoded frame to every socket of a room through
``hub.Connection.send``; this times that inner loop against bare ``socket.send`` calls, over
local socket pairs that a second pass drains (so no write ever blocks). ``direct`` is a send
outside ``Hub.ordered()``, ``deferred`` one under it (queued, then flushed once the order lock
is free: how the committer fans messages out). The connections' WebSocket is a stand-in with an
open state: this measures our code and the system call, not wsproto.

Times move with the machine's load; to compare two versions of the code, count instructions
instead, one mode at a time: ``valgrind --tool=callgrind python -m bench.sends 500 200 MODE``
for ``raw`` and for the mode measured, on each version; the difference over the number of sends
(here 500 x 200) is what one send costs above a bare system call.
"""

import socket
import sys
import time
import types

from wsproto.connection import ConnectionState

import hub


def connections(count):
    """``count`` connected socket pairs, the sending side wrapped in a ``hub.Connection``."""
    pairs = [socket.socketpair() for _ in range(count)]
    conns = []
    for ours, _ in pairs:
        ours.setblocking(False)
        ws = types.SimpleNamespace(
            sock=ours,
            ws=types.SimpleNamespace(connection=types.SimpleNamespace(state=ConnectionState.OPEN)),
        )
        conns.append(hub.Connection(ws, 1, "user", queue_size=1000))
    return pairs, conns


def fan_out(mode, pairs, conns, frame):
    """One broadcast of ``frame`` to every socket."""
    if mode == "raw":
        for ours, _ in pairs:
            ours.send(frame, socket.MSG_DONTWAIT)
    elif mode == "direct":
        for conn in conns:
            conn.send(frame)
    else:
        hub._deferred.connections = touched = []
        for conn in conns:
            conn.send(frame)
        hub._deferred.connections = None
        for conn in touched:
            conn.flush()


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
    frame = hub.encode_frame("x" * 200)  # About a chat message frame's size.
    for mode in modes:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(max(rounds // 5, 1)):
                fan_out(mode, pairs, conns, frame)
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
