"""``GET /metrics``: Prometheus's text format, on with ``CHAT_METRICS``, for ``CHAT_METRICS_ALLOW``.

What each metric means, and the alert worth setting on it, is in docs/operations.md.

The metric objects below are made once per process, at import, as prometheus_client documents;
nothing else is (no thread, no app state). Under gunicorn, ``gunicorn.conf.py`` sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker imports prometheus_client, each worker writes its
values to its own files there, and a scrape, whichever worker answers it, adds them all up
(``MultiProcessCollector``); without it (``flask run``, the tests) the default registry serves.

The socket stack knows nothing of this module (``realtime.stats``): its rare events (a commit
batch, a presence batch, a greeting, a lost backplane) are blinker signals this module listens
to, and what it counts often (deliveries, bytes, refusals) stays in plain counters that a
``Publisher`` copies in at each scrape, and under gunicorn every ``PUBLISH_INTERVAL`` seconds,
so that the hot path never makes a Prometheus call per socket.
"""

import dataclasses
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask import request_finished as flask_request_finished
from flask import request_started as flask_request_started
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

from extensions import limiter
from files import uploads
from realtime import stats
from realtime.runtime import Runtime, runtime_of
from realtime.stats import Count
from web.errors import json_error

log = logging.getLogger(__name__)

METRICS_KEY = "chat_metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PUBLISH_INTERVAL = 1.0  # Seconds between copies of a worker's plain counters, under gunicorn.
# Not HTTP requests for the latency histogram: the socket (its greeting has its own) and this.
UNTIMED_ENDPOINTS = frozenset({"realtime.chat_socket", "metrics"})
LOGIN_ENDPOINTS = frozenset({"accounts.login", "api.create_token"})
UPLOAD_ENDPOINT = "files.upload"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# ---- The metrics (names and meanings: docs/operations.md) -----------------------------------

