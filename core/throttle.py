"""Flood control: token buckets for one socket's frames, a shared limit for a user's messages."""

import collections
import logging
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from redis import RedisError

from extensions import limiter

WINDOWS_KEY = "chat_message_windows"

log = logging.getLogger(__name__)


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; each action takes one."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()  # Two tabs of one user share a bucket.

    def take(self) -> bool:
        """Take a token if there is one; return True if the action may go ahead."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    def wait_time(self) -> float:
        """Seconds until the next token."""
        with self._lock:
            return max(0.0, (1 - self._tokens) / self.rate) if self.rate else float("inf")


class MessageWindows:
    """Each user's recent messages, in this process: the limit when there is no Redis to share.

    The same rule as the moving window ``limits`` keeps in Redis (at most ``burst`` messages in
    any ``burst / rate`` seconds, so a deployment behaves alike with or without Redis), without
    ``limits``' memory storage, which starts a timer thread every 10 ms to expire timestamps: at
    a few thousand messages a second, that was a tenth of the worker's time.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # user id -> deque of send times within the window, oldest first
        self._sent: dict[int, collections.deque[float]] = {}
        self._prune_at = 1_000

    def wait(self, user_id: int, burst: int, window: float) -> float:
        """Count one message of ``user_id`` (at most ``burst`` in any ``window`` seconds): 0 if
        allowed, else seconds until one would be."""
        now = self._clock()
        with self._lock:
            sent = self._sent.get(user_id)
            if sent is None:
                if len(self._sent) >= self._prune_at:
                    self._prune(now - window)
                sent = self._sent[user_id] = collections.deque()
            while sent and sent[0] <= now - window:
                sent.popleft()
            if len(sent) < burst:
                sent.append(now)
                return 0
            return max(0.1, sent[0] + window - now)

    def _prune(self, horizon: float) -> None:
        """Forget users with nothing sent since ``horizon``; the caller holds the lock."""
        self._sent = {
            user: sent for user, sent in self._sent.items() if sent and sent[-1] > horizon
        }
        self._prune_at = max(1_000, 2 * len(self._sent))

    def __len__(self) -> int:
        return len(self._sent)


def init_app(app: Flask) -> None:
    """Give the app its in-process message windows (used when the limiter's storage is memory)."""
    app.extensions[WINDOWS_KEY] = MessageWindows()


def message_wait(user_id: int, rate: float, burst: int) -> float:
    """Count one message of ``user_id``; 0 if allowed, else the seconds until one would be.

    At most ``burst`` messages in any ``burst / rate`` seconds (a moving window). With Redis
    (``REDIS_URL``) the count lives there, so that a user's tabs on every worker share it;
    without it, in this process.
    """
    window = max(1, round(burst / rate))  # Whole seconds: what ``limits`` takes.
    if isinstance(limiter.storage, MemoryStorage):
        windows: MessageWindows = current_app.extensions[WINDOWS_KEY]
        return windows.wait(user_id, burst, window)
    item = RateLimitItemPerSecond(burst, window)
    strategy = MovingWindowRateLimiter(limiter.storage)
    try:
        if strategy.hit(item, "chat-message", str(user_id)):
            return 0
        reset_at = strategy.get_window_stats(item, "chat-message", str(user_id)).reset_time
    except RedisError:
        # The chat keeps working while Redis restarts; only the flood limit lapses meanwhile.
        log.warning(
            "message rate limit unavailable; allowing user %s", user_id, extra={"user_id": user_id}
        )
        return 0
    return max(0.1, reset_at - time.time())
