"""The payout checklist: a pure function from what is known about a request to its decision.

No I/O and no clock: the supervisor gathers the facts (the account's state from its shard, its
registry row, its earlier payouts, the trader's KYC tier, who else used the same destination,
device or IP) and passes the time. `docs/payouts.md` states each check; every one is recorded
with its result, passed or not.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

import msgspec

from actors.events import BreachAction, RuleBreached
from actors.payments import PayoutPolicy, RailRule
from actors.plans import PayoutTerms, Plan
from ledger.kyc import Tier
from ledger.money import amount_text, exponent
from ledger.payouts import Check, Status

DAY_NS = 86_400 * 10**9


class CheckName(StrEnum):
    FUNDED = "funded"
    WINDOW = "window"
    MIN_PROFIT = "min_profit"
    CONSISTENCY = "consistency"
    NO_BREACH = "no_breach"
    KYC = "kyc"
    DUPLICATES = "duplicates"
    AMOUNT = "amount"
    RAIL = "rail"


_C = CheckName
REJECTING = frozenset({_C.FUNDED, _C.WINDOW, _C.MIN_PROFIT, _C.NO_BREACH, _C.AMOUNT})
"""A failed check here rejects the request: no reviewer may pay it."""


class AccountFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the account's shard knows (money in cents of the account currency)."""

    account_id: str
    plan: Plan
    phase: str
    status: str
    frozen: bool
    initial: int
    balance: int
    equity: int
    day_pnl: dict[int, int]
    breaches: list[RuleBreached]


class Registered(msgspec.Struct, frozen=True, kw_only=True):
    """The account's registry row and its trader's country."""

    account_id: str
    trader_id: str
    status: str
    connection: str
    created_ns: int
    country: str


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """A payout request as the API accepted it (amount in minor units of `currency`)."""

    key: str
    account_id: str
    amount: int
    currency: str
    destination: str
    device: str
    ip: str
    request_id: str = ""


class Earlier(msgspec.Struct, frozen=True, kw_only=True):
    """The account's earlier payouts that were not rejected."""

    id: str
    period: int
    status: Status
    amount: int
    created_ns: int
    gross: int = 0  # what it draws from the platform account
    reset: bool = False  # drawn already (the platform balance no longer holds it)

    @property
    def draws(self) -> int:
        """What it will still take off the platform balance."""
        return 0 if self.reset else self.gross


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    outcome: Status  # approved, review, held or rejected
    checks: list[Check]
    period: int
    split_pct: float
    gross: int  # minor units the payout draws from the platform account
    rail: RailRule | None
    tier: Tier  # the trader's, when decided
    tier_needed: Tier
    screening_hit: bool = False  # held (also) because a screening hit stood

    @property
    def reasons(self) -> list[str]:
        return [check.name for check in self.checks if not check.ok]


def cents_to_minor(cents: int, currency: str) -> int:
    """Account cents as minor units of `currency`, rounded down (never pays a fraction)."""
    minor: int = cents * 10 ** exponent(currency) // 100
    return minor


