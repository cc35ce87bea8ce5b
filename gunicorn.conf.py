"""Gunicorn settings, read automatically when gunicorn starts in this folder.

A WebSocket holds a gthread thread only while it is authenticated and greeted; then its handler
hands it to the worker's poller (poller.py) and returns, so ``threads`` bounds the requests and
greetings in progress, not the open sockets (``CHAT_MAX_SOCKETS`` does). The access log leaves
out query strings: browsers pass the socket token as ``?token=``.
"""

import contextlib
import os
import re
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

    from realtime.runtime import Runtime

worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", "1"))  # More than 1 needs REDIS_URL.
threads = int(os.environ.get("GUNICORN_THREADS", "100"))
# gthread accepts up to worker_connections connections in progress, whatever ``threads`` says;
# one accepted with every thread busy waits in the worker for a thread. A socket handed to the
# poller no longer counts, and a greeting ends, so a queued connection always gets its turn: the
# cap is 10,000 (CHAT_MAX_SOCKETS' default; or ``threads``, if more), so that a storm of sockets
# (every client reconnecting after a restart) waits in the worker, in order, rather than in the
# kernel's accept queue. Past that queue (2,048) a SYN is dropped and its client retries after
# 1, 3, 7, ... 63 s (with gunicorn's 1,000 and slower greetings, a storm of 5,000 once left
# about 100 clients unadmitted after two minutes). No idle keep-alive connection holds a slot:
# the chat's HTTP requests are few. (Set in on_starting, once the command line's --threads is
# known.)
keepalive = 0
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "10"))
# Addresses whose X-Forwarded-* headers gunicorn trusts: the proxy in front (nginx on this host).
# The app itself reads them through ProxyFix when CHAT_PROXY_HOPS is set.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
# %(U)s is the path without its query string.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss "%(a)s"'

# ---- Metrics: several workers, one scrape ------------------------------------------------------
# With CHAT_METRICS on, every worker keeps its metrics in files of its own in one directory, and
# /metrics adds them all up, whichever worker answers (docs/operations.md). prometheus_client
# reads PROMETHEUS_MULTIPROC_DIR once, when a process first imports it: it is set here, in the
# master, before any worker exists, and this file imports nothing that imports it. A reload
# (HUP) reads this file again and keeps the directory: the old workers' counts still count.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_OWN_DIR_ENV = "_CHAT_OWN_METRICS_DIR"  # Set when the directory is ours to remove at exit.
# prometheus_client's files (kind, then process id): nothing else in the directory is touched.
_METRIC_FILE = re.compile(r"(counter|gauge_[a-z]+|histogram|summary)_\d+\.db")
_metrics_on = os.environ.get("CHAT_METRICS", "").strip().lower() in {"1", "true", "yes", "on"}
if _metrics_on and not os.environ.get(MULTIPROC_ENV):
    os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="chat-metrics-")  # Mode 0700.
    os.environ[_OWN_DIR_ENV] = os.environ[MULTIPROC_ENV]

# ---- Logs ----------------------------------------------------------------------------------------
# With CHAT_LOG_FORMAT=json, gunicorn's own lines are JSON lines too (ops/logs.py). Imported only
# then, and below the metrics block: ``ops`` imports ops.metrics, hence prometheus_client.
if os.environ.get("CHAT_LOG_FORMAT") == "json":
    from ops.logs import gunicorn_logconfig

    logconfig_dict = gunicorn_logconfig() or {}


def on_starting(server: "Arbiter") -> None:
    """Refuse several workers without Redis (each would have its own hub, and rooms would split)
    and TLS in gunicorn; how many connections may be in progress (above); no stale metrics."""
    if server.cfg.workers > 1 and not os.environ.get("REDIS_URL"):
        raise SystemExit(
            "Several workers share chat rooms through Redis: set REDIS_URL, or run one worker."
        )
    if server.cfg.is_ssl:
        # The poller reads sockets it owns with plain recv(): TLS ends at the proxy (nginx).
        raise SystemExit("Terminate TLS at the proxy (docs/deploy.md), not in gunicorn.")
    _set_worker_connections(server)
    _clear_metrics()


def on_reload(server: "Arbiter") -> None:
    """A reload (HUP) made a fresh configuration from this file, and on_starting does not run
    again: without this, worker_connections would fall back to gunicorn's 1,000."""
    _set_worker_connections(server)


def _set_worker_connections(server: "Arbiter") -> None:
    """How many connections each worker may have in progress (above)."""
    default = max(10_000, server.cfg.threads)
    connections = os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(default))
    server.cfg.set("worker_connections", int(connections))


def _clear_metrics() -> None:
    """Remove the metric files a previous run left in the directory (counters start at 0)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        for stale in Path(directory).glob("*.db"):
            if _METRIC_FILE.fullmatch(stale.name):
                stale.unlink()


def child_exit(server: "Arbiter", worker: "Worker") -> None:
    """A worker is gone: its gauges stop counting (its counters still do)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess  # Here, once the directory is set.

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: "Arbiter") -> None:
    """Remove the metrics directory made above (not one the operator chose)."""
    directory = os.environ.get(_OWN_DIR_ENV)
    if directory and directory == os.environ.get(MULTIPROC_ENV):
        _clear_metrics()
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def post_worker_init(worker: "Worker") -> None:
    """Join the backplane at once; on SIGTERM, close every chat socket with 1001 (reconnect now).

    gunicorn then waits up to ``graceful_timeout`` for requests to end; a WebSocket only ends when
    it is closed, so without this every restart would wait the whole timeout and then cut sockets.
    """
    _join_backplane(worker.wsgi)
    _publish_metrics(worker.wsgi)
    graceful_stop = worker.handle_exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        runtime: Runtime | None = worker.wsgi.extensions.get("chat_runtime")
        if runtime is not None:
            runtime.close_sockets()  # 1001: only queues close frames, never blocks.
        graceful_stop(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)


def worker_exit(server: "Arbiter", worker: "Worker") -> None:
    """Let the sockets finish closing, store the messages still queued, then send the last
    presence batch (not on a crash)."""
    extensions: dict[str, Any] = worker.wsgi.extensions if hasattr(worker, "wsgi") else {}
    runtime: Runtime | None = extensions.get("chat_runtime")
    if runtime is not None:
        # No request holds the sockets, so gunicorn did not wait: their close frames are on the way.
        runtime.shutdown(server.cfg.graceful_timeout)
    if "chat_metrics" in extensions:
        from ops import metrics

        metrics.stop_publishing(worker.wsgi)  # What it counted last stays counted.


def _publish_metrics(app: "Flask") -> None:
    """With CHAT_METRICS, copy this worker's counters into its metric files periodically: a
    scrape reaches one worker, and reads the others' files."""
    if app.config.get("CHAT_METRICS"):
        from ops import metrics  # In the worker: the app imported it already.

        metrics.start_publishing(app)


def _join_backplane(app: "Flask") -> None:
    """Subscribe before the first client arrives (the app would otherwise do it on demand)."""
    runtime: Runtime | None = app.extensions.get("chat_runtime")
    if runtime is not None:
        with app.app_context():
            runtime.start()
