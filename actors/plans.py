"""Evaluation plans: the limits an account is held to."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from functools import lru_cache
from typing import Annotated

import msgspec

Percent = Annotated[float, msgspec.Meta(gt=0, le=100)]


class Plan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A challenge phase's loss limits.

    Daily loss: equity may not reach `day_start_balance - daily_loss_pct% of initial_balance`.
    Max loss: equity may not reach `initial_balance - max_loss_pct% of initial_balance` (static).
    The trading day rolls over at midnight in `day_timezone` (DST included).
    """

    name: str
    initial_balance: Annotated[float, msgspec.Meta(gt=0)]
    daily_loss_pct: Percent = 5.0
    max_loss_pct: Percent = 10.0
    day_timezone: str = "Europe/Prague"

    def __post_init__(self) -> None:
        try:
            _zone(self.day_timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"`day_timezone`: unknown time zone {self.day_timezone!r}") from exc

    @property
    def daily_loss_amount(self) -> float:
        return self.initial_balance * self.daily_loss_pct / 100.0

    @property
    def max_loss_floor(self) -> float:
        return self.initial_balance * (1.0 - self.max_loss_pct / 100.0)

    def next_rollover_ns(self, ts_ns: int) -> int:
        """The first trading-day boundary strictly after `ts_ns`."""
        zone = _zone(self.day_timezone)
        # Whole seconds: a float of nanoseconds rounds up and could land past midnight.
        local = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=zone)
        next_midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), zone)
        return int(next_midnight.timestamp()) * 1_000_000_000


@lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


DEFAULT_PLAN = Plan(name="demo-100k", initial_balance=100_000.0)
