"""Affiliate commissions, pure: plans, attribution, accrual and clawback. No I/O, no clock.

Amounts are integer minor units of the sale's currency, which must be the plan's (its tier
thresholds and CPA are in it). Rates are basis points (1,000 bp = 10%).

- **Attribution** (`attribute`): among a trader's touches (a referral code used at signup or a
  link followed) within `window` before the first purchase, the first or the last one
  (`model`). It is decided once, at the first purchase, and holds for the trader's later
  purchases. A referral of oneself (`self_referral`: the same email, the affiliate's own trader
  record, or a payout destination both use) is flagged and excluded: no commission.
- **Commission** (`accrue`): the direct affiliate's plan in force at the purchase decides. A
  percentage of the first purchase only or of every purchase, at the rate of the tier the
  affiliate's referred volume of the calendar month (UTC) reaches with this purchase: a tier
  crossed mid-month applies from the purchase that crosses it on, and earlier purchases keep
  their rate. A flat CPA on the first purchase. Parents up the chain earn an override (their own
  plan's `overrides_bp`, by depth) on the purchase.
- **Clawback** (`claw_back`): a refund takes back each line of the purchase in proportion to the
  share refunded so far (rounded so that the lines taken back never exceed what was paid, and a
  full refund takes back all of it); a chargeback takes back everything left, the CPA included.
  Clawbacks after a payout make the affiliate's balance negative; the next commissions pay it
  back before anything is paid out again.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Literal

import msgspec

Bp = Annotated[int, msgspec.Meta(ge=0, le=10_000)]
Minor = Annotated[int, msgspec.Meta(ge=0, le=10**15)]
BP = 10_000

SaleKind = Literal["purchase", "refund", "chargeback"]
LineKind = Literal["commission", "cpa", "override", "clawback"]


class PlanError(ValueError):
    """A commission plan that cannot be used, naming what is wrong."""


class Tier(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """From a monthly referred volume of `from_volume` (minor units) on, `rate_bp`."""

    from_volume: Minor
    rate_bp: Bp


class CommissionPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How an affiliate is paid. Versioned by the store: a purchase is commissioned under the
    version in force when it was made."""

    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
    basis: Literal["first_purchase", "every_purchase"] = "every_purchase"
    tiers: Annotated[tuple[Tier, ...], msgspec.Meta(min_length=1)] = (
        Tier(from_volume=0, rate_bp=1_000),
    )
    cpa: Minor = 0  # flat, on the trader's first purchase
    overrides_bp: Annotated[tuple[Bp, ...], msgspec.Meta(max_length=5)] = ()  # by depth, 1 up

    def __post_init__(self) -> None:
        starts = [tier.from_volume for tier in self.tiers]
        if starts[0] != 0:
            raise PlanError("`tiers`: the first tier must start at a volume of 0")
        if starts != sorted(set(starts)):
            raise PlanError("`tiers`: volumes must rise, without repeats")

    def rate_bp(self, month_volume: int) -> int:
        """The rate of the highest tier `month_volume` reaches."""
        rate = self.tiers[0].rate_bp
        for tier in self.tiers:
            if month_volume >= tier.from_volume:
                rate = tier.rate_bp
        return rate


