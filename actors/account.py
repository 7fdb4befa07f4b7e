"""The account entity: a pure state machine, `apply(event, market) -> effects`.

No I/O, no clock, no Ray: time and prices come in as data, effects go out as data. The same code
runs in the shard, in `propvisor replay`, in tests and in load tests. Money is held in integer cents
of the account currency, so every comparison with a limit is exact; `docs/rules.md` says how each
value is computed and in what order rules are checked.
"""

from __future__ import annotations

import msgspec

from actors import rules
from actors.events import (
    AccountFrozen,
    AccountResumed,
    AccountStatus,
    AnyDomainEvent,
    BreachAction,
    PhaseFailed,
    RuleBreached,
    RuleName,
    breach_id,
    freeze_command_id,
)
from actors.market import Market, Quote, to_cents
from actors.plans import Phase, Plan
from actors.rules import NO_LIMIT, NO_TRIGGER
from bridge.commands import AnyPlatformCommand, DisableTrading, EnableTrading
from bridge.events import (
    AnyPlatformEvent,
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    PriceTicked,
    Side,
    TradingDisabled,
)

Effect = AnyDomainEvent | AnyPlatformCommand

_FLAT = 1e-9


class UnknownSymbol(ValueError):
    """A deal on a symbol the market has no specification for (or no conversion into the
    account currency); the deal is not applied."""


class Position(msgspec.Struct, kw_only=True, gc=False):
    """An open position. Long is valued at the bid, short at the ask; the profit currency is
    converted into the account currency through `conversion` (a symbol, divided if inverted)."""

    symbol: str
    buy: bool
    volume: float
    open_price: float
    contract_size: float
    conversion: str | None
    inverted: bool
    opened_ns: int
    open_day: int
    tainted: bool = False  # opened inside a news window under `exclude_profit`
    floating: int = 0  # cents

    def value(self, book: dict[str, Quote]) -> int:
        """Floating P&L in cents at `book`; zero until the symbol (and its conversion) ticked."""
        quote = book.get(self.symbol)
        if quote is None:
            return 0
        if self.buy:
            raw = (quote[0] - self.open_price) * self.volume * self.contract_size
        else:
            raw = (self.open_price - quote[1]) * self.volume * self.contract_size
        if self.conversion is not None:
            rate = book.get(self.conversion)
            if rate is None:
                return 0
            if self.inverted:  # sell the profit currency at the ask, buy it back at the bid
                raw = raw / (rate[1] if raw >= 0 else rate[0])
            else:
                raw = raw * (rate[0] if raw >= 0 else rate[1])
        return round(raw * 100)


