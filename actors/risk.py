"""The risk managers' view of an account, and the messages of the risk stream.

A shard turns each account that changed into a `RiskRow` at its own book: money in cents of the
account currency, how much of each loss limit today's equity uses, and its net exposure by symbol
and by currency with the notional in cents of the firm currency (`RiskFeed`). Rows go to the hub
(`actors/hub.py`), which keeps firm-wide exposure and alerts and numbers every message it sends
on (`StreamMessage`). The same structs travel msgpack-encoded between actors and JSON-encoded to
websocket clients (`docs/stream.md`).

Pure: no I/O, no clock, no Ray. The wall-clock time a batch was applied comes in as data.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Iterable, Mapping

import msgspec

from actors import rules
from actors.account import Account
from actors.events import (
    AccountFrozen,
    AccountPaused,
    AccountResumed,
    AccountStatus,
    PhaseFailed,
    PhasePassed,
    ReconciliationMismatch,
    RuleBreached,
    RuleProgressed,
)
from actors.market import Market, Quote
from actors.rules import NO_LIMIT

FUNDED = "funded"
EVALUATION = "evaluation"
BOOKS = (EVALUATION, FUNDED)


class Leg(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Net exposure to one symbol: lots (positive long), notional in firm-currency cents
    (signed as the lots; None while the symbol or its conversion has no quote)."""

    symbol: str
    lots: float
    notional: int | None


