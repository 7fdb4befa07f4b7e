"""Shared test plumbing: database fixtures (tests.database), a real local Ray, `eventually`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

pytest_plugins = ["tests.database"]

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    timeout_s: float = 15.0,
    interval_s: float = 0.05,
) -> T:
    """Poll `probe` until `until(value)` holds; fail with the last value seen after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    value = await probe()
    while not until(value):
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s; last value: {value!r}")
        await asyncio.sleep(interval_s)
        value = await probe()
    return value


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One real local Ray for the whole run (its own free port; Redis holds 6379 here)."""
    import ray

    if ray.is_initialized():  # started implicitly by an earlier test (a Ray metric recorded)
        ray.shutdown()
    ray.init(
        address="local",  # a new Ray, never one another process left behind (address file)
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()
