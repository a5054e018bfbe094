"""Requests-per-minute and tokens-per-minute limits: two token buckets that every attempt draws from.

A bucket holds at most one second of its rate (so a burst never exceeds what the provider's own
per-minute window would let through in that second) and refills continuously. A request takes one
request and its estimated tokens; when the answer reports the real usage, the difference is settled,
so a run whose estimates are off still converges on the limit. A request larger than a bucket waits
for a full bucket and then goes (the bucket goes negative and later requests wait it off, or until
its answer reports fewer tokens than the estimate).
"""

from __future__ import annotations

import asyncio
import time

RECHECK_S = 1.0
"""A waiting request looks at the buckets again after at most this many seconds: an answer that used
fewer tokens than its estimate gives them back meanwhile."""


class Bucket:
    def __init__(self, per_minute: float, burst_s: float = 1.0) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` can be taken (0 if now)."""
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """`await limiter.acquire(tokens)` before each attempt; `limiter.settle(estimate, actual)` after."""

    def __init__(self, rpm: int = 0, tpm: int = 0) -> None:
        self.requests = Bucket(rpm) if rpm else None
        self.tokens = Bucket(tpm) if tpm else None
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    async def acquire(self, tokens: int) -> None:
        if not self.active:
            return
        async with self._lock:  # first come, first served: a big request is not starved by small ones
            while True:
                wait = max(self.requests.wait_for(1) if self.requests else 0.0,
                           self.tokens.wait_for(tokens) if self.tokens else 0.0)
                if wait <= 0:
                    break
                await asyncio.sleep(min(wait, RECHECK_S))  # answers settling meanwhile may shorten the wait
            if self.requests:
                self.requests.take(1)
            if self.tokens:
                self.tokens.take(tokens)

    def settle(self, estimate: int, actual: int) -> None:
        """Correct the token bucket by what the answer really used (actual 0: usage unknown, keep the estimate)."""
        if self.tokens is None or actual <= 0 or actual == estimate:
            return
        if actual > estimate:
            self.tokens.take(actual - estimate)
        else:
            self.tokens.give_back(estimate - actual)
