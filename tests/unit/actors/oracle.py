"""A brute-force oracle for the account entity, written from `docs/rules.md` alone.

It shares nothing with `actors/account.py` or `actors/rules.py` but the data types (plans,
platform events, the symbol table). It carries nothing from one event to the next but the history
and its own verdicts so far: at every event, and at every day boundary, it folds the history again
from its first item to know the positions, balance, equity, the day's reference values, the
trailing peak, the trading days and so on. It is slow on purpose (quadratic and worse): keep
histories short.

A history is the ordered list of what the account saw: platform events, `Clock` (the shard letting
time pass: `Account.advance(ts_ns, event_id)`) and `NewsListed` (a calendar entry added to the
market: not an account event, but deals after it are judged against it).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from actors.market import NewsScheduled
from actors.plans import DayRollover, Phase, Plan
from bridge.events import BalanceKind, BalanceOperated, DealEntry, DealExecuted, PriceTicked, Side
from bridge.instruments import SymbolSpec

NS = 1_000_000_000
FLAT = 1e-9  # a position whose remaining volume is at most this is closed
IMPACT = {"low": 1, "medium": 2, "high": 3}


@dataclass(frozen=True)
class Clock:
    """Time passes with no platform event (`Account.advance`)."""

    event_id: str
    ts_ns: int


@dataclass(frozen=True)
class NewsListed:
    """A release added to the news calendar; deals after this item are judged against it."""

    entry: NewsScheduled


Item = PriceTicked | DealExecuted | BalanceOperated | Clock | NewsListed
AccountEvent = PriceTicked | DealExecuted | BalanceOperated | Clock


@dataclass(frozen=True)
class Breach:
    rule: str
    action: str
    ts_ns: int
    caused_by: str


@dataclass(frozen=True)
class Verdict:
    breaches: list[Breach]
    statuses: list[str]  # the status after each item of the history
    equities: list[int | None]  # equity in cents after each item (None before the account starts)
    # While the phase runs: (trading days, profit towards the target in cents) after each item.
    progress: list[tuple[int, int] | None]
    passed_by: str | None = None

    @property
    def status(self) -> str:
        return self.statuses[-1] if self.statuses else "active"


def cents(amount: float) -> int:
    """Platform money in cents, half to even (`round`)."""
    return round(amount * 100)


def pct_of(base: int, pct: float) -> int:
    """A percent limit in cents, half to even."""
    return round(base * pct / 100)


# Trading days ------------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _boundary_on(zone: str, hhmm: str, day: dt.date) -> int:
    """The UTC instant (ns) of the rollover wall time on local date `day`."""
    hours, minutes = (int(part) for part in hhmm.split(":"))
    local = dt.datetime(
        day.year, day.month, day.day, hours, minutes, tzinfo=zoneinfo.ZoneInfo(zone)
    )
    return round(local.timestamp()) * NS


def _local_date(zone: str, ts_ns: int) -> dt.date:
    moment = dt.datetime.fromtimestamp(ts_ns // NS, tz=dt.UTC)
    return moment.astimezone(zoneinfo.ZoneInfo(zone)).date()


@lru_cache(maxsize=65536)
def _boundaries(zone: str, hhmm: str, after_ns: int, upto_ns: int) -> tuple[int, ...]:
    found: list[int] = []
    day = _local_date(zone, after_ns) - dt.timedelta(days=1)
    while True:
        at = _boundary_on(zone, hhmm, day)
        if at > upto_ns:
            return tuple(found)
        if at > after_ns:
            found.append(at)
        day += dt.timedelta(days=1)


@lru_cache(maxsize=65536)
def _start_of(zone: str, hhmm: str, ts_ns: int) -> int:
    day = _local_date(zone, ts_ns) + dt.timedelta(days=1)
    while _boundary_on(zone, hhmm, day) > ts_ns:
        day -= dt.timedelta(days=1)
    return _boundary_on(zone, hhmm, day)


@lru_cache(maxsize=8192)
def _name(zone: str, hhmm: str, start_ns: int) -> dt.date:
    first = _local_date(zone, start_ns)
    end = _boundaries(zone, hhmm, start_ns, start_ns + 3 * 86_400 * NS)[0]
    midnight = dt.datetime.combine(
        first + dt.timedelta(days=1), dt.time(0), zoneinfo.ZoneInfo(zone)
    )
    midnight_ns = round(midnight.timestamp()) * NS
    if midnight_ns >= end:
        return first
    return first if midnight_ns - start_ns >= end - midnight_ns else first + dt.timedelta(1)


class TradingClock:
    """Day boundaries and trading-day names of one `day_rollover`, from the zone's rules (the
    functions behind it are memoised: pure functions of time, not state)."""

    def __init__(self, rollover: DayRollover) -> None:
        self.zone = rollover.timezone
        self.hhmm = rollover.time

    def start_of(self, ts_ns: int) -> int:
        """The boundary that starts the trading day holding `ts_ns` (a boundary belongs to the
        day it starts)."""
        return _start_of(self.zone, self.hhmm, ts_ns)

    def name(self, start_ns: int) -> dt.date:
        """The trading day starting at boundary `start_ns`: the local date holding most of it."""
        return _name(self.zone, self.hhmm, start_ns)

    def day(self, ts_ns: int) -> dt.date:
        return self.name(self.start_of(ts_ns))

    def boundaries(self, after_ns: int, upto_ns: int) -> tuple[int, ...]:
        """Every boundary B with `after_ns < B <= upto_ns`, in order."""
        return _boundaries(self.zone, self.hhmm, after_ns, upto_ns)


# One fold over a history -------------------------------------------------------------------------


@dataclass
class Pos:
    symbol: str
    buy: bool
    volume: float
    price: float
    opened_ns: int
    open_day: dt.date
    opened_in_window: bool


@dataclass
class State:
    """What a prefix of the history adds up to, folded from its first item."""

    started: bool = False
    initial: int = 0
    balance: int = 0
    credit: int = 0
    closed_pnl: int = 0
    excluded: int = 0
    floating: int = 0
    peak: int = 0  # the trailing max_loss peak of the plan's mode
    positions: dict[int, Pos] = field(default_factory=dict)
    book: dict[str, tuple[float, float]] = field(default_factory=dict)
    day_pnl: dict[dt.date, int] = field(default_factory=dict)
    opened_days: set[dt.date] = field(default_factory=set)
    round_trip_days: set[dt.date] = field(default_factory=set)
    closed_trades: int = 0
    short_trades: int = 0
    first_event_ns: int | None = None
    last_event_ns: int | None = None
    first_deal_ns: int | None = None
    last_deal_ns: int | None = None
    news: list[NewsScheduled] = field(default_factory=list)

    @property
    def equity(self) -> int:
        return self.balance + self.credit + self.floating


class Oracle:
    """Judges one account in one phase by recomputing everything from the whole history."""

    def __init__(
        self,
        plan: Plan,
        symbols: Mapping[str, SymbolSpec],
        *,
        funded: bool = True,
        phase: int = 0,
    ) -> None:
        self.plan = plan
        self.phase: Phase = plan.phases[phase]
        self.symbols = symbols
        self.funded = funded
        self.clock = TradingClock(plan.day_rollover)
        self._conversions: dict[str, tuple[str, bool] | None] = {}

    # Valuation -------------------------------------------------------------------------------

    def _conversion(self, currency: str) -> tuple[str, bool] | None:
        """(pair, divide) joining `currency` to the account currency; None if they are equal."""
        if currency not in self._conversions:  # memo of a pure lookup in the symbol table
            self._conversions[currency] = self._find_conversion(currency)
        return self._conversions[currency]

    def _find_conversion(self, currency: str) -> tuple[str, bool] | None:
        account = self.plan.currency
        if currency == account:
            return None
        for spec in self.symbols.values():
            if spec.base == currency and spec.quote == account:
                return spec.name, False
            if spec.base == account and spec.quote == currency:
                return spec.name, True
        raise KeyError(f"no pair joins {currency} and {account}")

    def _float(self, pos: Pos, book: Mapping[str, tuple[float, float]]) -> int:
        spec = self.symbols[pos.symbol]
        if pos.symbol not in book:
            return 0
        bid, ask = book[pos.symbol]
        if pos.buy:
            raw = (bid - pos.price) * pos.volume * spec.contract_size
        else:
            raw = (pos.price - ask) * pos.volume * spec.contract_size
        conversion = self._conversion(spec.quote)
        if conversion is not None:
            pair, divide = conversion
            if pair not in book:
                return 0
            pair_bid, pair_ask = book[pair]
            if divide:
                raw = raw / (pair_ask if raw >= 0 else pair_bid)
            else:
                raw = raw * (pair_bid if raw >= 0 else pair_ask)
        return round(raw * 100)

    # News -------------------------------------------------------------------------------------

    def _release(self, deal: DealExecuted, listed: Sequence[NewsScheduled]) -> NewsScheduled | None:
        """The nearest listed release whose window holds the deal, if any."""
        rule = self.phase.news_trading
        if rule is None:
            return None
        spec = self.symbols[deal.symbol]
        before = round(rule.minutes_before * 60 * NS)
        after = round(rule.minutes_after * 60 * NS)
        found: NewsScheduled | None = None
        for entry in listed:
            if entry.currency not in (spec.base, spec.quote):
                continue
            if int(entry.impact) < IMPACT[rule.impact]:
                continue
            if entry.ts_ns - before <= deal.ts_ns <= entry.ts_ns + after and (
                found is None or abs(entry.ts_ns - deal.ts_ns) < abs(found.ts_ns - deal.ts_ns)
            ):
                found = entry
        return found

    # The fold ---------------------------------------------------------------------------------

    def fold(
        self,
        prefix: Sequence[Item],
        *,
        upto_ns: int | None = None,
        unjudged: frozenset[int] = frozenset(),
    ) -> State:
        """The account as the items of `prefix` leave it, computed from nothing; with `upto_ns`,
        the day boundaries up to that time are run too (they only move a trailing-EOD peak).
        `unjudged`: indexes of deals made while paused (the firm's closes, not judged)."""
        s = State()
        if self.plan.initial_balance is not None:
            s.initial = cents(self.plan.initial_balance)
            if self.funded:
                s.started = True
                s.balance = s.peak = s.initial
        for index, item in enumerate(prefix):
            if isinstance(item, NewsListed):
                s.news.append(item.entry)
                continue
            self._pass_boundaries(s, item.ts_ns)
            if s.first_event_ns is None:
                s.first_event_ns = item.ts_ns
            s.last_event_ns = item.ts_ns
            if isinstance(item, PriceTicked):
                s.book[item.symbol] = (item.bid, item.ask)
            elif isinstance(item, BalanceOperated):
                self._fold_balance(s, item)
            elif isinstance(item, DealExecuted):
                self._fold_deal(s, item, judged=index not in unjudged)
            s.floating = sum(self._float(p, s.book) for p in s.positions.values())
            self._raise_peak(s, item)
        if upto_ns is not None:
            self._pass_boundaries(s, upto_ns)
        return s

    def _pass_boundaries(self, s: State, ts_ns: int) -> None:
        rule = self.phase.max_loss
        if rule is None or rule.mode != "trailing_eod_balance" or s.last_event_ns is None:
            return
        if s.started and self.clock.boundaries(s.last_event_ns, ts_ns):
            s.peak = max(s.peak, s.balance)  # every boundary sees the same balance

    def _raise_peak(self, s: State, item: AccountEvent) -> None:
        rule = self.phase.max_loss
        if rule is None or not s.started:
            return
        if rule.mode == "trailing_equity":
            s.peak = max(s.peak, s.equity)
        elif rule.mode == "trailing_closed_balance" and isinstance(item, DealExecuted):
            s.peak = max(s.peak, s.balance)

    def _fold_balance(self, s: State, op: BalanceOperated) -> None:
        amount = cents(op.amount)
        if not s.started and op.kind is BalanceKind.DEPOSIT and amount > 0:
            s.started = True
            s.initial = s.initial or amount
            s.balance = amount
            s.peak = s.initial
        elif op.kind is BalanceKind.CREDIT:
            s.credit += amount
        else:
            s.balance += amount
            s.peak += amount  # money moved moves the trailing peak (static ignores it)

    def _fold_deal(self, s: State, deal: DealExecuted, *, judged: bool) -> None:
        day = self.clock.day(deal.ts_ns)
        amount = cents(deal.profit) + cents(deal.commission) + cents(deal.swap)
        s.balance += amount
        s.closed_pnl += amount
        s.day_pnl[day] = s.day_pnl.get(day, 0) + amount
        if s.first_deal_ns is None:
            s.first_deal_ns = deal.ts_ns
        s.last_deal_ns = deal.ts_ns
        news = self.phase.news_trading
        in_window = (
            judged
            and news is not None
            and news.action == "exclude_profit"
            and self._release(deal, s.news) is not None
        )
        pos = s.positions.get(deal.position_id)
        if deal.entry is DealEntry.IN:
            self._fold_entry(s, deal, pos, day, in_window)
            return
        if pos is None:
            return
        if in_window or pos.opened_in_window:
            s.excluded += max(cents(deal.profit), 0)
        pos.volume -= deal.volume
        if pos.volume > FLAT:
            return
        del s.positions[deal.position_id]
        s.closed_trades += 1
        if pos.open_day == day:
            s.round_trip_days.add(day)
        hold = self.phase.min_hold_time
        if hold is not None and deal.ts_ns - pos.opened_ns < hold.seconds * NS:
            s.short_trades += 1

    def _fold_entry(
        self, s: State, deal: DealExecuted, pos: Pos | None, day: dt.date, in_window: bool
    ) -> None:
        if pos is None:
            open_day = day
            s.positions[deal.position_id] = Pos(
                symbol=deal.symbol,
                buy=deal.side is Side.BUY,
                volume=deal.volume,
                price=deal.price,
                opened_ns=deal.ts_ns,
                open_day=open_day,
                opened_in_window=in_window,
            )
            s.opened_days.add(day)
            return
        # MetaTrader's average: the remaining volume at its price, plus the new entry.
        total = pos.volume + deal.volume
        pos.price = (pos.price * pos.volume + deal.price * deal.volume) / total
        pos.volume = total
        pos.opened_in_window = pos.opened_in_window or in_window  # an add inside a window taints

    # Judging ----------------------------------------------------------------------------------

    def run(self, history: Sequence[Item]) -> Verdict:
        out = _Outcomes(self.clock)
        statuses: list[str] = []
        equities: list[int | None] = []
        progress: list[tuple[int, int] | None] = []
        last_ts: int | None = None
        for k, item in enumerate(history):
            if not isinstance(item, NewsListed):
                if not out.over:
                    self._event(history, k, item, last_ts, out)
                last_ts = item.ts_ns
            state = self.fold(history[: k + 1], unjudged=out.unjudged)
            equities.append(state.equity if state.started else None)
            statuses.append(out.status(last_ts))
            running = state.started and not out.over
            progress.append((self._trading_days(state), self.profit(state)) if running else None)
        return Verdict(out.breaches, statuses, equities, progress, out.passed_by)

    def _event(
        self,
        history: Sequence[Item],
        k: int,
        event: AccountEvent,
        last_ts: int | None,
        out: _Outcomes,
    ) -> None:
        cause = event.event_id
        if last_ts is not None:
            for boundary in self.clock.boundaries(last_ts, event.ts_ns):
                self._boundary(history[:k], boundary, cause, out)
                if out.over:
                    return
        now = self.fold(history[: k + 1], unjudged=out.unjudged)
        if not now.started:
            return
        if isinstance(event, DealExecuted):
            if out.paused(event.ts_ns):  # the firm's own forced closes: not judged
                out.unjudged |= {k}
                now = self.fold(history[: k + 1], unjudged=out.unjudged)
            else:
                self._deal_rules(now, event, out)
                if out.over:
                    return
        self._loss_rules(history[: k + 1], event.ts_ns, now, cause, out)
        if not out.over and not out.paused(event.ts_ns):
            self._pass_check(now, event, out)

    def _boundary(self, before: Sequence[Item], boundary: int, cause: str, out: _Outcomes) -> None:
        """The rules run at a day boundary, in the documented order, on the account as the last
        event before it left it."""
        state = self.fold(before, upto_ns=boundary - 1, unjudged=out.unjudged)
        if not state.started:
            return
        ending = self.clock.day(boundary - 1)
        starting = self.clock.name(boundary)
        weekend = self.phase.weekend_holding
        if weekend is not None and ending.weekday() == 4 and state.positions:
            action = "fail" if weekend.action == "fail" else "close_positions"
            out.add(Breach("weekend_holding", action, boundary, cause))
            if out.over:
                return
        max_days = self.phase.max_days
        if max_days is not None and max_days.days and state.first_deal_ns is not None:
            first = self.clock.day(state.first_deal_ns)
            if (starting - first).days >= max_days.days:  # this boundary starts day days + 1
                out.add(Breach("max_days", "fail", boundary, cause))
                return
        inactivity = self.phase.inactivity
        if inactivity is not None:
            since = state.last_deal_ns if state.last_deal_ns is not None else state.first_event_ns
            assert since is not None
            idle = (starting - self.clock.day(since)).days - 1  # whole days strictly between
            if idle >= inactivity.days:
                out.add(Breach("inactivity", "fail", boundary, cause))
                return
        # Last, the loss floors against the new day's values, at the boundary itself.
        at = self.fold(before, upto_ns=boundary, unjudged=out.unjudged)
        self._loss_rules(before, boundary, at, cause, out)

    def _deal_rules(self, now: State, deal: DealExecuted, out: _Outcomes) -> None:
        lots = self.phase.max_lots
        if lots is not None and deal.entry is DealEntry.IN and deal.volume > lots.per_order:
            out.add(Breach("max_lots", "fail", deal.ts_ns, deal.event_id))
            return
        news = self.phase.news_trading
        if news is None or self._release(deal, now.news) is None:
            return
        action = news.action
        if action == "strike":
            struck = sum(1 for b in out.breaches if b.rule == "news_trading") + 1
            action = "fail" if struck > news.strikes else "strike"
        out.add(Breach("news_trading", action, deal.ts_ns, deal.event_id))

    def _day_reference(
        self, prefix: Sequence[Item], at_ns: int, unjudged: frozenset[int]
    ) -> tuple[int, int]:
        """(balance, equity) of the trading day holding `at_ns`: as they stood at its start
        boundary (after the last event before it), moved by the money moved since in `prefix`."""
        start = self.clock.start_of(at_ns)
        cut = next(
            (
                i
                for i, item in enumerate(prefix)
                if not isinstance(item, NewsListed) and item.ts_ns >= start
            ),
            len(prefix),
        )
        at_start = self.fold(prefix[:cut], unjudged=unjudged)
        balance = at_start.balance if at_start.started else 0
        equity = at_start.equity if at_start.started else 0
        for item in prefix[cut:]:
            if isinstance(item, BalanceOperated):
                amount = cents(item.amount)
                if item.kind is not BalanceKind.CREDIT:
                    balance += amount
                equity += amount  # credit is not a deposit, but counts in equity (see report)
        return balance, equity

    def max_loss_floor(self, now: State) -> int | None:
        rule = self.phase.max_loss
        if rule is None:
            return None
        amount = pct_of(now.initial, rule.pct)
        lowest = now.initial - amount
        if rule.mode == "static":
            return lowest
        floor = now.peak - amount
        if rule.lock_at == "initial":
            floor = min(floor, now.initial)
        elif rule.lock_at != "never":
            floor = min(floor, cents(float(rule.lock_at)))
        return max(floor, lowest)

    def _daily_floor(
        self, prefix: Sequence[Item], at_ns: int, now: State, out: _Outcomes
    ) -> int | None:
        """Today's daily-loss floor; None without the rule or while paused (it already broke)."""
        if out.paused(at_ns):
            return None
        return self.daily_floor(prefix, at_ns, now, out.unjudged)

    def daily_floor(
        self, prefix: Sequence[Item], at_ns: int, now: State, unjudged: frozenset[int] = frozenset()
    ) -> int | None:
        """The daily-loss floor of the trading day holding `at_ns`, after `prefix`."""
        rule = self.phase.daily_loss
        if rule is None:
            return None
        balance, equity = self._day_reference(prefix, at_ns, unjudged)
        reference = {
            "day_start_balance": balance,
            "day_start_equity": equity,
            "day_start_max_balance_equity": max(balance, equity),
            "initial": now.initial,
        }[rule.reference]
        base = now.initial if rule.amount_base == "initial" else reference
        return reference - pct_of(base, rule.pct)

    def _loss_rules(
        self,
        prefix: Sequence[Item],
        at_ns: int,
        now: State,
        cause: str,
        out: _Outcomes,
    ) -> None:
        """Both loss floors. Through both: the higher floor is named (`max_loss` on a tie), and a
        `daily_loss` that pauses never hides a `max_loss` failure."""
        floor = self.max_loss_floor(now)
        daily = self._daily_floor(prefix, at_ns, now, out)
        rule = self.phase.daily_loss
        through_max = floor is not None and now.equity <= floor
        through_daily = daily is not None and now.equity <= daily
        if through_max and not (
            through_daily
            and rule is not None
            and rule.action == "fail"
            and daily is not None
            and floor is not None
            and daily > floor
        ):
            out.add(Breach("max_loss", "fail", at_ns, cause))
            return
        if through_daily:
            assert rule is not None
            out.add(Breach("daily_loss", rule.action, at_ns, cause))

    def _pass_check(self, now: State, event: AccountEvent, out: _Outcomes) -> None:
        target = self.phase.profit_target
        if target is None:
            return
        goal = pct_of(now.initial, target.pct)
        reached = self.profit(now) >= goal
        if target.basis == "closed_balance" and now.positions:
            reached = False
        # The conditions in the documented order; the first that does not hold stops the check
        # (a `fail` action fails the phase, otherwise the phase stays open).
        if not reached or not self._enough_days(now):
            return
        consistency = self.phase.consistency
        if consistency is not None:
            best = max(now.day_pnl.values(), default=0)
            total = now.closed_pnl
            if not (total > 0 and best * 100 <= consistency.max_best_day_pct * total):
                if consistency.action == "fail":
                    out.add(Breach("consistency", "fail", event.ts_ns, event.event_id))
                return
        hold = self.phase.min_hold_time
        if hold is not None and now.short_trades * 100 > hold.max_share_pct * now.closed_trades:
            if hold.action == "fail":
                out.add(Breach("min_hold_time", "fail", event.ts_ns, event.event_id))
            return
        out.passed_by = event.event_id

    def profit(self, now: State) -> int:
        """Profit towards the target on its basis, excluded profit taken out."""
        target = self.phase.profit_target
        profit = now.closed_pnl - now.excluded
        if target is not None and target.basis == "equity":
            profit += now.floating
        return profit

    def _trading_days(self, now: State) -> int:
        """Days that count towards `min_trading_days` (days a position was opened without it)."""
        rule = self.phase.min_trading_days
        if rule is None or rule.counts == "position_opened":
            return len(now.opened_days)
        if rule.counts == "opened_and_closed":
            return len(now.round_trip_days)
        assert rule.min_profit_pct is not None
        least = pct_of(now.initial, rule.min_profit_pct)
        return sum(1 for pnl in now.day_pnl.values() if pnl >= least)

    def _enough_days(self, now: State) -> bool:
        rule = self.phase.min_trading_days
        return rule is None or self._trading_days(now) >= rule.days


@dataclass
class _Outcomes:
    """The oracle's verdicts so far: all it keeps from one event to the next."""

    clock: TradingClock
    breaches: list[Breach] = field(default_factory=list)
    passed_by: str | None = None
    unjudged: frozenset[int] = frozenset()  # deals made while paused: not judged

    def add(self, breach: Breach) -> None:
        self.breaches.append(breach)

    @property
    def over(self) -> bool:
        return self.passed_by is not None or any(b.action == "fail" for b in self.breaches)

    def paused(self, ts_ns: int) -> bool:
        """A daily pause lasts until the end of the trading day it happened in."""
        start = self.clock.start_of(ts_ns)
        return any(b.action == "pause" and b.ts_ns >= start for b in self.breaches)

    def status(self, ts_ns: int | None) -> str:
        if self.passed_by is not None:
            return "passed"
        if any(b.action == "fail" for b in self.breaches):
            return "failed"
        if ts_ns is not None and self.paused(ts_ns):
            return "paused"
        return "active"