class CurrencyLeg(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Net exposure to one currency (or an index or metal, named as its symbol's base): units
    held (positive long) and their value in firm-currency cents (None without a quote)."""

    currency: str
    amount: float
    notional: int | None


class RiskRow(msgspec.Struct, frozen=True, kw_only=True):
    """One account as risk managers see it. Money in cents of `currency`; `*_used_pct` is how
    much of the limit's allowed loss today's equity has used (100: at the floor), None when the
    phase has no such limit or the account is not trading."""

    account_id: str
    plan: str
    phase: str
    book: str  # evaluation, or funded (a phase with no profit target)
    status: str
    frozen: bool
    currency: str
    balance: int
    equity: int
    daily_floor: int | None
    max_floor: int | None
    daily_used_pct: float | None
    max_used_pct: float | None
    legs: tuple[Leg, ...]
    currencies: tuple[CurrencyLeg, ...]
    ts_ns: int  # market time of the account's latest event

    @property
    def used_pct(self) -> float:
        """The larger of the two limits' use (0 when neither applies)."""
        return max(self.daily_used_pct or 0.0, self.max_used_pct or 0.0)

    def symbols(self) -> frozenset[str]:
        return frozenset(leg.symbol for leg in self.legs)


def book_of(account: Account) -> str:
    """A phase without a profit target never passes: it is the funded stage (`docs/rules.md`)."""
    return FUNDED if account.phase.profit_target is None else EVALUATION


def _used(reference: int, amount: int, equity: int) -> float:
    return round((reference - equity) * 100 / amount, 2) if amount else 100.0


def row_of(account: Account, market: Market, firm_currency: str) -> RiskRow:
    """The account's row at the market's book."""
    book = market.book
    floating = sum(p.value(book) for p in account.positions.values())
    equity = account.balance + account.credit + floating
    trading = account.started and account.status in (AccountStatus.ACTIVE, AccountStatus.PAUSED)
    daily_used = max_used = None
    if trading and account.daily_floor != NO_LIMIT:
        amount = rules.daily_amount(account)
        daily_used = _used(account.daily_floor + amount, amount, equity)
    if trading and account.max_floor != NO_LIMIT:
        amount = rules.max_amount(account)
        max_used = _used(account.max_floor + amount, amount, equity)
    legs, currencies = exposure_of(account, market, firm_currency)
    return RiskRow(
        account_id=account.account_id,
        plan=account.plan.id,
        phase=account.phase.name,
        book=book_of(account),
        status=account.status.value,
        frozen=account.frozen is not None,
        currency=account.plan.currency,
        balance=account.balance,
        equity=equity,
        daily_floor=None if account.daily_floor == NO_LIMIT else account.daily_floor,
        max_floor=None if account.max_floor == NO_LIMIT else account.max_floor,
        daily_used_pct=daily_used,
        max_used_pct=max_used,
        legs=legs,
        currencies=currencies,
        ts_ns=account.ts_ns,
    )


def _mid(book: Mapping[str, Quote], symbol: str) -> float | None:
    quote = book.get(symbol)
    if quote is None or quote[0] <= 0 or quote[1] <= 0:
        return None
    return (quote[0] + quote[1]) / 2


def value_in(market: Market, amount: float, currency: str, into: str) -> int | None:
    """`amount` of `currency` in cents of `into`, at mid prices; None without a quote or a
    symbol joining the two."""
    try:
        conversion = market.conversion(currency, into)
    except KeyError:
        return None
    if conversion is None:
        return round(amount * 100)
    symbol, inverted = conversion
    rate = _mid(market.book, symbol)
    if rate is None:
        return None
    return round((amount / rate if inverted else amount * rate) * 100)


def exposure_of(
    account: Account, market: Market, firm_currency: str
) -> tuple[tuple[Leg, ...], tuple[CurrencyLeg, ...]]:
    """Net lots per symbol and net units per currency of the open positions, valued in the firm
    currency at mid: a long lot of GBPJPY is +contract GBP and -contract x price JPY."""
    lots: dict[str, float] = {}
    units: dict[str, float] = {}
    for position in account.positions.values():
        sign = 1.0 if position.buy else -1.0
        lots[position.symbol] = lots.get(position.symbol, 0.0) + sign * position.volume
    legs: list[Leg] = []
    for symbol, net in sorted(lots.items()):
        spec = market.symbols.get(symbol)
        price = _mid(market.book, symbol)
        if spec is None:
            legs.append(Leg(symbol=symbol, lots=round(net, 8), notional=None))
            continue
        base_units = net * spec.contract_size
        units[spec.base] = units.get(spec.base, 0.0) + base_units
        notional = None
        if price is not None:
            quote_units = base_units * price
            units[spec.quote] = units.get(spec.quote, 0.0) - quote_units
            notional = value_in(market, quote_units, spec.quote, firm_currency)
        legs.append(Leg(symbol=symbol, lots=round(net, 8), notional=notional))
    currencies = tuple(
        CurrencyLeg(
            currency=currency,
            amount=round(amount, 6),
            notional=value_in(market, amount, currency, firm_currency),
        )
        for currency, amount in sorted(units.items())
        if abs(amount) > 1e-6
    )
    return tuple(legs), currencies


class RiskFeed:
    """What a shard publishes: the rows of the accounts that changed since the last `collect`,
    and the domain events it applied (breaches, passes, pauses, freezes, warnings).

    An account changes when an event reaches it, or when a symbol its row depends on ticks (its
    equity and notional move); a row equal to the one published last is not sent again.
    """

    def __init__(self, firm_currency: str = "USD", max_rows: int = 1_000) -> None:
        self.firm_currency = firm_currency
        self.touched: set[str] = set()
        self.ticked: set[str] = set()
        self.holders: dict[str, set[str]] = {}  # symbol -> accounts whose row depends on it
        self.depends: dict[str, frozenset[str]] = {}  # account -> symbols
        self.last: dict[str, RiskRow] = {}
        self.events: list[StreamEvent] = []
        self.applied_ns = 0  # wall time of the earliest batch not yet collected (0: none)
        self.replay: dict[str, RiskRow] = {}  # rows to send again as they are
        self.max_rows = max_rows

    def mark(self, applied_ns: int) -> None:
        """A batch was applied at `applied_ns` (wall clock)."""
        if not self.applied_ns:
            self.applied_ns = applied_ns

    def resend_all(self, account_ids: Iterable[str]) -> None:
        """Publish every account again (a new hub knows nothing): those hosted in memory
        (`account_ids`) recomputed, evicted ones as last sent (an evicted account is flat and
        idle, so its row has not changed)."""
        hosted = set(account_ids)
        self.replay.update((a, row) for a, row in self.last.items() if a not in hosted)
        self.last = {a: row for a, row in self.last.items() if a not in hosted}
        self.touched.update(hosted)

    def collect(
        self, accounts: Mapping[str, Account], market: Market
    ) -> tuple[list[RiskRow], list[StreamEvent], int]:
        """The rows that changed (at most `max_rows` computed per call: the rest wait for the
        next, so a tick that moves many accounts never holds the shard long), the events, and
        when the earliest of them was applied."""
        touched = self.touched  # account events: their positions, so their symbols, may change
        candidates = set(touched)
        for symbol in self.ticked:  # a quote moved: only the marks changed
            candidates |= self.holders.get(symbol, set())
        self.ticked = set()
        if len(candidates) > self.max_rows:
            now = list(itertools.islice(candidates, self.max_rows))
            candidates.difference_update(now)
            self.touched = candidates
        else:
            now, self.touched = list(candidates), set()
        rows = list(self.replay.values())
        self.last.update(self.replay)
        self.replay = {}
        for account_id in now:
            account = accounts.get(account_id)
            if account is None:
                continue
            row = row_of(account, market, self.firm_currency)
            last = self.last.get(account_id)
            # Dependencies follow the positions (account events) and the priced currencies: a
            # position dealt before its symbol had a quote gains its quote currency, and with
            # it a conversion pair, at its first tick.
            if account_id in touched or last is None or _named(last) != _named(row):
                self._depend(
                    account_id, account.symbols() | _conversions(row, market, self.firm_currency)
                )
            if last != row:
                self.last[account_id] = row
                rows.append(row)
        events, self.events = self.events, []
        applied_ns = self.applied_ns
        self.applied_ns = 0 if not self.touched else applied_ns  # the rest were applied then too
        return rows, events, applied_ns

    def _depend(self, account_id: str, symbols: frozenset[str] | set[str]) -> None:
        old = self.depends.get(account_id, frozenset())
        if old == symbols:
            return
        for symbol in old - symbols:
            holders = self.holders.get(symbol)
            if holders is not None:
                holders.discard(account_id)
        for symbol in symbols - old:
            self.holders.setdefault(symbol, set()).add(account_id)
        self.depends[account_id] = frozenset(symbols)


def _named(row: RiskRow) -> set[str]:
    return {leg.currency for leg in row.currencies}


def _conversions(row: RiskRow, market: Market, firm_currency: str) -> frozenset[str]:
    """The symbols that value the row's exposure in the firm currency (GBPUSD for the pounds
    of a GBPJPY position): their ticks move its notionals."""
    found: set[str] = set()
    for leg in row.currencies:
        try:
            conversion = market.conversion(leg.currency, firm_currency)
        except KeyError:
            continue
        if conversion is not None:
            found.add(conversion[0])
    return frozenset(found)


StreamEvent = (
    RuleBreached
    | RuleProgressed
    | PhasePassed
    | PhaseFailed
    | AccountPaused
    | AccountResumed
    | AccountFrozen
    | ReconciliationMismatch
)
"""The domain events the stream carries."""

_STREAM_EVENTS: tuple[type, ...] = typing.get_args(StreamEvent)


def is_stream_event(event: object) -> typing.TypeGuard[StreamEvent]:
    return isinstance(event, _STREAM_EVENTS)