OPEN_SOCKETS = Gauge(
    "chat_open_sockets", "Greeted sockets this worker serves.", multiprocess_mode="livesum"
)
GREETINGS = Gauge(
    "chat_greetings_in_progress",
    "Sockets upgraded and not yet greeted (hello, resume replay).",
    multiprocess_mode="livesum",
)
GREETING_SECONDS = Histogram(
    "chat_greeting_duration_seconds",
    "From the upgrade to the socket's hand-over to the poller, or its failure.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MESSAGES_STORED = Counter("chat_messages_stored", "Chat messages stored (new rows).")
COMMIT_BATCH = Histogram(
    "chat_commit_batch_size",
    "Posts the committer stored in one transaction.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
COMMIT_SECONDS = Histogram(
    "chat_commit_duration_seconds",
    "Time to store and publish one batch, the order lock's wait included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
COMMIT_QUEUE = Gauge(
    "chat_commit_queue_depth", "Posts waiting for the committer.", multiprocess_mode="livesum"
)
DELIVERIES = Counter(
    "chat_deliveries",
    "Frames handed to sockets by fan-out: chat messages (one per message and socket), other.",
    ["kind"],
)
SENT_BYTES = Counter("chat_sent_bytes", "Bytes written to chat sockets.")
CUT_OFF = Counter("chat_sockets_cut_off", "Sockets cut off because their backlog overflowed.")
BACKLOG = Gauge(
    "chat_send_backlog_frames",
    "Frames waiting in sockets' backlogs, in all.",
    multiprocess_mode="livesum",
)
LONGEST_BACKLOG = Gauge(
    "chat_send_backlog_longest_frames",
    "Frames waiting in the longest socket backlog.",
    multiprocess_mode="livemax",
)
PRESENCE_BATCH = Histogram(
    "chat_presence_batch_changes",
    "Arrivals, departures and renames (per user and room) one presence batch announced.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
HTTP_REQUESTS = Counter("chat_http_requests", "HTTP requests answered, by status.", ["status"])
HTTP_SECONDS = Histogram(
    "chat_http_request_duration_seconds",
    "Time to answer a page or API request.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SOCKET_REFUSALS = Counter(
    "chat_socket_refusals", "Socket upgrades refused before the greeting, by status.", ["status"]
)
BACKPLANE_RECONNECTS = Counter(
    "chat_backplane_reconnects", "Times this worker lost its Redis subscription."
)
LOGIN_FAILURES = Counter(
    "chat_login_failures", "Logins and token requests refused for a wrong email or password."
)
UPLOADS = Counter("chat_uploads", "Uploads answered, by status.", ["status"])
UPLOAD_BYTES = Counter("chat_upload_bytes", "Bytes of uploaded files stored, by kind.", ["kind"])
UPLOADS_PURGED = Counter("chat_uploads_purged", "Uploads never posted, removed after their TTL.")
RATE_LIMITED = Counter(
    "chat_rate_limited", "Requests and frames refused by a rate limit, by kind.", ["kind"]
)

# Children bound once: ``labels()`` looks its child up on every call.
_GREETED = GREETING_SECONDS.labels(outcome="greeted")
_NOT_GREETED = GREETING_SECONDS.labels(outcome="failed")
_COUNTED = {
    Count.MESSAGE_DELIVERIES: DELIVERIES.labels(kind="message"),
    Count.FRAME_DELIVERIES: DELIVERIES.labels(kind="frame"),
    Count.REFUSED_FRAMES: RATE_LIMITED.labels(kind="frame"),
    Count.REFUSED_MESSAGES: RATE_LIMITED.labels(kind="message"),
}
_LOGIN_LIMITED = RATE_LIMITED.labels(kind="login")
_UPLOAD_LIMITED = RATE_LIMITED.labels(kind="upload")
_IMAGE_BYTES = UPLOAD_BYTES.labels(kind="image")
_FILE_BYTES = UPLOAD_BYTES.labels(kind="file")


# ---- Plain counters, copied in ------------------------------------------------------------


class Publisher:
    """Copies one app's plain counters and levels into the metrics: at each scrape, and under
    gunicorn from a thread of its own, every ``PUBLISH_INTERVAL`` seconds."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()  # Guards ``_published``: the thread and a scrape.
        self._published: dict[object, int] = {}  # What each counter was given so far.
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        """Bring the metrics up to date with this worker's counters and levels."""
        runtime = self._runtime
        totals = runtime.hub.totals()
        counted: list[tuple[Counter, object, int]] = [
            (SENT_BYTES, "bytes", totals.bytes_sent),
            (CUT_OFF, "cut off", totals.cut_off),
        ]
        counted += [(_COUNTED[what], what, n) for what, n in runtime.hub.tally.read().items()]
        with self._lock:  # Only ever up: a socket's bytes dip while it ends (``Hub.totals``).
            for counter, key, total in counted:
                if total > self._published.get(key, 0):
                    counter.inc(total - self._published.get(key, 0))
                    self._published[key] = total
        OPEN_SOCKETS.set(len(runtime.poller))
        BACKLOG.set(totals.backlog)
        LONGEST_BACKLOG.set(totals.longest_backlog)
        COMMIT_QUEUE.set(runtime.commits.waiting())

    def start(self) -> None:
        """Publish every ``PUBLISH_INTERVAL`` seconds from now on (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="chat-metrics", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Publish one last time and stop (a worker exiting: what it counted stays counted)."""
        self._stopping.set()
        self.publish()

    def _run(self) -> None:
        """Publish until stopped; a bug is logged, and the next round tries again."""
        while not self._stopping.wait(PUBLISH_INTERVAL):
            try:
                self.publish()
            except Exception:
                log.exception("could not publish the metrics")


@dataclasses.dataclass(frozen=True)
class Settings:
    """One app's metrics: who may read them, and its publisher (None: metrics are off)."""

    allow: tuple[Network, ...]
    publisher: Publisher | None


def _settings(app: Flask) -> Settings:
    return app.extensions[METRICS_KEY]


def start_publishing(app: Flask) -> None:
    """Under gunicorn (``post_worker_init``): publish this worker's counters periodically, as
    a scrape may reach another worker."""
    publisher = _settings(app).publisher
    if publisher is None:
        return
    if not os.environ.get(MULTIPROC_ENV):
        # CHAT_METRICS came from instance/config.py, which gunicorn.conf.py does not read.
        log.warning(
            "CHAT_METRICS is on without %s: each worker answers /metrics with its own numbers; "
            "set CHAT_METRICS=1 in the environment (docs/operations.md)",
            MULTIPROC_ENV,
        )
        return  # Its scrapes publish what it has: no other worker reads its files.
    publisher.start()


def stop_publishing(app: Flask) -> None:
    """Under gunicorn (``worker_exit``): publish one last time."""
    publisher = _settings(app).publisher
    if publisher is not None:
        publisher.stop()


# ---- Signals and requests, listened to ----------------------------------------------------


def _on_greeting_started(_hub: object) -> None:
    GREETINGS.inc()


def _on_greeting_ended(_hub: object, seconds: float, greeted: bool) -> None:
    GREETINGS.dec()
    (_GREETED if greeted else _NOT_GREETED).observe(seconds)


def _on_messages_stored(_hub: object, posts: int, stored: int, seconds: float) -> None:
    MESSAGES_STORED.inc(stored)
    COMMIT_BATCH.observe(posts)
    COMMIT_SECONDS.observe(seconds)


def _on_presence_sent(_hub: object, changes: int, **_extra: object) -> None:
    PRESENCE_BATCH.observe(changes)


def _on_backplane_lost(_hub: object) -> None:
    BACKPLANE_RECONNECTS.inc()


def _on_request_started(_app: Flask, **_extra: object) -> None:
    g.chat_request_started = time.perf_counter()


def _on_request_finished(_app: Flask, response: Response, **_extra: object) -> None:
    """Count the response by status; time it unless it is the socket's or a scrape."""
    endpoint, status = request.endpoint, response.status_code
    if endpoint == "realtime.chat_socket":
        if status != 200:  # A refusal; an upgraded socket's response is Flask-Sock's 200.
            SOCKET_REFUSALS.labels(status=str(status)).inc()
        return
    if endpoint in UNTIMED_ENDPOINTS:
        return
    HTTP_REQUESTS.labels(status=str(status)).inc()
    started = g.get("chat_request_started")
    if started is not None:
        HTTP_SECONDS.observe(time.perf_counter() - started)
    if endpoint == UPLOAD_ENDPOINT:
        UPLOADS.labels(status=str(status)).inc()
        if status == 429:
            _UPLOAD_LIMITED.inc()
    if endpoint in LOGIN_ENDPOINTS:
        if status == 401:
            LOGIN_FAILURES.inc()
        elif status == 429:
            _LOGIN_LIMITED.inc()


def _on_upload_stored(_sender: object, size: int, image: bool) -> None:
    (_IMAGE_BYTES if image else _FILE_BYTES).inc(size)


def _on_uploads_purged(_sender: object, count: int) -> None:
    UPLOADS_PURGED.inc(count)


def _listen(app: Flask) -> None:
    """Connect the receivers: the socket stack's for any sender (the metrics are the process's,
    and connecting one function again is a no-op), Flask's for this app."""
    for signal, receiver in (
        (stats.greeting_started, _on_greeting_started),
        (stats.greeting_ended, _on_greeting_ended),
        (stats.messages_stored, _on_messages_stored),
        (stats.presence_sent, _on_presence_sent),
        (stats.backplane_lost, _on_backplane_lost),
        (uploads.upload_stored, _on_upload_stored),
        (uploads.uploads_purged, _on_uploads_purged),
    ):
        signal.connect(receiver, weak=False)
    flask_request_started.connect(_on_request_started, app)
    flask_request_finished.connect(_on_request_finished, app)


# ---- The page ------------------------------------------------------------------------------


def parse_allow_list(entries: Iterable[str]) -> tuple[Network, ...]:
    """``CHAT_METRICS_ALLOW`` as networks (an address is a network of one); RuntimeError if an
    entry is neither."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise RuntimeError(
                f"CHAT_METRICS_ALLOW: {entry!r} is not an IP address or network (CIDR)"
            ) from None
    return tuple(networks)


def _allowed(address: str | None, networks: tuple[Network, ...]) -> bool:
    """True if ``address`` is in one of ``networks`` (an IPv4-mapped IPv6 address as IPv4)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False  # No address (a Unix socket), or not one: refuse.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def _peer_address() -> str | None:
    """The address that connected to us: the proxy's, when ProxyFix rewrote REMOTE_ADDR."""
    original: dict[str, Any] = request.environ.get("werkzeug.proxy_fix.orig", {})
    return original.get("REMOTE_ADDR", request.environ.get("REMOTE_ADDR"))


def serve_metrics() -> Response | tuple[Response, int]:
    """The metrics of every worker, to the addresses ``CHAT_METRICS_ALLOW`` lets in."""
    settings = _settings(current_app)
    publisher, allow = settings.publisher, settings.allow
    if publisher is None:
        return json_error(404, "not_found", "Metrics are off (CHAT_METRICS).")
    if not (_allowed(_peer_address(), allow) and _allowed(request.remote_addr, allow)):
        return json_error(403, "forbidden", "This address may not read the metrics.")
    publisher.publish()
    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    # The format Prometheus asks for (the text format by default), as make_wsgi_app does.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = Response(encode(registry), content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    """Register ``GET /metrics`` (404 unless ``CHAT_METRICS``); with it, start counting."""
    allow = parse_allow_list(app.config["CHAT_METRICS_ALLOW"])
    app.add_url_rule("/metrics", "metrics", limiter.exempt(serve_metrics), methods=["GET"])
    if not app.config["CHAT_METRICS"]:
        app.extensions[METRICS_KEY] = Settings(allow, None)
        return
    app.extensions[METRICS_KEY] = Settings(allow, Publisher(runtime_of(app)))
    _listen(app)
