"""End-of-day check: replay every account's deals and balance operations as the platform
recorded them, and confirm each verdict.

Deals and balance operations alone fix an account's balance at every instant, and at every
instant the account holds no position they fix its equity too (balance + credit). So with no
price history the replay proves every loss-limit crossing at a flat moment (after a closing
deal, a withdrawal, a correction), and finds every deal or balance operation the platform
recorded that we never applied. A crossing that happened only while positions were open needs
the prices of that moment; the live path, which saw every tick, judged it, and the replay says
so (`unproven`) rather than confirming it.

Verdicts, per account, over everything the platform recorded before `until_ns`:

- `confirmed`: the replay proves a crossing, and we failed the account at or before it;
- `late`: the replay proves a crossing earlier than the breach we recorded;
- `missed`: the replay proves a crossing, and we never failed the account;
- `unproven`: we failed the account, and no flat moment proves it (the loss was floating);
- `clean`: neither.

Plans the replay can check: loss limits as a share of the initial balance, the daily one
below the day-start balance, the max one static (the shapes `limits_of` accepts). For any
other plan it reports only events we never applied.
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
    verdict: str  # confirmed, late, missed, unproven, clean (see the module docstring)
    proof: Proof | None = None
    ours: RuleBreached | None = None  # the breach that failed the account here
    missing: list[str] = []  # platform event ids we never applied
    checked: bool = True  # False: the plan's limits are not checkable from deals alone


class DayReport(msgspec.Struct, kw_only=True):
    until_ns: int
    accounts: int
    verdicts: dict[str, int]  # verdict -> how many accounts
    findings: list[DayVerdict]  # late, missed, or with missing events
    unchecked: int  # accounts on a plan the replay cannot check (their events still are)
    errors: int  # accounts the platform could not be asked about


class _Books:
    """An account's money as its deals and balance operations fix it (cents), from its opening
    balance and credit (an account opened funded has no deposit in its history)."""

    def __init__(self, opening: int = 0, opening_credit: int = 0) -> None:
        self.initial = self.balance = self.day_start = max(opening, 0)
        self.credit = opening_credit
        self.held: dict[int, float] = {}  # position -> open volume

    def apply(self, event: AnyPlatformEvent) -> None:
        if isinstance(event, BalanceOperated):
            amount = to_cents(event.amount)
            if not self.initial and event.kind is BalanceKind.DEPOSIT and amount > 0:
                self.initial = self.balance = self.day_start = amount
            elif event.kind is BalanceKind.CREDIT:
                self.credit += amount
            else:
                self.balance += amount
                self.day_start += amount  # money moved in or out is not the day's trading
        elif isinstance(event, DealExecuted):
            self.balance += (
                to_cents(event.profit) + to_cents(event.commission) + to_cents(event.swap)
            )
            signed = event.volume if event.entry is DealEntry.IN else -event.volume
            volume = self.held.get(event.position_id, 0.0) + signed
            if volume > _FLAT:
                self.held[event.position_id] = volume
            else:
                self.held.pop(event.position_id, None)

    def crossing(self, limits: Limits) -> tuple[str, int, int] | None:
        """(rule, equity, floor) if the account is funded, flat, and at or below the binding
        floor (the higher one; the max loss on a tie, as the rules decide it)."""
        if not self.initial or self.held:
            return None
        equity = self.balance + self.credit
        daily = self.day_start - round(self.initial * limits.daily_loss_pct / 100)
        static = self.initial - round(self.initial * limits.max_loss_pct / 100)
        rule, floor = ("max_loss", static) if static >= daily else ("daily_loss", daily)
        return (rule, equity, floor) if equity <= floor else None


def opening(
    balance_cents: int, credit_cents: int, events: Sequence[AnyPlatformEvent]
) -> tuple[int, int]:
    """The account's (balance, credit) before its first recorded event: its balance and credit
    now, less every change its whole history records."""
    books = _Books()
    for event in events:
        books.apply(event)
    return balance_cents - books.balance, credit_cents - books.credit


def replay(
    plan: Plan,
    limits: Limits,
    events: Sequence[AnyPlatformEvent],
    until_ns: int,
    opened: tuple[int, int] = (0, 0),
) -> Proof | None:
    """The first flat moment before `until_ns` at which the account's equity was at or below a
    loss floor, from its opening (balance, credit) and its deals and balance operations alone
    (oldest first)."""
    books = _Books(*opened)
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
    if proof is None:
        verdict = "unproven" if ours is not None else "clean"
    elif ours is None:
        verdict = "missed"
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
