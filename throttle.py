"""Flood control: token buckets for one socket's frames, a shared limit for a user's messages."""

import logging
import threading
import time

from limits import RateLimitItemPerSecond
from limits.strategies import MovingWindowRateLimiter
from redis import RedisError

from extensions import limiter

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


def message_wait(user_id, rate, burst):
    """Count one message of ``user_id``; 0 if allowed, else the seconds until one would be.

    The count lives in the rate-limit storage (Redis when ``REDIS_URL`` is set), so a user's tabs on
    every worker share it: at most ``burst`` messages in any ``burst / rate`` seconds.
    """
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
