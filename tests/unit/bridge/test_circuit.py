"""Backoff grows with failures in a row, jitters, obeys Retry-After, and opens a circuit."""

from __future__ import annotations

import random

from bridge.circuit import BackoffConfig, Breaker, CircuitState

CONFIG = BackoffConfig(base_s=0.1, max_s=2.0, threshold=3, open_for_s=30.0)


def test_breaker_when_failures_repeat_then_waits_stay_within_a_growing_capped_bound() -> None:
    breaker = Breaker(CONFIG, random.Random(1))
    waits = [breaker.failed("503") for _ in range(2)]
    assert 0 <= waits[0] <= 0.1
    assert 0 <= waits[1] <= 0.2
    assert breaker.state is CircuitState.CLOSED


def test_breaker_when_jittered_then_two_breakers_do_not_wait_alike() -> None:
    a, b = Breaker(CONFIG, random.Random(1)), Breaker(CONFIG, random.Random(2))
    assert a.failed("503") != b.failed("503")


def test_breaker_when_threshold_reached_then_circuit_opens_for_its_period_and_says_why() -> None:
    breaker = Breaker(CONFIG, random.Random(1))
    for _ in range(3):
        wait = breaker.failed("Unavailable: 503")
    assert wait >= 30.0
    assert breaker.state is CircuitState.OPEN
    assert breaker.opened == 1
    assert "3 failures in a row" in breaker.describe()
    assert "Unavailable: 503" in breaker.describe()


def test_breaker_when_open_period_passed_then_half_open_and_a_success_closes_it() -> None:
    breaker = Breaker(BackoffConfig(base_s=0.0, threshold=1, open_for_s=0.0), random.Random(1))
    breaker.failed("timeout")
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.succeeded()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.wait_s() == 0.0
    assert breaker.describe() == ""


def test_breaker_when_platform_says_retry_after_then_it_waits_at_least_that_long() -> None:
    breaker = Breaker(CONFIG, random.Random(1))
    assert breaker.failed("429", retry_after_s=3600.0) >= 3600.0
    assert breaker.wait_s() > 3599.0


def test_breaker_when_outage_lasts_thousands_of_tries_then_waits_stay_capped() -> None:
    breaker = Breaker(CONFIG, random.Random(1))
    waits = [breaker.failed("503") for _ in range(5_000)]
    assert max(waits) <= CONFIG.open_for_s + CONFIG.max_s


def test_breaker_when_half_open_trial_fails_then_the_reopening_is_counted() -> None:
    breaker = Breaker(BackoffConfig(base_s=0.0, threshold=1, open_for_s=0.0), random.Random(1))
    breaker.failed("timeout")
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.failed("timeout")
    assert breaker.opened == 2
