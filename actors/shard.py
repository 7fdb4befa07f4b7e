"""Account shards: many account entities hosted in one place, applied one event at a time.

`ShardCore` is the pure part (no I/O): it hosts accounts, keeps the price book and the price-band
index (`actors/bands.py`: which accounts a quote on a symbol could change), and turns a batch of
platform events into effects. `AccountShard` is
the Ray actor around it: it sends freezes to the bridge at once and journals in batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import msgspec

from actors.account import Account, Effect, UnknownSymbol
from actors.bands import BandIndex
from actors.events import AccountFrozen, AccountStatus, AnyDomainEvent, RuleBreached
from actors.market import Market, Quote
from actors.plans import Plan
from actors.risk import RiskFeed, is_stream_event
from actors.rules import NO_LIMIT, NO_TRIGGER
from bridge.commands import AnyPlatformCommand, PlatformCommand
from bridge.events import AnyPlatformEvent, PriceTicked


class ShardStats(msgspec.Struct, kw_only=True):
    shard: int
    accounts: int = 0
    events: int = 0
    evaluations: int = 0
    breaches: int = 0
    frozen: int = 0
    unknown_account_events: int = 0
    rejected_events: int = 0  # deals on a symbol with no specification: not applied
    last_rejection: str = ""
    journal_rows: int = 0
    checkpoints: int = 0
    passive: int = 0  # hosted accounts evicted to their snapshot (counted in `accounts` too)
    command_errors: int = 0  # command batches the bridge did not take (each freeze is resent)


class Passive(msgspec.Struct, frozen=True, gc=False):
    """What a shard keeps of an evicted account: enough to wake it and to answer for it."""

    next_rollover_ns: int
    failed: bool
    frozen: bool
    balance: int  # cents; an evicted account is flat, so its equity is balance + credit
    credit: int


class Money(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An account's balance and equity in cents, as the shard holds them now."""

    balance: int
    equity: int


class Applied(msgspec.Struct, kw_only=True):
    """What a batch produced: every effect, and what to journal, in causal order."""

    effects: list[Effect] = msgspec.field(default_factory=list)
    journal: list[AnyPlatformEvent | AnyDomainEvent] = msgspec.field(default_factory=list)


Send = Callable[[Sequence[AnyPlatformCommand]], None]
"""Where a shard's platform commands go as they appear."""


def _collect(effects: list[Effect], applied: Applied, send: Send | None) -> None:
    """Keep an event's effects in causal order; hand its platform commands to `send` now."""
    applied.effects.extend(effects)
    applied.journal.extend(e for e in effects if not isinstance(e, PlatformCommand))
    commands = [e for e in effects if isinstance(e, PlatformCommand)]
    if commands and send is not None:
        send(commands)


