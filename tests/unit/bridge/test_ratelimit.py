"""TokenBucket: never more than `burst + rate * elapsed` grants, measured on a fake clock."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ratelimit import TokenBucket

SLACK = 1e-9  # float rounding in the refill, far below one token


class FakeClock:
    """A monotonic clock that only moves when a test moves it."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr("bridge.ratelimit.time.monotonic", fake)
    return fake


@pytest.mark.parametrize(
    ("rate", "burst", "named"),
    [(0.0, 5, "rate=0.0"), (-2.0, 5, "rate=-2.0"), (10.0, 0, "burst=0"), (10.0, -1, "burst=-1")],
)
def test_bucket_when_rate_or_burst_is_invalid_then_value_error_names_it(
    rate: float, burst: int, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        TokenBucket(rate, burst)


def test_bucket_when_clock_stands_still_then_exactly_burst_grants(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=5.0, burst=3)

    grants = [bucket.try_acquire() for _ in range(10)]

    assert grants == [True] * 3 + [False] * 7


def test_bucket_when_empty_then_one_token_returns_after_one_over_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=4.0, burst=1)
    assert bucket.try_acquire()

    clock.now += 0.2
    refused = bucket.try_acquire()
    clock.now += 0.05
    granted = bucket.try_acquire()

    assert (refused, granted) == (False, True)


def test_bucket_when_idle_for_long_then_tokens_cap_at_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=100.0, burst=4)

    clock.now += 3600.0
    grants = sum(bucket.try_acquire() for _ in range(50))

    assert grants == 4


steps = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=2.0), st.integers(min_value=0, max_value=30)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None, database=None)
@given(
    rate=st.floats(min_value=0.5, max_value=500.0),
    burst=st.integers(min_value=1, max_value=20),
    run=steps,
)
def test_bucket_over_any_run_then_grants_never_exceed_burst_plus_rate_times_elapsed(
    rate: float, burst: int, run: list[tuple[float, int]]
) -> None:
    fake = FakeClock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("bridge.ratelimit.time.monotonic", fake)
        bucket = TokenBucket(rate, burst)
        start, granted = fake.now, 0
        for wait, attempts in run:
            fake.now += wait
            granted += sum(bucket.try_acquire() for _ in range(attempts))
            assert granted <= burst + rate * (fake.now - start) + SLACK


@pytest.mark.timeout(10)
async def test_acquire_when_bucket_runs_dry_then_waits_for_the_clock_instead_of_granting(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    async def fake_sleep(delay: float) -> None:
        # A real sleep returns only after the clock moved, by at least one tick of its resolution.
        waits.append(delay)
        clock.now = max(clock.now + delay, math.nextafter(clock.now, math.inf))

    monkeypatch.setattr("bridge.ratelimit.asyncio.sleep", fake_sleep)
    bucket = TokenBucket(rate=10.0, burst=3)
    start = clock.now

    for _ in range(13):
        await bucket.acquire()

    elapsed = clock.now - start
    assert elapsed == pytest.approx(1.0)  # 3 from the burst, 10 more at 10 per second
    assert all(w > 0 for w in waits)
    assert len(waits) <= 2 * 10  # it waits for each missing token, it does not spin


async def test_acquire_when_tokens_are_available_then_it_does_not_wait(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def forbidden_sleep(delay: float) -> None:
        raise AssertionError(f"slept {delay}s with tokens in the bucket")

    monkeypatch.setattr("bridge.ratelimit.asyncio.sleep", forbidden_sleep)
    bucket = TokenBucket(rate=1.0, burst=5)

    await asyncio.gather(*(bucket.acquire() for _ in range(5)))

    assert not bucket.try_acquire()
