"""What a thread blocked on a socket costs in resident memory: ``python -m bench.threads``.

The chat holds one thread per socket (the request thread, which also reads the socket), so this
is the floor of its memory per connection before any Python object of its own.
"""

import select
import socket
import sys
import threading
import time
from pathlib import Path


def resident_kb():
    """This process's resident set, in KB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


def block(sock):
    """Wait for a socket that never becomes readable, as an idle chat socket's thread does."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.poll()


def main(count=2000):
    """Start ``count`` blocked threads and print the resident memory each one added."""
    pairs = [socket.socketpair() for _ in range(count)]
    time.sleep(0.2)
    before = resident_kb()
    for ours, _ in pairs:
        threading.Thread(target=block, args=(ours,), daemon=True).start()
    time.sleep(1)
    each = (resident_kb() - before) / count
    print(f"{each:.1f} KB resident per blocked thread ({count} threads)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