class PlanInForce(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: int
    plan: CommissionPlan


class Sale(msgspec.Struct, frozen=True, kw_only=True):
    """A purchase, refund or chargeback of a challenge, as recorded (`sale_events`)."""

    seq: int
    event_id: str
    kind: SaleKind
    purchase_id: str
    trader_id: str
    amount: int
    currency: str
    ts_ns: int


class Line(msgspec.Struct, frozen=True, kw_only=True):
    """One commission line: positive for what is earned, negative for what is taken back."""

    id: str
    affiliate_id: str
    trader_id: str
    purchase_id: str
    event_id: str
    kind: LineKind
    level: int  # 0: the referring affiliate; n: its parent n levels up
    basis: int  # the sale amount the line is computed on
    rate_bp: int  # 0 for a CPA or a clawback
    amount: int
    currency: str
    plan_id: str
    plan_version: int
    ts_ns: int
    reverses: str | None = None  # the line a clawback takes back


class Touch(msgspec.Struct, frozen=True, kw_only=True):
    affiliate_id: str
    code: str
    ts_ns: int


def month_of(ts_ns: int) -> str:
    """The calendar month (UTC) of a time: `2026-11`."""
    return datetime.datetime.fromtimestamp(ts_ns // 10**9, datetime.UTC).strftime("%Y-%m")


def day_of(ts_ns: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(ts_ns // 10**9, datetime.UTC).date()


def attribute(
    touches: Iterable[Touch],
    purchase_ns: int,
    window_ns: int,
    model: Literal["first_touch", "last_touch"],
) -> Touch | None:
    """The touch credited with a first purchase made at `purchase_ns`; None if no touch falls
    within the window before it."""
    eligible = sorted(
        (t for t in touches if purchase_ns - window_ns <= t.ts_ns <= purchase_ns),
        key=lambda t: (t.ts_ns, t.code),
    )
    if not eligible:
        return None
    return eligible[0] if model == "first_touch" else eligible[-1]


def self_referral(
    trader_email: str,
    trader_id: str,
    trader_destinations: Iterable[str],
    affiliate_email: str,
    affiliate_trader_id: str | None,
    affiliate_destination: str | None,
) -> str | None:
    """Why a referral is the affiliate's own (None: it is not)."""
    if trader_email.strip().casefold() == affiliate_email.strip().casefold():
        return "same_email"
    if affiliate_trader_id is not None and affiliate_trader_id == trader_id:
        return "own_trader_account"
    if affiliate_destination and affiliate_destination in set(trader_destinations):
        return "same_payout_destination"
    return None


def accrue(
    sale: Sale,
    chain: Sequence[tuple[str, PlanInForce]],
    first: bool,
    volume_before: int,
) -> list[Line]:
    """The lines a purchase earns. `chain`: the referring affiliate and its parents, each with
    its plan in force at the sale; `first`: the trader's first purchase; `volume_before`: the
    referring affiliate's referred volume this month before this sale."""
    if not chain:
        return []
    affiliate_id, direct = chain[0]
    plan = direct.plan
    if plan.currency != sale.currency:
        raise PlanError(
            f"plan {direct.id} v{direct.version} pays in {plan.currency}; "
            f"the sale {sale.event_id} is in {sale.currency}"
        )
    lines: list[Line] = []

    def line(kind: LineKind, level: int, who: str, on: PlanInForce, rate: int, amount: int) -> None:
        if amount > 0:
            lines.append(
                Line(
                    id=f"{sale.event_id}:{kind}:{level}",
                    affiliate_id=who,
                    trader_id=sale.trader_id,
                    purchase_id=sale.purchase_id,
                    event_id=sale.event_id,
                    kind=kind,
                    level=level,
                    basis=sale.amount,
                    rate_bp=rate,
                    amount=amount,
                    currency=sale.currency,
                    plan_id=on.id,
                    plan_version=on.version,
                    ts_ns=sale.ts_ns,
                )
            )

    if first or plan.basis == "every_purchase":
        rate = plan.rate_bp(volume_before + sale.amount)
        line("commission", 0, affiliate_id, direct, rate, sale.amount * rate // BP)
    if first:
        line("cpa", 0, affiliate_id, direct, 0, plan.cpa)
    for level, (parent_id, parents) in enumerate(chain[1:], start=1):
        overrides = parents.plan.overrides_bp
        if level <= len(overrides) and parents.plan.currency == sale.currency:
            rate = overrides[level - 1]
            line("override", level, parent_id, parents, rate, sale.amount * rate // BP)
    return lines


def claw_back(
    sale: Sale,
    earned: Sequence[Line],
    clawed: Mapping[str, int],
    purchase_amount: int,
    refunded_before: int,
) -> list[Line]:
    """The lines a refund or chargeback takes back. `earned`: the purchase's positive lines;
    `clawed`: what was taken back of each already (by line id, positive); `refunded_before`:
    the purchase's amount refunded before this sale."""
    refunded = min(purchase_amount, refunded_before + sale.amount)
    everything = sale.kind == "chargeback" or refunded >= purchase_amount
    out: list[Line] = []
    for line in earned:
        if everything:
            due = line.amount
        elif line.kind == "cpa":
            due = 0  # a CPA goes back only with the whole purchase
        else:
            due = line.amount * refunded // purchase_amount
        take = due - clawed.get(line.id, 0)
        if take > 0:
            out.append(
                msgspec.structs.replace(
                    line,
                    id=f"{sale.event_id}:clawback:{line.id}",
                    event_id=sale.event_id,
                    kind="clawback",
                    basis=sale.amount,
                    rate_bp=0,
                    amount=-take,
                    ts_ns=sale.ts_ns,
                    reverses=line.id,
                )
            )
    return out
