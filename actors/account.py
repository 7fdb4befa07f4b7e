"""The account entity: a pure state machine, `apply(event, book) -> effects`.

No I/O, no clock, no Ray: time and prices come in as data, effects go out as data. The same code
runs in the shard, in replay, in tests and in load tests.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import msgspec

from actors.events import (
    AccountFrozen,
    AnyDomainEvent,
    RuleBreached,
    RuleName,
    breach_id,
    freeze_command_id,
)
from actors.plans import Plan
from bridge.commands import AnyPlatformCommand, DisableTrading
from bridge.events import (
    AnyPlatformEvent,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    PriceTicked,
    Side,
    TradingDisabled,
)
from bridge.instruments import INSTRUMENTS_BY_SYMBOL

Quote = tuple[float, float]
"""Best (bid, ask) of a symbol."""

Effect = AnyDomainEvent | AnyPlatformCommand

_FLAT = 1e-9


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    BREACHED = "breached"


class Position(msgspec.Struct, kw_only=True, gc=False):
    """An open position, valued at the bid when long and at the ask when short."""

    symbol: str
    side: Side
    volume: float
    open_price: float
    contract_size: float
    floating: float = 0.0

    def mark(self, quote: Quote) -> None:
        bid, ask = quote
        if self.side is Side.BUY:
            self.floating = (bid - self.open_price) * self.volume * self.contract_size
        else:
            self.floating = (self.open_price - ask) * self.volume * self.contract_size


class Account(msgspec.Struct, kw_only=True):
    """One trader account under a plan; its whole state is snapshot-able as it stands."""

    account_id: str
    plan: Plan
    balance: float
    day_start_balance: float
    next_rollover_ns: int = 0
    positions: dict[int, Position] = msgspec.field(default_factory=dict)
    floating: float = 0.0
    status: AccountStatus = AccountStatus.ACTIVE
    breach: RuleBreached | None = None
    frozen: AccountFrozen | None = None
    last_deal_id: int = 0
    version: int = 0
    ts_ns: int = 0

    @classmethod
    def open(cls, account_id: str, plan: Plan) -> Account:
        """A new account funded with the plan's initial balance."""
        return cls(
            account_id=account_id,
            plan=plan,
            balance=plan.initial_balance,
            day_start_balance=plan.initial_balance,
        )

    @property
    def equity(self) -> float:
        return self.balance + self.floating

    @property
    def daily_floor(self) -> float:
        return self.day_start_balance - self.plan.daily_loss_amount

    def symbols(self) -> set[str]:
        return {p.symbol for p in self.positions.values()}

    def apply(self, event: AnyPlatformEvent, book: Mapping[str, Quote]) -> list[Effect]:
        """Apply one platform event; return the effects (domain events, platform commands)."""
        if isinstance(event, PriceTicked):
            return self._on_tick(event)
        if isinstance(event, TradingDisabled):
            return self._on_trading_disabled(event)
        if event.deal_id <= self.last_deal_id:
            return []  # already applied: platforms number deals in increasing order
        self._advance(event.ts_ns)
        self.last_deal_id = event.deal_id
        if isinstance(event, DealExecuted):
            self._on_deal(event, book)
        else:
            self._on_balance(event)
        return self._check_limits(event)

    def _advance(self, ts_ns: int) -> None:
        """Move the clock to `ts_ns`, rolling the trading day over when a boundary passed."""
        self.version += 1
        self.ts_ns = max(self.ts_ns, ts_ns)
        if self.next_rollover_ns == 0:
            self.next_rollover_ns = self.plan.next_rollover_ns(ts_ns)
        elif ts_ns >= self.next_rollover_ns:
            # Balance only moves with deals, so the balance now is the balance at the boundary.
            self.day_start_balance = self.balance
            self.next_rollover_ns = self.plan.next_rollover_ns(ts_ns)

    def _on_tick(self, tick: PriceTicked) -> list[Effect]:
        self._advance(tick.ts_ns)
        quote = (tick.bid, tick.ask)
        for position in self.positions.values():
            if position.symbol == tick.symbol:
                position.mark(quote)
        self._refloat()
        return self._check_limits(tick)

    def _on_deal(self, deal: DealExecuted, book: Mapping[str, Quote]) -> None:
        self.balance += deal.profit + deal.commission + deal.swap
        if deal.entry is DealEntry.IN:
            self._open_position(deal)
        else:
            self._reduce_position(deal)
        quote = book.get(deal.symbol)
        position = self.positions.get(deal.position_id)
        if position is not None and quote is not None:
            position.mark(quote)
        self._refloat()

    def _open_position(self, deal: DealExecuted) -> None:
        existing = self.positions.get(deal.position_id)
        if existing is not None:  # adding to a position: volume-weighted open price
            total = existing.volume + deal.volume
            existing.open_price = (
                existing.open_price * existing.volume + deal.price * deal.volume
            ) / total
            existing.volume = total
            return
        instrument = INSTRUMENTS_BY_SYMBOL.get(deal.symbol)
        self.positions[deal.position_id] = Position(
            symbol=deal.symbol,
            side=deal.side,
            volume=deal.volume,
            open_price=deal.price,
            contract_size=instrument.contract_size if instrument else 1.0,
        )

    def _reduce_position(self, deal: DealExecuted) -> None:
        position = self.positions.get(deal.position_id)
        if position is None:
            return
        remaining = position.volume - deal.volume
        if remaining <= _FLAT:
            del self.positions[deal.position_id]
        else:
            position.floating *= remaining / position.volume
            position.volume = remaining

    def _on_balance(self, operation: BalanceOperated) -> None:
        self.balance += operation.amount

    def _refloat(self) -> None:
        self.floating = sum(p.floating for p in self.positions.values())

    def _on_trading_disabled(self, event: TradingDisabled) -> list[Effect]:
        if self.frozen is not None:
            return []
        self._advance(event.ts_ns)
        reason = self.breach.rule.value if self.breach else "manual"
        self.frozen = AccountFrozen(
            event_id=f"frozen:{self.account_id}:{event.command_id}",
            ts_ns=event.ts_ns,
            account_id=self.account_id,
            command_id=event.command_id,
            reason=reason,
        )
        return [self.frozen]

    def _check_limits(self, event: AnyPlatformEvent) -> list[Effect]:
        if self.status is not AccountStatus.ACTIVE:
            return []
        equity = self.equity
        rule, floor = self._binding_floor()
        if equity > floor:
            return []
        self.status = AccountStatus.BREACHED
        self.breach = RuleBreached(
            event_id=breach_id(self.account_id, rule, event.event_id),
            ts_ns=event.ts_ns,
            account_id=self.account_id,
            rule=rule,
            equity=equity,
            floor=floor,
            caused_by=event.event_id,
        )
        freeze = DisableTrading(
            command_id=freeze_command_id(self.account_id, event.event_id),
            account_id=self.account_id,
            reason=rule.value,
            caused_by=event.event_id,
        )
        return [self.breach, freeze]

    def _binding_floor(self) -> tuple[RuleName, float]:
        """The higher of the two equity floors: falling equity reaches it first."""
        daily = self.daily_floor
        static = self.plan.max_loss_floor
        if static >= daily:
            return RuleName.MAX_LOSS, static
        return RuleName.DAILY_LOSS, daily