def decide(
    request: Request,
    account: AccountFacts | None,
    registered: Registered | None,
    earlier: list[Earlier],
    tier: Tier,
    shared_with: dict[str, list[str]],
    policy: PayoutPolicy,
    now_ns: int,
    *,
    trader_paid: int | None = None,
    screening_hit: bool = False,
) -> Decision:
    """Run every check of the checklist and decide: rejected if any rejecting check failed,
    else held while KYC is short, else review if any other check failed, else approved.

    `trader_paid`: what the trader's earlier payouts (all accounts, this currency, not
    rejected) add up to, for the policy's cumulative threshold; the account's own if None.
    `screening_hit`: the trader has a screening hit open or confirmed, which holds the payout
    whatever tier the jurisdiction asks for."""
    terms = account.plan.payout if account is not None else None
    if account is None or registered is None or terms is None:
        return _not_payable(request, account, registered, tier, policy)
    checks = _Checks(request, account, registered, earlier, terms, now_ns)
    country = registered.country
    paid_before = (
        sum(e.amount for e in earlier if e.status is not Status.REJECTED)
        if trader_paid is None
        else trader_paid
    )
    cleared = policy.kyc.clearance(country, tier, request.amount, paid_before, screening_hit)
    rail = policy.rail_for(country, request.amount)
    found = [
        checks.funded(),
        checks.window(),
        checks.min_profit(),
        checks.consistency(),
        checks.no_breach(),
        Check(name=CheckName.KYC, ok=cleared.cleared, detail=cleared.detail),
        _duplicates(shared_with),
        checks.amount(),
        Check(
            name=CheckName.RAIL,
            ok=rail is not None,
            detail=(
                f"{rail.rail}, fee {amount_text(rail.fee(request.amount), request.currency)}"
                if rail is not None
                else f"no rail pays {_money(request.amount, request.currency)} to {country}"
            ),
        ),
    ]
    return Decision(
        outcome=_outcome(found),
        checks=found,
        period=max(checks.period, 0),
        split_pct=checks.split_pct,
        gross=checks.gross(),
        rail=rail,
        tier=tier,
        tier_needed=cleared.needed,
        screening_hit=screening_hit,
    )


def _outcome(checks: list[Check]) -> Status:
    failed = {check.name for check in checks if not check.ok}
    if failed & REJECTING:
        return Status.REJECTED
    if CheckName.KYC in failed:
        return Status.HELD
    return Status.REVIEW if failed else Status.APPROVED


def _not_payable(
    request: Request,
    account: AccountFacts | None,
    registered: Registered | None,
    tier: Tier,
    policy: PayoutPolicy,
) -> Decision:
    if registered is None:
        detail = f"no account {request.account_id!r} in the registry"
    elif account is None:
        detail = "the account is not hosted by any shard"
    else:
        detail = f"plan {account.plan.id!r} pays no payouts (it has no [payout] table)"
    return Decision(
        outcome=Status.REJECTED,
        checks=[Check(name=CheckName.FUNDED, ok=False, detail=detail)],
        period=0,
        split_pct=0.0,
        gross=0,
        rail=None,
        tier=tier,
        tier_needed=policy.kyc.default.payout,
    )


def _duplicates(shared_with: dict[str, list[str]]) -> Check:
    if not shared_with:
        return Check(
            name=CheckName.DUPLICATES,
            ok=True,
            detail="destination, device and IP used by no other trader",
        )
    detail = "; ".join(
        f"{kind} also used by {', '.join(traders)}" for kind, traders in sorted(shared_with.items())
    )
    return Check(name=CheckName.DUPLICATES, ok=False, detail=detail)


def _money(minor: int, currency: str) -> str:
    return f"{amount_text(minor, currency)} {currency}"


