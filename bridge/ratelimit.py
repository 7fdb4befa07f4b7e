"""Rate limiting for platform connections."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """At most `rate` requests per second on average, bursts up to `burst`.

    `acquire` waits (never spins) until a token is free, so a caller can never exceed the limit.
    """

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def acquire(self) -> None:
        while not self.try_acquire():  # noqa: ASYNC110 - waiting on time, not on an event
            await asyncio.sleep((1.0 - self._tokens) / self.rate)