class ShardCore:
    """Hosts account entities; applies events in order and collects their effects."""

    def __init__(self, shard: int) -> None:
        self.accounts: dict[str, Account] = {}
        self.market = Market()
        self.next_boundary_ns = 0  # the earliest day boundary of any hosted account
        self.bands = BandIndex()  # symbol -> accounts a quote on it could change
        self.dirty: set[str] = set()  # accounts changed since the last `take_dirty`
        self.passive: dict[str, Passive] = {}  # evicted to their snapshot, woken when needed
        self.clock_ns = 0  # the time of the latest event applied
        self.stats = ShardStats(shard=shard)
        self.feed: RiskFeed | None = None  # the risk stream's changes, when a hub listens

    def register(
        self,
        accounts: Iterable[tuple[str, Plan]],
        *,
        phase: str | None = None,
        funded: bool = True,
    ) -> int:
        """Host new accounts in `phase` (default: the plan's first), `funded` with the plan's
        initial balance or waiting for their first deposit; an id already hosted is left as it
        is. Returns how many were new."""
        added = 0
        for account_id, plan in accounts:
            if account_id not in self.accounts and account_id not in self.passive:
                self.accounts[account_id] = Account.open(
                    account_id, plan, phase=phase, funded=funded
                )
                self.dirty.add(account_id)
                if self.feed is not None:
                    self.feed.touched.add(account_id)
                added += 1
        self._count_hosted()
        if added:
            self.next_boundary_ns = 0  # the next event starts the new accounts' clocks
        return added

    def restore(self, accounts: Iterable[Account], book: dict[str, Quote]) -> None:
        """Host accounts as a snapshot left them, at the book of the same checkpoint
        (recovery); they are not dirty."""
        self.market.book.update(book)
        for account in accounts:
            self.accounts[account.account_id] = account
            self.bands.update(account.account_id, account, self.market.book)
            if self.feed is not None:
                self.feed.touched.add(account.account_id)
        self._count_hosted()
        self.next_boundary_ns = 0

    def _count_hosted(self) -> None:
        self.stats.accounts = len(self.accounts) + len(self.passive)
        self.stats.passive = len(self.passive)

    # -- passivation ---------------------------------------------------------------------------

    def idle(self, after_ns: int, keep: set[str]) -> list[str]:
        """Accounts that may be evicted: flat (no tick can move them), saved as they stand (not
        dirty), not in `keep`, and with no event for `after_ns` of market time."""
        cutoff = self.clock_ns - after_ns
        return [
            a.account_id
            for a in self.accounts.values()
            if not a.positions
            and a.ts_ns <= cutoff
            and a.account_id not in self.dirty
            and a.account_id not in keep
        ]

    def evict(self, account_ids: Iterable[str]) -> int:
        """Drop accounts from memory; their snapshot is their state. Returns how many."""
        evicted = 0
        for account_id in account_ids:
            account = self.accounts.pop(account_id, None)
            if account is None:
                continue
            self.bands.remove(account_id)
            self.passive[account_id] = Passive(
                next_rollover_ns=account.next_rollover_ns,
                failed=account.status is AccountStatus.FAILED,
                frozen=account.frozen is not None,
                balance=account.balance,
                credit=account.credit,
            )
            evicted += 1
        self._count_hosted()
        return evicted

    def needed(self, events: Sequence[AnyPlatformEvent]) -> list[str]:
        """Evicted accounts a batch needs awake: those it has events for, and those whose day
        boundary it passes (the clock must run their rollover on time)."""
        if not self.passive or not events:
            return []
        passive = self.passive
        found = {
            account_id
            for event in events
            if (account_id := getattr(event, "account_id", None)) in passive
        }
        last = max(event.ts_ns for event in events)
        found.update(a for a, p in passive.items() if p.next_rollover_ns <= last)
        return sorted(found)

    def wake(self, accounts: Iterable[Account]) -> None:
        """Host evicted accounts again, as their snapshots left them."""
        for account in accounts:
            self.passive.pop(account.account_id, None)
            self.accounts[account.account_id] = account
            self.bands.update(account.account_id, account, self.market.book)
        self.next_boundary_ns = 0
        self._count_hosted()

    def take_dirty(self) -> list[Account]:
        """The accounts changed since the last call (to snapshot), and forget that they were."""
        dirty, self.dirty = self.dirty, set()
        return [self.accounts[a] for a in dirty if a in self.accounts]

    def apply(self, events: Sequence[AnyPlatformEvent], send: Send | None = None) -> Applied:
        """Apply events in order. The journal lists each account event followed by its effects.

        `send`, if given, gets the platform commands of each event the moment they appear, so a
        freeze does not wait for the rest of a long batch.
        """
        applied = Applied()
        for event in events:
            self.stats.events += 1
            if event.ts_ns > self.clock_ns:
                self.clock_ns = event.ts_ns
            if event.ts_ns >= self.next_boundary_ns:
                self._run_clock(event, applied, send)
            if isinstance(event, PriceTicked):
                effects = self._apply_tick(event)
            else:
                effects = self._apply_to_account(event)
                applied.journal.append(event)
            if effects:
                _collect(effects, applied, send)
        if self.feed is not None:
            self.feed.events.extend(e for e in applied.journal if is_stream_event(e))
        return applied

    def _run_clock(self, event: AnyPlatformEvent, applied: Applied, send: Send | None) -> None:
        """Before `event`, take every account whose trading day ended by its time, events or not.

        An account that gets no event (flat, or paused with its positions closed) still has
        its day roll: a pause ends, `inactivity` and `max_days` run, on time. The boundary runs
        at the first event at or after it, whatever batch that event came in, so the outcome
        (and every id derived from the causing event) does not depend on how events were batched.
        """
        earliest = NO_TRIGGER
        for account in self.accounts.values():
            if account.next_rollover_ns <= event.ts_ns:
                effects = account.advance(event.ts_ns, event.event_id, self.market.book)
                self.dirty.add(account.account_id)
                if self.feed is not None:
                    self.feed.touched.add(account.account_id)
                self.bands.update(account.account_id, account, self.market.book)
                self._count(effects)
                _collect(effects, applied, send)
            earliest = min(earliest, account.next_rollover_ns)
        for passive in self.passive.values():  # woken before a batch that passes it
            earliest = min(earliest, passive.next_rollover_ns)
        self.next_boundary_ns = earliest

    def _apply_tick(self, tick: PriceTicked) -> list[Effect]:
        """Update the book; evaluate only the accounts whose price band the quote leaves (the
        band is conservative: inside it no limit, warning, peak or target can be reached)."""
        book = self.market.book
        book[tick.symbol] = (tick.bid, tick.ask)
        if self.feed is not None:
            self.feed.ticked.add(tick.symbol)
        effects: list[Effect] = []
        leaving = self.bands.leaving(tick.symbol, tick.bid, tick.ask)
        accounts, dirty, bands = self.accounts, self.dirty, self.bands
        for account_id in leaving:
            account = accounts[account_id]
            version = account.version
            effects.extend(account.on_tick(tick, book))
            if account.version != version:  # evaluated: its peak, warnings or status may move
                dirty.add(account_id)
            bands.update(account_id, account, book)
        self.stats.evaluations += len(leaving)
        self._count(effects)
        return effects

    def _apply_to_account(self, event: AnyPlatformEvent) -> list[Effect]:
        account_id: str = getattr(event, "account_id", "")
        account = self.accounts.get(account_id)
        if account is None:
            if account_id in self.passive:  # the caller must `wake` what `needed` names first
                raise RuntimeError(f"event {event.event_id} for evicted account {account_id!r}")
            self.stats.unknown_account_events += 1
            return []
        try:
            effects = account.apply(event, self.market)
        except UnknownSymbol as exc:  # rejected alone: the rest of the batch still applies
            self.stats.rejected_events += 1
            self.stats.last_rejection = f"{event.event_id}: {exc}"
            return []
        self.bands.update(account_id, account, self.market.book)
        self.dirty.add(account_id)
        if self.feed is not None:
            self.feed.touched.add(account_id)
        self.stats.evaluations += 1
        self._count(effects)
        return effects

    def _count(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, RuleBreached):
                self.stats.breaches += 1
            elif isinstance(effect, AccountFrozen):
                self.stats.frozen += 1

    def money(self, account_ids: Iterable[str] | None = None) -> dict[str, Money]:
        """Hosted accounts' balance and equity in cents (all, or those of `account_ids` it
        hosts), marked at the shard's book; evicted ones from what eviction kept (flat)."""
        book = self.market.book
        wanted = self.accounts.keys() | self.passive.keys() if account_ids is None else account_ids
        found: dict[str, Money] = {}
        for account_id in wanted:
            if (a := self.accounts.get(account_id)) is not None:
                found[account_id] = Money(a.balance, a.balance + a.credit + floating_of(a, book))
            elif (p := self.passive.get(account_id)) is not None:
                found[account_id] = Money(p.balance, p.balance + p.credit)
        return found

    def breached(self) -> list[str]:
        """Accounts whose phase failed: each must end frozen on the platform."""
        found = [a.account_id for a in self.accounts.values() if a.status is AccountStatus.FAILED]
        return found + [a for a, p in self.passive.items() if p.failed]

    def frozen(self) -> list[str]:
        """Accounts whose freeze the platform has confirmed."""
        found = [a.account_id for a in self.accounts.values() if a.frozen is not None]
        return found + [a for a, p in self.passive.items() if p.frozen]


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    """What the API shows of one account (money in account currency units)."""

    account_id: str
    plan: str
    phase: str
    status: str
    frozen: bool
    balance: float
    equity: float
    floating: float
    day_start_balance: float
    daily_floor: float | None
    max_loss_floor: float | None
    trading_days: int
    open_positions: int
    breach: RuleBreached | None
    breaches: list[RuleBreached]
    version: int
    last_event_ns: int

    @classmethod
    def of(cls, account: Account, book: dict[str, Quote]) -> AccountView:
        """The account marked at `book` (a shard skips ticks that cannot change an outcome,
        so the marks it holds may be older than the book)."""
        floating = floating_of(account, book)
        return cls(
            account_id=account.account_id,
            plan=account.plan.id,
            phase=account.phase.name,
            status=account.status.value,
            frozen=account.frozen is not None,
            balance=account.balance / 100,
            equity=(account.balance + account.credit + floating) / 100,
            floating=floating / 100,
            day_start_balance=account.day_start_balance / 100,
            daily_floor=_units(account.daily_floor),
            max_loss_floor=_units(account.max_floor),
            trading_days=account.trading_days(),
            open_positions=len(account.positions),
            breach=account.breach,
            breaches=list(account.breaches),
            version=account.version,
            last_event_ns=account.ts_ns,
        )


def floating_of(account: Account, book: dict[str, Quote]) -> int:
    """The account's open positions' P&L in cents, marked at `book`."""
    return sum(p.value(book) for p in account.positions.values())


def _units(cents: int) -> float | None:
    return None if cents == NO_LIMIT else cents / 100
