"""Where an idle socket's memory goes: Python allocations per connection, from tracemalloc.

    PYTHONTRACEMALLOC=1 GUNICORN_CMD_ARGS="-c bench/tracemem.py" \\
        .venv/bin/python -m bench --only idle_2000 --no-reference
    .venv/bin/python -m bench.tracemem

Loaded as gunicorn's config file (``-c``), this file is the project's ``gunicorn.conf.py`` plus a
thread in the worker that takes a snapshot before the first socket and another once
``TRACEMEM_SOCKETS`` (default 2,000) are connected. Run as a module, it compares the two: what
the Python allocators hold per connection, by the line that allocated it. What it does not see
is the rest of RSS: thread stacks, the interpreter's frame stacks, malloc's own overhead.
"""

import os
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from realtime.runtime import runtime_of

SNAPSHOTS = Path(tempfile.gettempdir()) / "chat-tracemem"
SOCKETS = int(os.environ.get("TRACEMEM_SOCKETS", "2000"))


def _watch(app):
    """Snapshot now, then again one second after ``SOCKETS`` sockets are connected."""
    SNAPSHOTS.mkdir(exist_ok=True)
    tracemalloc.take_snapshot().dump(SNAPSHOTS / "before")
    hub = runtime_of(app).hub
    while len(hub._snapshot()) < SOCKETS:
        time.sleep(0.2)
    time.sleep(1)
    connected = len(hub._snapshot())
    tracemalloc.take_snapshot().dump(SNAPSHOTS / "connected")
    (SNAPSHOTS / "sockets").write_text(str(connected))


def report(top=25):
    """Print the growth per connection between the two snapshots, largest first."""
    before = tracemalloc.Snapshot.load(str(SNAPSHOTS / "before"))
    after = tracemalloc.Snapshot.load(str(SNAPSHOTS / "connected"))
    sockets = int((SNAPSHOTS / "sockets").read_text())
    stats = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in stats)
    print(f"{sockets} sockets: {total / sockets / 1024:.1f} KB of Python allocations each")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        print(
            f"{stat.size_diff / sockets:8.0f} B {stat.count_diff / sockets:5.1f} objects  {where}"
        )


if __name__ == "__main__":
    report()
elif tracemalloc.is_tracing():  # Loaded by gunicorn as its config file.
    exec((Path(__file__).resolve().parent.parent / "gunicorn.conf.py").read_text())  # noqa: S102
    _post_worker_init = post_worker_init  # noqa: F821 - defined by the exec above

    def post_worker_init(worker):
        """The project's hook, then the watcher thread."""
        _post_worker_init(worker)
        threading.Thread(target=_watch, args=(worker.wsgi,), daemon=True).start()