class Account(msgspec.Struct, kw_only=True):
    """One trader account in one phase of a plan; its whole state is snapshot-able as it stands.

    Money fields are integer cents. `low` and `high` bracket the equities at which nothing can
    happen: a tick that leaves equity strictly between them needs no rule evaluation.
    """

    account_id: str
    plan: Plan
    phase_index: int = 0
    status: AccountStatus = AccountStatus.ACTIVE
    started: bool = False
    initial: int = 0
    balance: int = 0
    credit: int = 0
    floating: int = 0
    closed_pnl: int = 0
    excluded: int = 0
    positions: dict[int, Position] = msgspec.field(default_factory=dict)
    day: int = 0
    start_day: int = 0
    next_rollover_ns: int = 0
    day_start_balance: int = 0
    day_start_equity: int = 0
    peak: int = 0
    day_pnl: dict[int, int] = msgspec.field(default_factory=dict)
    opened_days: set[int] = msgspec.field(default_factory=set)
    round_trip_days: set[int] = msgspec.field(default_factory=set)
    first_trade_day: int = 0
    last_trade_day: int = 0
    strikes: int = 0
    closed_trades: int = 0
    short_trades: int = 0
    warned: int = 0
    pause_until_ns: int = 0
    breaches: list[RuleBreached] = msgspec.field(default_factory=list)
    frozen: AccountFrozen | None = None
    last_deal_id: int = 0
    version: int = 0
    ts_ns: int = 0
    daily_floor: int = NO_LIMIT
    max_floor: int = NO_LIMIT
    low: int = NO_TRIGGER
    high: int = NO_LIMIT

    @classmethod
    def open(
        cls, account_id: str, plan: Plan, *, phase: str | None = None, funded: bool = True
    ) -> Account:
        """A new account. `funded`: it already holds the plan's initial balance (provisioned);
        otherwise it starts empty and its first deposit funds it."""
        index = 0 if phase is None else plan.phase_index(phase)
        account = cls(account_id=account_id, plan=plan, phase_index=index)
        if plan.initial_balance is not None:
            account.initial = to_cents(plan.initial_balance)
            if funded:
                account._start(account.initial)
        return account

    @property
    def phase(self) -> Phase:
        return self.plan.phases[self.phase_index]

    @property
    def equity(self) -> int:
        return self.balance + self.credit + self.floating

    @property
    def breach(self) -> RuleBreached | None:
        """The breach that ended or paused trading most recently, if any."""
        for breach in reversed(self.breaches):
            if breach.action in (BreachAction.FAIL, BreachAction.PAUSE):
                return breach
        return None

    def symbols(self) -> set[str]:
        """Symbols whose ticks move this account's equity (positions and their conversions)."""
        found = {p.symbol for p in self.positions.values()}
        found.update(p.conversion for p in self.positions.values() if p.conversion)
        return found

    def trading_days(self) -> int:
        return rules.trading_days(self)

    def apply(self, event: AnyPlatformEvent, market: Market) -> list[Effect]:
        """Apply one platform event; return the effects (domain events, platform commands)."""
        if isinstance(event, PriceTicked):
            return self.on_tick(event, market.book)
        if isinstance(event, TradingDisabled):
            return self._on_trading_disabled(event)
        if event.deal_id <= self.last_deal_id:
            return []  # already applied: platforms number deals in increasing order
        if isinstance(event, DealExecuted):
            return self._on_deal(event, market)
        return self._on_balance(event, market.book)

    def advance(self, ts_ns: int, cause: str, book: dict[str, Quote]) -> list[Effect]:
        """Let time pass with no event (a clock): day boundaries and the rules that run on them.

        The positions are re-marked at `book` first: the day's reference equity must be the
        equity at the boundary, even if the caller skipped ticks that changed no outcome.
        """
        self._refloat(book)
        effects = self._advance(ts_ns, cause)
        if self.started:
            effects.extend(self._evaluate(cause, ts_ns))
        return effects

    def on_tick(self, tick: PriceTicked, book: dict[str, Quote]) -> list[Effect]:
        """Re-mark every position at `book`; evaluate rules only if equity left (low, high).

        Only a tick that evaluates rules (or passes a day boundary) changes the state that
        matters and moves `version`; the fast path only refreshes the marks. `ts_ns` is the time
        of the latest event applied to the account, never a tick's. Every position is re-marked,
        not only those of the ticked symbol, so the equity is exact even when the caller skipped
        ticks that could not change anything (the shard's price bands).
        """
        ts_ns = tick.ts_ns
        # a day boundary passed (also the very first event: no day yet)
        effects = self._advance(ts_ns, tick.event_id) if ts_ns >= self.next_rollover_ns else []
        self._refloat(book)
        equity = self.balance + self.credit + self.floating
        if self.low < equity < self.high and not effects:
            return effects
        if self.started:
            self.version += 1
            effects.extend(self._evaluate(tick.event_id, ts_ns))
        return effects

    def _advance(self, ts_ns: int, cause: str) -> list[Effect]:
        """Move the clock to `ts_ns`, running every day boundary passed on the way."""
        self.version += 1
        if ts_ns > self.ts_ns:
            self.ts_ns = ts_ns
        if self.next_rollover_ns == 0:
            clock = self.plan.day_rollover
            self.day = self.start_day = clock.label(clock.boundary_at_or_before(ts_ns))
            self.next_rollover_ns = clock.boundary_after(ts_ns)
            return []
        effects: list[Effect] = []
        if ts_ns >= self.next_rollover_ns:
            while ts_ns >= self.next_rollover_ns:
                rules.roll_day(self, self.next_rollover_ns, cause, effects)
            rules.refresh_triggers(self)  # new floors, re-armed warnings: the old bracket is stale
        return effects

    def _start(self, amount: int) -> None:
        self.started = True
        self.balance = amount
        if self.initial == 0:
            self.initial = amount
        self.day_start_balance = self.day_start_equity = amount
        self.peak = self.initial
        rules.refresh_limits(self)

    def _on_balance(self, operation: BalanceOperated, book: dict[str, Quote]) -> list[Effect]:
        self._refloat(book)  # evaluated below: the equity must be current
        effects = self._advance(operation.ts_ns, operation.event_id)
        self.last_deal_id = operation.deal_id
        amount = to_cents(operation.amount)
        if not self.started and operation.kind is BalanceKind.DEPOSIT and amount > 0:
            self._start(amount)
            return effects
        if operation.kind is BalanceKind.CREDIT:
            self.credit += amount
        else:
            self.balance += amount
            # Money moved in or out is not trading: the day's references and a trailing peak
            # move with it (a payout lowers the high-water mark by its amount).
            self.day_start_balance += amount
            if self.phase.max_loss is not None and self.phase.max_loss.mode != "static":
                self.peak += amount
        self.day_start_equity += amount
        rules.refresh_limits(self)
        if self.started:
            effects.extend(self._evaluate(operation.event_id, operation.ts_ns))
        return effects

    def _on_deal(self, deal: DealExecuted, market: Market) -> list[Effect]:
        position = self.positions.get(deal.position_id)
        if deal.entry is DealEntry.IN and position is None:
            position = self._new_position(deal, market)  # raises before any state changes
        effects = self._advance(deal.ts_ns, deal.event_id)
        self.last_deal_id = deal.deal_id
        amount = to_cents(deal.profit) + to_cents(deal.commission) + to_cents(deal.swap)
        self.balance += amount
        self.closed_pnl += amount
        self.day_pnl[self.day] = self.day_pnl.get(self.day, 0) + amount
        self.last_trade_day = self.day
        if not self.first_trade_day:
            self.first_trade_day = self.day
        if self.status is AccountStatus.ACTIVE:  # a paused account's deals are our own closes
            rules.check_deal(self, deal, market, position, effects)
        judged = self.status is AccountStatus.ACTIVE or self.status is AccountStatus.PAUSED
        if deal.entry is DealEntry.IN and position is not None:
            self._open(deal, position, judged)
        else:
            self._close(deal, judged)
        self._refloat(market.book)
        rules.after_deal(self)
        if self.started:
            effects.extend(self._evaluate(deal.event_id, deal.ts_ns))
        return effects

    def _new_position(self, deal: DealExecuted, market: Market) -> Position:
        spec = market.symbols.get(deal.symbol)
        if spec is None:
            raise UnknownSymbol(f"`symbol`: no specification for {deal.symbol!r}")
        try:
            conversion = market.conversion(spec.quote, self.plan.currency)
        except KeyError as exc:
            raise UnknownSymbol(f"`symbol`: {deal.symbol!r}: {exc.args[0]}") from exc
        return Position(
            symbol=deal.symbol,
            buy=deal.side is Side.BUY,
            volume=0.0,
            open_price=deal.price,
            contract_size=spec.contract_size,
            conversion=conversion[0] if conversion else None,
            inverted=conversion[1] if conversion else False,
            opened_ns=deal.ts_ns,
            open_day=self.day,
        )

    def _open(self, deal: DealExecuted, position: Position, judged: bool) -> None:
        """Open or add to a position; `judged`: the day counts (the phase is still running)."""
        if position.volume > 0:  # adding to a position: volume-weighted open price
            total = position.volume + deal.volume
            position.open_price = (
                position.open_price * position.volume + deal.price * deal.volume
            ) / total
            position.volume = total
            return
        position.volume = deal.volume
        position.open_day = self.day  # the deal's own day: its boundaries have run by now
        self.positions[deal.position_id] = position
        if judged:
            self.opened_days.add(self.day)

    def _close(self, deal: DealExecuted, judged: bool) -> None:
        position = self.positions.get(deal.position_id)
        if position is None:
            return
        if position.tainted:
            self.excluded += max(to_cents(deal.profit), 0)
        remaining = position.volume - deal.volume
        if remaining > _FLAT:
            position.volume = remaining
            return
        del self.positions[deal.position_id]
        self.closed_trades += 1
        if judged and position.open_day == self.day:
            self.round_trip_days.add(self.day)
        hold = self.phase.min_hold_time
        if hold is not None and deal.ts_ns - position.opened_ns < hold.seconds * 1_000_000_000:
            self.short_trades += 1

    def _refloat(self, book: dict[str, Quote]) -> None:
        floating = 0
        for position in self.positions.values():
            position.floating = position.value(book)
            floating += position.floating
        self.floating = floating

    def _on_trading_disabled(self, event: TradingDisabled) -> list[Effect]:
        if self.frozen is not None:
            return []  # already frozen (a pause that ends clears it)
        self._advance(event.ts_ns, event.event_id)
        breach = self.breach
        self.frozen = AccountFrozen(
            event_id=f"frozen:{self.account_id}:{event.command_id}",
            ts_ns=event.ts_ns,
            account_id=self.account_id,
            caused_by=event.event_id,
            command_id=event.command_id,
            reason=breach.rule.value if breach else "manual",
        )
        return [self.frozen]

    def _evaluate(self, cause: str, ts_ns: int) -> list[Effect]:
        """Every rule that depends on equity, in the documented order; then the pass check."""
        if self.status is AccountStatus.FAILED or self.status is AccountStatus.PASSED:
            self.low, self.high = NO_LIMIT, NO_TRIGGER
            return []
        effects: list[Effect] = []
        rules.check_equity(self, cause, ts_ns, effects)
        if self.status is AccountStatus.ACTIVE:
            rules.check_pass(self, cause, ts_ns, effects)
        rules.refresh_triggers(self)
        return effects

    # Outcomes, used by the rules ------------------------------------------------------------

    def breached(
        self,
        rule: RuleName,
        action: BreachAction,
        cause: str,
        ts_ns: int,
        value: float,
        limit: float,
    ) -> RuleBreached:
        breach = RuleBreached(
            event_id=breach_id(self.account_id, rule, cause),
            ts_ns=ts_ns,
            account_id=self.account_id,
            caused_by=cause,
            rule=rule,
            action=action,
            value=value,
            limit=limit,
            phase=self.phase.name,
        )
        self.breaches.append(breach)
        return breach

    def fail(
        self, rule: RuleName, cause: str, ts_ns: int, value: float, limit: float
    ) -> list[Effect]:
        """The phase is failed: record why and stop the account trading."""
        self.status = AccountStatus.FAILED
        breach = self.breached(rule, BreachAction.FAIL, cause, ts_ns, value, limit)
        failed = PhaseFailed(
            event_id=f"failed:{self.account_id}:{self.phase.name}",
            ts_ns=ts_ns,
            account_id=self.account_id,
            caused_by=cause,
            phase=self.phase.name,
            rule=rule,
        )
        freeze = DisableTrading(
            command_id=freeze_command_id(self.account_id, cause),
            account_id=self.account_id,
            reason=rule.value,
            caused_by=cause,
        )
        return [breach, failed, freeze]

    def resume(self, boundary_ns: int, cause: str) -> list[Effect]:
        """A daily pause ends at the day boundary."""
        self.status = AccountStatus.ACTIVE
        self.pause_until_ns = 0
        self.frozen = None
        resumed = AccountResumed(
            event_id=f"resumed:{self.account_id}:{boundary_ns}",
            ts_ns=boundary_ns,
            account_id=self.account_id,
            caused_by=cause,
        )
        enable = EnableTrading(
            command_id=f"enable:{self.account_id}:{boundary_ns}",
            account_id=self.account_id,
            reason="daily pause ended",
        )
        return [resumed, enable]
