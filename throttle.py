"""Flood control: token buckets for one socket's frames, a shared limit for a user's messages."""

import logging
import threading
import time

from flask import current_app
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from redis import RedisError

from extensions import limiter

BUCKETS_KEY = "chat_message_buckets"

log = logging.getLogger(__name__)


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; each action takes one."""

    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()  # Two tabs of one user share a bucket.

    def take(self):
        """Take a token if there is one; return True if the action may go ahead."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    def wait_time(self):
        """Seconds until the next token."""
        with self._lock:
            return max(0.0, (1 - self._tokens) / self.rate) if self.rate else float("inf")

    def full(self):
        """True if the bucket has refilled: forgetting it changes nothing."""
        with self._lock:
            return self._tokens + (self._clock() - self._stamp) * self.rate >= self.burst


class UserBuckets:
    """A message bucket per user, in this process: the limit when there is no Redis to share.

    A moving window in ``limits``' memory storage would do the same, but it keeps a timestamp per
    message and starts a timer thread every 10 ms to expire them: at a few thousand messages a
    second, that was a tenth of the worker's time.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets = {}
        self._prune_at = 1_000

    def wait(self, user_id, rate, burst):
        """Count one message of ``user_id``: 0 if allowed, else seconds until one would be."""
        with self._lock:
            bucket = self._buckets.get(user_id)
            if bucket is None or (bucket.rate, bucket.burst) != (rate, burst):
                if len(self._buckets) >= self._prune_at:
                    self._prune()
                bucket = self._buckets[user_id] = TokenBucket(rate, burst, self._clock)
            # Under the lock: a prune cannot forget the bucket between these two lines.
            return 0 if bucket.take() else max(0.1, bucket.wait_time())

    def _prune(self):
        """Forget the users whose bucket has refilled; the caller holds the lock."""
        self._buckets = {user: b for user, b in self._buckets.items() if not b.full()}
        self._prune_at = max(1_000, 2 * len(self._buckets))

    def __len__(self):
        return len(self._buckets)


def init_app(app):
    """Give the app its in-process message buckets (used when the limiter's storage is memory)."""
    app.extensions[BUCKETS_KEY] = UserBuckets()


def message_wait(user_id, rate, burst):
    """Count one message of ``user_id``; 0 if allowed, else the seconds until one would be.

    ``burst`` messages at once, then ``rate`` a second. With Redis (``REDIS_URL``) the count
    lives there, so that a user's tabs on every worker share it: at most ``burst`` messages in
    any ``burst / rate`` seconds (a moving window). Without it, in a bucket in this process.
    """
    if isinstance(limiter.storage, MemoryStorage):
        return current_app.extensions[BUCKETS_KEY].wait(user_id, rate, burst)
    item = RateLimitItemPerSecond(burst, max(1, round(burst / rate)))
    strategy = MovingWindowRateLimiter(limiter.storage)
    try:
        if strategy.hit(item, "chat-message", str(user_id)):
            return 0
        reset_at = strategy.get_window_stats(item, "chat-message", str(user_id)).reset_time
    except RedisError:
        # The chat keeps working while Redis restarts; only the flood limit lapses meanwhile.
        log.warning("message rate limit unavailable; allowing user %s", user_id)
        return 0
    return max(0.1, reset_at - time.time())