def _when(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


class _Checks:
    """The checks that read the account and its earlier payouts."""

    def __init__(
        self,
        request: Request,
        account: AccountFacts,
        registered: Registered,
        earlier: list[Earlier],
        terms: PayoutTerms,
        now_ns: int,
    ) -> None:
        self.request = request
        self.account = account
        self.registered = registered
        self.earlier = earlier
        self.terms = terms
        self.now_ns = now_ns
        self.opens_ns = registered.created_ns + terms.first_after_days * DAY_NS
        cadence_ns = terms.cadence_days * DAY_NS
        self.period = (now_ns - self.opens_ns) // cadence_ns if now_ns >= self.opens_ns else -1
        # "In the period": since the last payout that was not rejected, else since funding.
        self.since_ns = max([registered.created_ns, *(e.created_ns for e in earlier)])
        settled = sum(1 for e in earlier if e.status is Status.SETTLED)
        self.split_pct = terms.split_after(settled)
        currency = request.currency
        profit_cents = max(0, min(account.balance, account.equity) - account.initial)
        # Profit an earlier payout (held, in review, in flight, or paid but not yet taken off
        # the platform) already draws on is not withdrawable again.
        drawn = sum(e.draws for e in earlier)
        self.withdrawable = max(0, cents_to_minor(profit_cents, currency) - drawn)
        self.share = self.withdrawable * _bp(self.split_pct) // 10_000

    def funded(self) -> Check:
        account, registered = self.account, self.registered
        index = account.plan.phase_index(account.phase)
        problems = []
        if account.plan.phases[index].profit_target is not None:
            problems.append(f"phase {account.phase!r} is an evaluation phase, not funded")
        if registered.status != "active":
            problems.append(f"registry status is {registered.status!r}")
        if account.status != "active":
            problems.append(f"the account is {account.status}")
        if account.frozen:
            problems.append("trading is frozen")
        if self.request.currency != account.plan.currency:
            problems.append(f"the account is paid in {account.plan.currency}")
        ok = not problems
        return Check(
            name=CheckName.FUNDED,
            ok=ok,
            detail="funded, active, not frozen" if ok else "; ".join(problems),
        )

    def window(self) -> Check:
        if self.period < 0:
            detail = f"the first payout opens {_when(self.opens_ns)}"
            return Check(name=CheckName.WINDOW, ok=False, detail=detail)
        for e in self.earlier:
            if e.period == self.period:
                detail = f"payout {e.id} already covers period {self.period}"
                return Check(name=CheckName.WINDOW, ok=False, detail=detail)
        return Check(name=CheckName.WINDOW, ok=True, detail=f"period {self.period} is open")

    def min_profit(self) -> Check:
        currency = self.request.currency
        minimum = cents_to_minor(round(self.terms.min_amount * 100), currency)
        ok = self.withdrawable > 0 and self.request.amount >= minimum
        detail = (
            f"withdrawable profit {_money(self.withdrawable, currency)}, "
            f"the plan's minimum payout {_money(minimum, currency)}"
        )
        return Check(name=CheckName.MIN_PROFIT, ok=ok, detail=detail)

    def consistency(self) -> Check:
        limit = self.terms.max_best_day_pct
        if limit is None:
            return Check(name=CheckName.CONSISTENCY, ok=True, detail="the plan sets no limit")
        clock = self.account.plan.day_rollover
        first_day = clock.label(clock.boundary_at_or_before(self.since_ns))
        days = {d: pnl for d, pnl in self.account.day_pnl.items() if d >= first_day}
        total = sum(days.values())
        if total <= 0:
            return Check(
                name=CheckName.CONSISTENCY, ok=False, detail="no closed profit in the period"
            )
        best = max(days.values())
        pct = best * 100 / total
        ok = best * 100 <= limit * total
        detail = f"best day {pct:.1f}% of the period's profit (at most {limit:g}%)"
        return Check(name=CheckName.CONSISTENCY, ok=ok, detail=detail)

    def no_breach(self) -> Check:
        found = [
            b
            for b in self.account.breaches
            if b.ts_ns >= self.since_ns and b.action is not BreachAction.CLOSE_POSITIONS
        ]
        if not found:
            return Check(name=CheckName.NO_BREACH, ok=True, detail="no breach in the period")
        detail = "; ".join(f"{b.rule.value} ({b.action.value}) {_when(b.ts_ns)}" for b in found)
        return Check(name=CheckName.NO_BREACH, ok=False, detail=detail)

    def amount(self) -> Check:
        currency = self.request.currency
        ok = self.request.amount <= self.share
        detail = (
            f"asked {_money(self.request.amount, currency)}; at most "
            f"{_money(self.share, currency)} ({self.split_pct:g}% of "
            f"{_money(self.withdrawable, currency)})"
        )
        return Check(name=CheckName.AMOUNT, ok=ok, detail=detail)

    def gross(self) -> int:
        """What the payout draws from the platform account: the trader's amount and the firm's
        share of the same profit (rounded up, never more than the withdrawable profit)."""
        bp = _bp(self.split_pct)
        return min(self.withdrawable, -(-self.request.amount * 10_000 // bp))


def _bp(pct: float) -> int:
    return round(pct * 100)
