"""A greeted socket between frames: parsed, rate-limited and dispatched as the poller wakes it."""

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, TypeVarTuple

from babel import Locale
from flask import current_app
from flask_babel import force_locale

from core.throttle import TokenBucket
from extensions import db
from realtime import handlers, protocol
from realtime.greeting import end, send_error
from realtime.hub import Hub
from realtime.protocol import CLOSE_FLOOD
from realtime.stats import Count
from realtime.transport.connection import Connection
from realtime.transport.poller import BATCH, Poller
from realtime.transport.reader import CLOSE_TIMEOUT, ConnectionClosed

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


class Session:
    """A greeted socket, served frame by frame by the poller (``poller.py``): chat messages in
    its epoll thread, commands (which may wait) in its pool."""

    def __init__(
        self, config: Mapping[str, Any], poller: Poller, hub: Hub, conn: Connection
    ) -> None:
        self._hub = hub
        self._conn = conn
        # Parsed once: forcing a locale given as a string parses it again on every frame.
        self._locale = Locale.parse(conn.locale) if conn.locale else None
        self._poller = poller
        self._frames = TokenBucket(config["CHAT_FRAME_RATE"], config["CHAT_FRAME_BURST"])
        # Refusals a socket may collect before it counts as abuse; they come back at one a second.
        self._strikes = TokenBucket(1, config["CHAT_FLOOD_STRIKES"])
        # Closed for flooding: what it still sends is dropped until then, when it is cut off.
        self._discard_until: float | None = None
        # A command handed to a pool thread with the session.
        self._pending: protocol.Command | None = None
        self._fd = -1  # The socket's file descriptor, once started.
        self._mutex = threading.Lock()  # Guards the two flags below.
        self._running = False  # A thread is serving it.
        self._again = False  # It was woken while served: look again before arming the socket.

    def start(self) -> None:
        """Hand the socket to the poller, and serve what arrived meanwhile; the request that
        opened it may end now."""
        self._fd = self._conn.fileno()
        self._running = True
        try:
            self._poller.adopt(self, self._fd)
        except (OSError, ValueError):  # The poller stopped: the worker is exiting.
            self._conn.abort()
            self._finish()
            return
        self._running = False
        self.wake()  # Frames that came with the greeting's may be read already: none may wait.

    def next_due(self) -> float | None:
        """When it must be served even without frames (a ping, a close or a flooder's timeout)."""
        times = [t for t in (self._conn.reader.next_due(), self._discard_until) if t is not None]
        return min(times, default=None)

    def wake(self) -> None:
        """Serve it in this thread (the epoll thread), unless it is being served elsewhere
        (which then looks again)."""
        with self._mutex:
            if self._running:
                self._again = True
                return
            self._running = True
        self._run(inline=True)

    def resume(self) -> None:
        """Serve it in a pool thread: the frame that may wait first, then the rest of its turn."""
        self._run(inline=False)

    def _run(self, inline: bool) -> None:
        """Handle what has arrived, then arm the socket again; at the end, clean up after it."""
        while True:
            try:
                if self._serve(BATCH, inline):
                    return  # Handed to a pool thread, which goes on from here.
            except ConnectionClosed:
                # Saying goodbye may wait (for its last messages, for its writer): not on the
                # poller's threads. Nothing runs the session any more.
                self._poller.retire(self._finish)
                return
            except Exception:
                # A bug: the socket must still end properly, not linger unserved forever.
                current_app.logger.exception(
                    "serving a socket of user %s",
                    self._conn.user_id,
                    extra={"user_id": self._conn.user_id},
                )
                self._conn.abort()
                self._poller.retire(self._finish)
                return
            with self._mutex:
                if not self._again:
                    self._running = False
                    break
                self._again = False
        # What is still unread waits for the socket's next turn, behind the others ready now.
        self._poller.arm(self._fd)

    def _serve(self, budget: int, inline: bool) -> bool:
        """Handle the frames readable without waiting, in at most ``budget`` reads of the
        socket (which count pings and pieces of frames too, not just messages).

        ``inline`` (the epoll thread): a frame that may wait is not handled here; the session
        goes to a pool thread with it, and True is returned.
        """
        reader = self._conn.reader
        first = reader.reads
        if self._discard_until is not None and time.monotonic() >= self._discard_until:
            self._conn.abort()  # The flooder did not answer our close in time.
        if self._pending is not None:
            command, self._pending = self._pending, None
            self._in_locale(self._dispatch, command)
        while (data := reader.receive_nowait(read=reader.reads - first < budget)) is not None:
            if self._discard_until is None and self._in_locale(self._handle, data, inline):
                return True
        return False

    def _in_locale(self, step: Callable[[*_Ts], _T], *arguments: *_Ts) -> _T:
        """``step(*arguments)`` in the user's language (no request here to tell it), and with the
        database session given back after it."""
        try:
            with force_locale(self._locale) if self._locale else contextlib.nullcontext():
                return step(*arguments)
        finally:
            db.session.remove()

    def _handle(self, data: str | bytes, inline: bool) -> bool:
        """Parse one frame and run its command; True if it went to a pool thread instead."""
        command = self._parse(data)
        if command is None:
            return False
        if inline and not isinstance(command, protocol.ChatMessage):
            # Commands read or write the database, or wait for this socket's messages.
            self._pending = command
            self._poller.hand_over(self)
            return True
        self._dispatch(command)
        return False

    def _parse(self, data: str | bytes) -> protocol.Command | None:
        """The command in a frame, once the frame rate allows it; None (and an error) if not."""
        try:
            if not self._frames.take():
                self._hub.tally.add(Count.REFUSED_FRAMES)
                message = protocol.ERROR_MESSAGES["rate_limited"]
                raise protocol.FrameError("rate_limited", message, None, self._frames.wait_time())
            return protocol.parse_frame(data, current_app.config["CHAT_MAX_MESSAGE_CHARS"])
        except protocol.FrameError as error:
            self._refuse(error)
            return None

    def _dispatch(self, command: protocol.Command) -> None:
        """Run the command's handler; a refusal becomes an error frame."""
        try:
            handlers.handle(self._hub, self._conn, command)
        except protocol.FrameError as error:
            if error.code == "rate_limited":  # The only limit a handler applies: messages.
                self._hub.tally.add(Count.REFUSED_MESSAGES)
            self._refuse(error)

    def _refuse(self, error: protocol.FrameError) -> None:
        """Send the error; past ``CHAT_FLOOD_STRIKES`` rate-limit refusals, close the socket."""
        conn = self._conn
        send_error(self._hub, conn, error.code, error.message, error.client_id, error.retry_after)
        if error.code == "rate_limited" and not self._strikes.take():
            current_app.logger.warning(
                "closing a flooding socket of user %s",
                conn.user_id,
                extra={"user_id": conn.user_id},
            )
            # Our close frame goes out after what is queued; its writer hangs up if the client
            # does not answer it in time. Until then its frames are read and dropped, and if
            # its writer is stuck behind a client that does not read, we hang up.
            conn.close_with(CLOSE_FLOOD, "Too many messages")
            self._discard_until = time.monotonic() + 2 * CLOSE_TIMEOUT

    def _finish(self) -> None:
        """Announce the socket gone, close it, and let go of it."""
        try:
            end(self._hub, self._conn)
        finally:
            self._poller.forget(self._fd)
            self._conn.release()
            self._hub.retire(self._conn)
