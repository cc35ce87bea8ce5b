"""The one owner of a worker's socket stack: it builds, starts and stops every part of it.

The socket route, the gunicorn hooks and the tests call it, never each part by its own key:
the backplane (memory or Redis), the hub and its presence batcher, the committer, the poller.
It also listens to the accounts' signals, so the pages never reach into the socket stack.
"""

import logging
from collections.abc import Callable, Iterable

from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError

from accounts.signals import (
    avatar_changed,
    password_changed,
    user_deactivated,
    user_renamed,
    user_signed_out,
)
from extensions import db
from realtime.arrivals import Arrivals
from realtime.backplane import BackplaneError, RedisBackplane
from realtime.commits import GroupCommit
from realtime.hub import Hub
from realtime.protocol import CLOSE_GOING_AWAY, CLOSE_REVOKED
from realtime.transport.poller import Poller

log = logging.getLogger(__name__)

RUNTIME_KEY = "chat_runtime"


class Runtime:
    """Hub, backplane, presence batcher, committer and poller of one app, started together."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        backplane = _backplane(config, self._bury)
        self.hub = Hub(backplane, config["CHAT_PRESENCE_BATCH"])
        self.commits = GroupCommit(app, self.hub)
        self.arrivals = Arrivals(self.hub)
        self.poller = Poller(config["CHAT_SERVE_THREADS"], app.app_context)
        self._app = app
        self._closing = False

    def start(self) -> None:
        """Start every part; later calls do nothing (the first socket calls it, or the worker)."""
        self.hub.start()
        self.commits.start()
        self.poller.start()

    def close_sockets(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "Server restarting"
    ) -> None:
        """Queue a close frame to every socket of this worker; never blocks (a signal handler)."""
        self._closing = True  # From now on /readyz answers 503: send no new clients here.
        self.hub.close_all(code, reason)

    @property
    def closing(self) -> bool:
        """True once this worker was told to stop (SIGTERM): it takes no new socket."""
        return self._closing

    def health(self) -> dict[str, bool]:
        """What ``/readyz`` reports of the socket stack: its backplane delivers events to this
        worker, and the worker is not shutting down."""
        return {"backplane": self.hub.ready(), "worker": not self._closing}

    def shutdown(self, timeout: float) -> None:
        """A worker exits: let the sockets finish closing (at most ``timeout`` seconds), store
        the messages still queued, then send the last presence batch."""
        if not self.poller.wait_empty(timeout):
            log.warning("sockets still open after the graceful timeout")
        self.poller.stop()
        self.commits.stop()
        try:
            self.hub.presence.flush()
        except Exception:  # Exiting regardless: other workers bury its users when they expire.
            log.exception("could not send the last presence batch")
        self.hub.stop()

    def stop(self) -> None:
        """Stop every thread at once (a test's teardown): nothing is served or stored after it."""
        self.poller.stop()
        self.commits.stop()
        self.hub.stop()

    def listen(self) -> None:
        """Act on the accounts' signals for this app only."""
        # Bound methods, held weakly by blinker: they live as long as the app holds the runtime.
        user_renamed.connect(self._on_renamed, sender=self._app)
        user_signed_out.connect(self._on_revoked, sender=self._app)
        password_changed.connect(self._on_revoked, sender=self._app)
        user_deactivated.connect(self._on_revoked, sender=self._app)
        avatar_changed.connect(self._on_avatar_changed, sender=self._app)

    def _on_revoked(self, _app: Flask, user_id: int, **_details: object) -> None:
        """Their tokens no longer open sockets: close the open ones, on every worker, with 4001."""
        self.hub.close_user(user_id, CLOSE_REVOKED, "Signed out")

    def _on_renamed(self, _app: Flask, user_id: int, name: str) -> None:
        """A user changed their display name: their sockets, and everyone in their rooms, learn it.

        The next ``presence`` batch lists them as online with the new name; their messages from
        now on carry it (older ones keep the name they were shown with).
        """
        hub = self.hub
        try:
            with hub.ordered():
                hub.rename(user_id, name)
                for room_id, key in hub.rooms_of(user_id).items():
                    hub.presence.note(room_id, key, user_id, name, echo=True)
        except (SQLAlchemyError, BackplaneError):
            log.warning(
                "could not announce the new name of user %s", user_id, extra={"user_id": user_id}
            )

    def _on_avatar_changed(self, _app: Flask, user_id: int, avatar_url: str | None) -> None:
        """A user's picture changed: their messages from now on carry it, on every worker.

        In the hub's order, as messages are stored: a greeting reads the picture and registers
        its socket in one step, so no socket keeps the old one.
        """
        try:
            with self.hub.ordered():
                self.hub.set_avatar(user_id, avatar_url)
        except BackplaneError:
            log.warning(
                "could not announce the new picture of user %s", user_id, extra={"user_id": user_id}
            )

    def _bury(self, gone: Iterable[tuple[int, str, dict[int, str]]]) -> None:
        """Announce the users of a dead worker as gone ([(user id, name, {room id: key})])."""
        for user_id, name, rooms_left in gone:
            for room_id, key in rooms_left.items():
                self.hub.presence.note(room_id, key, user_id, name)


def current_runtime() -> Runtime:
    """The runtime of the current app."""
    return runtime_of(current_app)


def runtime_of(app: Flask) -> Runtime:
    """The runtime of ``app`` (``realtime.init_app`` made it)."""
    return app.extensions[RUNTIME_KEY]


def _backplane(
    config: dict, on_departed: Callable[[Iterable[tuple[int, str, dict[int, str]]]], None]
) -> RedisBackplane | None:
    """Redis pub/sub when ``REDIS_URL`` is set (several workers or hosts), else in memory."""
    if not config.get("REDIS_URL"):
        return None
    return RedisBackplane(
        config["REDIS_URL"],
        config["CHAT_REDIS_PREFIX"],
        config["CHAT_PRESENCE_HEARTBEAT"],
        config["CHAT_PRESENCE_TTL"],
        on_departed,
        engine=lambda: db.engine,
    )
