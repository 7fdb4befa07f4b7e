"""Evaluation plans: the phases of a challenge and the rules each phase holds an account to.

A plan is data. It is written as TOML (`deploy/plans/*.toml`), decoded once with
`forbid_unknown_fields`, and never guessed at: a missing or misspelt setting is an error naming the
file, line and field (see `load_plan`). What each setting means is in `docs/rules.md`.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import zoneinfo
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import msgspec

Percent = Annotated[float, msgspec.Meta(gt=0, le=100)]
Days = Annotated[int, msgspec.Meta(ge=1)]
Level = Annotated[float, msgspec.Meta(gt=0)]

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


class PlanError(ValueError):
    """A plan that cannot be used, with where the problem is."""


class _Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every plan table: unknown keys are an error, not silently ignored."""


class DayRollover(_Settings, frozen=True, kw_only=True):
    """When one trading day ends and the next begins: wall-clock `time` in `timezone`."""

    timezone: str = "Europe/Prague"
    time: str = "00:00"

    def __post_init__(self) -> None:
        if not _HHMM.match(self.time):
            raise ValueError(f"`time` must be HH:MM on a 24-hour clock, got {self.time!r}")
        try:
            _zone(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"`timezone`: unknown IANA time zone {self.timezone!r}") from exc

    @property
    def wall_time(self) -> dt.time:
        hours, minutes = self.time.split(":")
        return dt.time(int(hours), int(minutes))

    def boundary_after(self, ts_ns: int) -> int:
        """The first day boundary strictly after `ts_ns` (UTC nanoseconds), DST included."""
        zone = _zone(self.timezone)
        # Whole seconds: a float of nanoseconds rounds and could land past the boundary.
        seconds = ts_ns // 1_000_000_000
        local = dt.datetime.fromtimestamp(seconds, tz=zone)
        day = local.date()
        while True:
            boundary = dt.datetime.combine(day, self.wall_time, zone)
            boundary_s = int(boundary.timestamp())
            if boundary_s * 1_000_000_000 > ts_ns:
                return boundary_s * 1_000_000_000
            day += dt.timedelta(days=1)

    def boundary_at_or_before(self, ts_ns: int) -> int:
        """The start of the trading day that holds `ts_ns`."""
        zone = _zone(self.timezone)
        local = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=zone)
        day = local.date() + dt.timedelta(days=1)
        while True:
            boundary_ns = int(dt.datetime.combine(day, self.wall_time, zone).timestamp()) * 10**9
            if boundary_ns <= ts_ns:
                return boundary_ns
            day -= dt.timedelta(days=1)

    def label(self, start_ns: int) -> int:
        """The trading day that starts at boundary `start_ns`, as a proleptic date ordinal.

        A trading day is named by the calendar date (in `timezone`) that holds most of its hours:
        with a 00:00 rollover the day starting Friday 00:00 is Friday; with 17:00 the session
        starting Sunday 17:00 is Monday's, as futures and FX desks name it.
        """
        local = dt.datetime.fromtimestamp(start_ns // 1_000_000_000, tz=_zone(self.timezone))
        return (local.replace(tzinfo=None) + dt.timedelta(hours=12)).date().toordinal()


class DailyLoss(_Settings, frozen=True, kw_only=True):
    pct: Percent
    amount_base: Literal["initial", "day_start"] = "initial"
    reference: Literal[
        "day_start_balance", "day_start_max_balance_equity", "day_start_equity", "initial"
    ] = "day_start_balance"
    action: Literal["fail", "pause"] = "fail"


class MaxLoss(_Settings, frozen=True, kw_only=True):
    pct: Percent
    mode: Literal[
        "static", "trailing_eod_balance", "trailing_closed_balance", "trailing_equity"
    ] = "static"
    lock_at: Literal["initial", "never"] | Level = "never"


class ProfitTarget(_Settings, frozen=True, kw_only=True):
    pct: Percent
    basis: Literal["closed_balance", "equity"] = "closed_balance"


class MinTradingDays(_Settings, frozen=True, kw_only=True):
    days: Days
    counts: Literal["position_opened", "opened_and_closed", "profitable_day"] = "position_opened"
    min_profit_pct: Percent | None = None

    def __post_init__(self) -> None:
        if self.counts == "profitable_day" and self.min_profit_pct is None:
            raise ValueError("`min_profit_pct` is required when `counts` is 'profitable_day'")
        if self.counts != "profitable_day" and self.min_profit_pct is not None:
            raise ValueError("`min_profit_pct` only applies when `counts` is 'profitable_day'")


class MaxDays(_Settings, frozen=True, kw_only=True):
    days: Annotated[int, msgspec.Meta(ge=0)]  # 0 = unlimited


class Consistency(_Settings, frozen=True, kw_only=True):
    max_best_day_pct: Percent
    action: Literal["block_pass", "fail"] = "block_pass"


class NewsTrading(_Settings, frozen=True, kw_only=True):
    minutes_before: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    minutes_after: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    impact: Literal["low", "medium", "high"] = "high"
    action: Literal["fail", "strike", "exclude_profit"] = "fail"
    strikes: Annotated[int, msgspec.Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        if self.action != "strike" and self.strikes:
            raise ValueError("`strikes` only applies when `action` is 'strike'")


class WeekendHolding(_Settings, frozen=True, kw_only=True):
    action: Literal["fail", "close_positions"] = "fail"


class MaxLots(_Settings, frozen=True, kw_only=True):
    per_order: Level


class MinHoldTime(_Settings, frozen=True, kw_only=True):
    seconds: Annotated[int, msgspec.Meta(ge=1)]
    max_share_pct: Annotated[float, msgspec.Meta(ge=0, le=100)]
    action: Literal["block_pass", "fail"] = "block_pass"


class Inactivity(_Settings, frozen=True, kw_only=True):
    days: Days


class SplitStep(_Settings, frozen=True, kw_only=True):
    """From the `after_payouts`-th settled payout on, the trader's share is `pct`."""

    after_payouts: Annotated[int, msgspec.Meta(ge=1)]
    pct: Percent


class PayoutTerms(_Settings, frozen=True, kw_only=True):
    """How a funded account is paid (`docs/payouts.md`): the trader's share of the withdrawable
    profit, scaled up by settled payouts; the first payout `first_after_days` after the funded
    account opened, then one per `cadence_days`; a payout of at least `min_amount` (account
    currency); and, if set, no single day above `max_best_day_pct` of the period's profit."""

    split_pct: Percent = 80.0
    split_steps: tuple[SplitStep, ...] = ()
    first_after_days: Annotated[int, msgspec.Meta(ge=0)] = 14
    cadence_days: Days = 14
    min_amount: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    max_best_day_pct: Percent | None = None

    def __post_init__(self) -> None:
        after = [step.after_payouts for step in self.split_steps]
        if after != sorted(set(after)):
            raise ValueError("`split_steps` must be in increasing `after_payouts`, no repeats")

    def split_after(self, settled: int) -> float:
        """The trader's share in percent once `settled` payouts have been paid."""
        pct = self.split_pct
        for step in self.split_steps:
            if settled >= step.after_payouts:
                pct = step.pct
        return pct


class Phase(_Settings, frozen=True, kw_only=True):
    """One stage of a challenge; a rule left out is not applied."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    daily_loss: DailyLoss | None = None
    max_loss: MaxLoss | None = None
    profit_target: ProfitTarget | None = None
    min_trading_days: MinTradingDays | None = None
    max_days: MaxDays | None = None
    consistency: Consistency | None = None
    news_trading: NewsTrading | None = None
    weekend_holding: WeekendHolding | None = None
    max_lots: MaxLots | None = None
    min_hold_time: MinHoldTime | None = None
    inactivity: Inactivity | None = None


class Plan(_Settings, frozen=True, kw_only=True):
    """A program a firm sells: its currency, size, trading day and phases."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] = "USD"
    # None: the account's first deposit sets it.
    initial_balance: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # Where the platform opens the plan's accounts: its group (MT5 group path, cTrader and
    # Match-Trader group name) and leverage (1:N).
    platform_group: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "prop\\challenge"
    leverage: Annotated[int, msgspec.Meta(ge=1, le=3000)] = 100
    day_rollover: DayRollover = DayRollover()
    warning_levels: tuple[Annotated[float, msgspec.Meta(gt=0, lt=100)], ...] = (50.0, 80.0, 90.0)
    phases: Annotated[tuple[Phase, ...], msgspec.Meta(min_length=1)]
    # How the funded stage (a phase without a profit target) is paid; None: no payouts.
    payout: PayoutTerms | None = None

    def __post_init__(self) -> None:
        names = [phase.name for phase in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"`phases`: phase names must be unique, got {names}")
        if list(self.warning_levels) != sorted(set(self.warning_levels)):
            raise ValueError("`warning_levels` must be increasing, without repeats")

    def phase_index(self, name: str) -> int:
        for index, phase in enumerate(self.phases):
            if phase.name == name:
                return index
        raise PlanError(f"plan {self.id!r} has no phase {name!r}")


_PATH_PART = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")


def load_plan(path: Path) -> Plan:
    """Read a plan file; any problem is a `PlanError` naming the file, line and field."""
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return msgspec.convert(data, type=Plan)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field_path = message.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in message else "$"
        # A misspelt key, or a check naming its key first: point at the key, not at its table.
        key = re.match(r"(?:Object contains unknown field )?`(\w+)`", message)
        if key:
            field_path = f"{field_path}.{key.group(1)}"
        line = _line_of(text, field_path)
        where = f"{path}:{line}" if line else str(path)
        raise PlanError(f"{where}: {message}") from exc


def _line_of(text: str, field_path: str) -> int | None:
    """The line of the TOML key that a msgspec error path (`$.phases[0].daily_loss.pct`) names.

    Walks the file's table headers the way TOML nests them; returns the best line found: the key
    itself, else its table's header, else None.
    """
    parts = [m.group(1) or int(m.group(2)) for m in _PATH_PART.finditer(field_path)]
    table: list[str | int] = []
    counts: dict[str, int] = {}
    best: int | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[["):
            name = line.strip("[] ")
            counts[name] = counts.get(name, -1) + 1
            table = [*name.split("."), counts[name]]
        elif line.startswith("["):
            name = line.strip("[] ")
            segments: list[str | int] = []
            for piece in name.split("."):
                segments.append(piece)
                prefix = ".".join(str(s) for s in segments if isinstance(s, str))
                if prefix in counts:
                    segments.append(counts[prefix])
            table = segments
        elif "=" in line:
            key = line.split("=", 1)[0].strip().strip('"')
            if [*table, key] == parts[: len(table) + 1]:
                best = number
                if len(parts) == len(table) + 1:
                    return number
            continue
        else:
            continue
        if table == parts[: len(table)] and table:
            best = number
    return best


DEFAULT_PLAN = Plan(
    id="demo-100k",
    name="Demo 100K",
    initial_balance=100_000.0,
    phases=(
        Phase(
            name="challenge",
            daily_loss=DailyLoss(pct=5.0),
            max_loss=MaxLoss(pct=10.0),
        ),
    ),
)
"""The demo's plan: 5% daily loss of the initial balance below the day-start balance, 10% static."""
