"""Backoff and a circuit breaker for one platform connection.

Requests on a connection go one at a time (the worker's sender), so one breaker per connection
sees every outcome in order. After `threshold` failures in a row the circuit opens: the next
attempt waits at least `open_for_s` (half-open, one trial request), and a success closes it.
Between failures the wait grows exponentially with full jitter, capped, so a fleet of workers
that lost the same server does not come back in lockstep. A rate-limit answer that says when to
retry is obeyed as given (a Tradovate-style penalty hour included).
"""

from __future__ import annotations

import enum
import random
import time

import msgspec


class CircuitState(enum.StrEnum):
    CLOSED = "closed"  # requests flow
    OPEN = "open"  # failing: nothing is sent until the trial time
    HALF_OPEN = "half_open"  # the trial time came: the next request decides


class BackoffConfig(msgspec.Struct, frozen=True, kw_only=True):
    base_s: float = 0.05  # the first retry waits up to this long
    max_s: float = 5.0  # no wait between failures grows past this
    threshold: int = 5  # failures in a row that open the circuit
    open_for_s: float = 5.0  # how long an open circuit waits before a trial request


class Breaker:
    """Counts failures in a row and says how long to wait before the next attempt."""

    def __init__(self, config: BackoffConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.failures = 0  # in a row
        self.not_before = 0.0  # monotonic time before which nothing is sent
        self.last_error = ""
        self.opened = 0  # how many times the circuit opened

    @property
    def state(self) -> CircuitState:
        if self.failures < self.config.threshold:
            return CircuitState.CLOSED
        return CircuitState.OPEN if time.monotonic() < self.not_before else CircuitState.HALF_OPEN

    def wait_s(self) -> float:
        """How long to wait before the next attempt (0: send now)."""
        return max(0.0, self.not_before - time.monotonic())

    def succeeded(self) -> None:
        self.failures, self.not_before, self.last_error = 0, 0.0, ""

    def failed(self, error: str, retry_after_s: float | None = None) -> float:
        """Record a failure; returns the wait before the next attempt."""
        trial_failed = self.state is CircuitState.HALF_OPEN
        self.failures += 1
        self.last_error = error
        exponent = min(self.failures - 1, 30)  # a weekend-long outage must not overflow
        cap = min(self.config.max_s, self.config.base_s * 2.0**exponent)
        wait = self.rng.uniform(0.0, cap)  # full jitter
        if self.failures == self.config.threshold or trial_failed:
            self.opened += 1
        if self.failures >= self.config.threshold:
            wait = max(wait, self.config.open_for_s)
        if retry_after_s is not None:  # the platform said when: never sooner
            wait = max(wait, retry_after_s)
        self.not_before = time.monotonic() + wait
        return wait

    def describe(self) -> str:
        """For the health view: empty when closed."""
        state = self.state
        if state is CircuitState.CLOSED:
            return ""
        return (
            f"circuit {state.value} after {self.failures} failures in a row, "
            f"retry in {self.wait_s():.1f} s: {self.last_error}"
        )
