"""End-of-day check: replay every account's deals and balance operations as the platform
recorded them, and confirm each verdict.

Deals and balance operations alone fix an account's balance at every instant, and at every
instant the account holds no position they fix its equity too (balance + credit). So with no
price history the replay proves every loss-limit crossing at a flat moment (after a closing
deal, a withdrawal, a correction), and finds every deal or balance operation the platform
recorded that is not in our journal (never received: the shard journals every event it is
given, applied or not). A crossing that happened only while positions were open needs
the prices of that moment; the live path, which saw every tick, judged it, and the replay says
so (`unproven`) rather than confirming it.

Verdicts, per account, over what the platform recorded in a window that ends at `until_ns`
and starts at a day boundary some days before (the reconciler's `end_of_day_lookback_days`):

- `confirmed`: the replay proves a crossing, and we failed the account at or before it;
- `late`: the replay proves a crossing earlier than the breach we recorded;
- `missed`: the replay proves a crossing, and we never failed the account;
- `unproven`: we failed the account for a loss limit, and no flat moment proves it (the loss
  was floating);
- `other`: we failed the account for another rule (news, lots, days...), which needs no proof
  here;
- `clean`: neither.

Accounts the replay can check: in the plan's first phase, not passed, on a plan whose loss
limits are a share of the initial balance, the daily one below the day-start balance, the max
one static (the shapes `limits_of` accepts). For any other it reports only events we never
received.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from actors.events import RuleBreached
from actors.market import to_cents
from actors.plans import Plan
from bridge.events import (
    AnyPlatformEvent,
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
)
from bridge.simulator import Limits

_FLAT = 1e-9
LOSS_RULES = frozenset({"daily_loss", "max_loss"})


def limits_of(plan: Plan) -> Limits:
    """The plan's loss limits, if they have the shape a deals-only replay (and the simulator's
    oracle) can check: a static max loss and a daily loss below the day-start balance, both a
    share of the initial balance and failing the account; `ValueError` otherwise."""
    phase = plan.phases[0]
    daily, max_loss = phase.daily_loss, phase.max_loss
    if (
        plan.initial_balance is None
        or daily is None
        or max_loss is None
        or (daily.amount_base, daily.reference, daily.action)
        != ("initial", "day_start_balance", "fail")
        or max_loss.mode != "static"
    ):
        raise ValueError(f"plan {plan.id!r} has loss limits a deals-only replay cannot check")
    return Limits(
        initial_balance=plan.initial_balance,
        daily_loss_pct=daily.pct,
        max_loss_pct=max_loss.pct,
        day_timezone=plan.day_rollover.timezone,
    )


class Proof(msgspec.Struct, frozen=True, kw_only=True):
    """A flat moment at which equity was at or below a loss floor (money in account units)."""

    rule: str  # daily_loss or max_loss
    event_id: str  # the platform event after which the account stood there
    ts_ns: int
    equity: float
    floor: float


class DayVerdict(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    verdict: str  # confirmed, late, missed, unproven, other, clean (see the module docstring)
    proof: Proof | None = None
    ours: RuleBreached | None = None  # the breach that failed the account here
    missing: list[str] = []  # platform event ids we never applied
    checked: bool = True  # False: the plan's limits are not checkable from deals alone


class DayReport(msgspec.Struct, kw_only=True):
    until_ns: int
    accounts: int
    verdicts: dict[str, int]  # verdict -> how many accounts
    findings: list[DayVerdict]  # late, missed, or with missing events
    new_findings: int  # findings not journaled by an earlier check
    unchecked: int  # accounts the replay cannot check (their events still are)
    moving: int  # accounts whose money moved during every read: checked the next day
    errors: int  # accounts the platform or their shard could not be asked about


class _Books:
    """An account's money as its deals and balance operations fix it (cents), from where a
    window starts: its balance and credit then. Its loss limits are shares of the plan's
    initial balance, as the entity's are; not funded by then (no positive balance), it has none
    until its first deposit, as the entity starts at its first deposit."""

    def __init__(self, initial: int, balance: int = 0, credit: int = 0) -> None:
        self.initial = initial
        self.started = balance > 0
        self.balance = self.day_start = balance
        self.credit = credit
        self.held: dict[int, float] = {}  # position -> open volume, signed (a reversal stays)

    def apply(self, event: AnyPlatformEvent) -> None:
        if isinstance(event, BalanceOperated):
            amount = to_cents(event.amount)
            if event.kind is BalanceKind.CREDIT:
                self.credit += amount
                return
            if not self.started and event.kind is BalanceKind.DEPOSIT and amount > 0:
                self.started = True
            self.balance += amount
            self.day_start += amount  # money moved in or out is not the day's trading
        elif isinstance(event, DealExecuted):
            self.balance += _deal_cents(event)
            # A close larger than what is held (a netting reversal), or of a position this
            # window never saw open, leaves volume open: never taken for flat.
            signed = event.volume if event.entry is DealEntry.IN else -event.volume
            volume = self.held.get(event.position_id, 0.0) + signed
            if abs(volume) > _FLAT:
                self.held[event.position_id] = volume
            else:
                self.held.pop(event.position_id, None)

    def crossing(self, limits: Limits) -> tuple[str, int, int] | None:
        """(rule, equity, floor) if the account is funded, flat, and at or below the binding
        floor (the higher one; the max loss on a tie, as the rules decide it)."""
        if not self.started or self.held:
            return None
        equity = self.balance + self.credit
        daily = self.day_start - round(self.initial * limits.daily_loss_pct / 100)
        static = self.initial - round(self.initial * limits.max_loss_pct / 100)
        rule, floor = ("max_loss", static) if static >= daily else ("daily_loss", daily)
        return (rule, equity, floor) if equity <= floor else None


def _deal_cents(deal: DealExecuted) -> int:
    return to_cents(deal.profit) + to_cents(deal.commission) + to_cents(deal.swap)


def opening(
    balance_cents: int, credit_cents: int, events: Sequence[AnyPlatformEvent]
) -> tuple[int, int]:
    """The account's (balance, credit) before the first of `events`: its balance and credit now
    less every change they record."""
    balance, credit = balance_cents, credit_cents
    for event in events:
        if isinstance(event, BalanceOperated):
            if event.kind is BalanceKind.CREDIT:
                credit -= to_cents(event.amount)
            else:
                balance -= to_cents(event.amount)
        elif isinstance(event, DealExecuted):
            balance -= _deal_cents(event)
    return balance, credit


def replay(
    plan: Plan,
    limits: Limits,
    events: Sequence[AnyPlatformEvent],
    until_ns: int,
    opened: tuple[int, int] = (0, 0),
) -> Proof | None:
    """The first flat moment before `until_ns` at which the account's equity was at or below a
    loss floor, from its (balance, credit) when `events` start (at a day boundary, or when it
    opened) and its deals and balance operations from there (oldest first)."""
    books = _Books(round(limits.initial_balance * 100), *opened)
    rollover = 0
    for event in events:
        if event.ts_ns >= until_ns:
            break
        if rollover == 0:
            rollover = plan.day_rollover.boundary_after(event.ts_ns)
        while event.ts_ns >= rollover:  # the day's reference: the balance at the boundary
            books.day_start = books.balance
            rollover = plan.day_rollover.boundary_after(rollover)
        books.apply(event)
        crossed = books.crossing(limits)
        if crossed is not None:
            rule, equity, floor = crossed
            return Proof(
                rule=rule,
                event_id=event.event_id,
                ts_ns=event.ts_ns,
                equity=equity / 100,
                floor=floor / 100,
            )
    return None


def judge(
    account_id: str,
    proof: Proof | None,
    breaches: Sequence[RuleBreached],
    missing: list[str],
    checked: bool = True,
) -> DayVerdict:
    """The verdict for one account: the replay's proof against the breach that failed it."""
    ours = next((b for b in breaches if b.action == "fail"), None)
    if ours is None:
        verdict = "clean" if proof is None else "missed"
    elif proof is None:  # a loss the replay could not see (floating), or a rule it does not judge
        verdict = "unproven" if ours.rule in LOSS_RULES else "other"
    else:
        verdict = "confirmed" if ours.ts_ns <= proof.ts_ns else "late"
    return DayVerdict(
        account_id=account_id,
        verdict=verdict,
        proof=proof,
        ours=ours,
        missing=missing,
        checked=checked,
    )
