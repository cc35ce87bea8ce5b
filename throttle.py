"""Token buckets: allow bursts, cap the sustained rate."""

import threading
import time


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
