"""Commission rules without a database: tier rates, the first purchase, overrides by depth,
clawbacks in proportion with exact rounding, attribution by window and model, self-referral,
and plans refused with what is wrong."""

from __future__ import annotations

import msgspec
import pytest

from actors.commissions import (
    CommissionPlan,
    PlanError,
    PlanInForce,
    Sale,
    Tier,
    Touch,
    accrue,
    attribute,
    claw_back,
    month_of,
    self_referral,
)

DAY = 86_400 * 10**9
TIERED = CommissionPlan(
    currency="USD",
    tiers=(Tier(from_volume=0, rate_bp=800), Tier(from_volume=1_000_00, rate_bp=1_000)),
    cpa=30_00,
    overrides_bp=(500, 100),
)


def sale(amount: int = 500_00, kind: str = "purchase", event: str = "e1") -> Sale:
    return Sale(
        seq=1,
        event_id=event,
        kind=kind,
        purchase_id="p1",
        trader_id="t1",  # type: ignore[arg-type]
        amount=amount,
        currency="USD",
        ts_ns=1_793_491_200 * 10**9,
    )


def chain(*plans: CommissionPlan) -> list[tuple[str, PlanInForce]]:
    return [(f"a{i}", PlanInForce(id=f"plan{i}", version=1, plan=p)) for i, p in enumerate(plans)]


def test_the_rate_is_the_tier_the_month_reaches_with_this_purchase() -> None:
    assert TIERED.rate_bp(0) == TIERED.rate_bp(999_99) == 800
    assert TIERED.rate_bp(1_000_00) == 1_000
    first = accrue(sale(), chain(TIERED), first=True, volume_before=0)
    assert [(x.kind, x.rate_bp, x.amount) for x in first] == [
        ("commission", 800, 40_00),
        ("cpa", 0, 30_00),
    ]
    crossing = accrue(sale(), chain(TIERED), first=False, volume_before=600_00)
    assert [(x.kind, x.rate_bp, x.amount) for x in crossing] == [("commission", 1_000, 50_00)]


def test_a_first_purchase_plan_pays_nothing_on_later_purchases() -> None:
    once = msgspec.structs.replace(TIERED, basis="first_purchase")
    assert accrue(sale(), chain(once), first=False, volume_before=0) == []
    assert len(accrue(sale(), chain(once), first=True, volume_before=0)) == 2


def test_parents_earn_their_own_plans_override_for_their_depth() -> None:
    child = CommissionPlan(currency="USD")
    parent = CommissionPlan(currency="USD", overrides_bp=(500,))
    grand = CommissionPlan(currency="USD", overrides_bp=(300, 200))
    made = accrue(sale(1_000_00), chain(child, parent, grand), first=False, volume_before=0)
    assert [(x.affiliate_id, x.kind, x.level, x.amount) for x in made] == [
        ("a0", "commission", 0, 100_00),
        ("a1", "override", 1, 50_00),
        ("a2", "override", 2, 20_00),
    ]
    shallow = accrue(sale(1_000_00), chain(child, child), first=False, volume_before=0)
    assert len(shallow) == 1  # a parent whose plan has no override earns none


def test_partial_refunds_take_back_in_proportion_and_a_chargeback_everything_left() -> None:
    earned = accrue(sale(99_99), chain(TIERED), first=True, volume_before=0)  # 7.99 and 30.00
    clawed: dict[str, int] = {}
    taken = []
    refunded = 0
    for n, part in enumerate((33_33, 33_33)):
        lines = claw_back(sale(part, "refund", f"r{n}"), earned, clawed, 99_99, refunded)
        for line in lines:
            assert line.reverses is not None
            clawed[line.reverses] = clawed.get(line.reverses, 0) - line.amount
        refunded += part
        taken.append([x.amount for x in lines])
    assert taken == [[-2_66], [-2_66]]  # 7.99 x 1/3 = 2.66; x 2/3 = 5.32: 2.66 more
    last = claw_back(sale(33_33, "chargeback", "c"), earned, clawed, 99_99, refunded)
    assert [(x.reverses, x.amount) for x in last] == [
        ("e1:commission:0", -2_67),
        ("e1:cpa:0", -30_00),
    ]
    assert (
        sum(x.amount for x in earned) + sum(clawed.values()) * -1 + sum(x.amount for x in last) == 0
    )


def test_attribution_takes_the_first_or_last_touch_inside_the_window() -> None:
    at = 100 * DAY
    touches = [
        Touch(affiliate_id=a, code=a, ts_ns=at - d * DAY)
        for a, d in (("old", 45), ("early", 20), ("late", 1), ("after", -1))
    ]
    assert attribute(touches, at, 30 * DAY, "last_touch").affiliate_id == "late"  # type: ignore[union-attr]
    assert attribute(touches, at, 30 * DAY, "first_touch").affiliate_id == "early"  # type: ignore[union-attr]
    assert attribute(touches[:1], at, 30 * DAY, "last_touch") is None


def test_self_referral_signals() -> None:
    assert self_referral(" Ann@X.test", "t1", [], "ann@x.test", None, None) == "same_email"
    assert self_referral("a@x", "t1", [], "b@x", "t1", None) == "own_trader_account"
    assert (
        self_referral("a@x", "t1", ["IBAN-1"], "b@x", None, "IBAN-1") == "same_payout_destination"
    )
    assert self_referral("a@x", "t1", ["IBAN-2"], "b@x", "t9", "IBAN-1") is None


def test_plans_that_cannot_be_used_are_refused_naming_the_problem() -> None:
    with pytest.raises(msgspec.ValidationError, match="first tier must start at a volume of 0"):
        msgspec.convert(
            {"currency": "USD", "tiers": [{"from_volume": 1, "rate_bp": 5}]}, CommissionPlan
        )
    with pytest.raises(msgspec.ValidationError, match="volumes must rise"):
        msgspec.convert(
            {
                "currency": "USD",
                "tiers": [{"from_volume": 0, "rate_bp": 5}, {"from_volume": 0, "rate_bp": 6}],
            },
            CommissionPlan,
        )
    with pytest.raises(msgspec.ValidationError, match="rate_bp"):
        msgspec.convert(
            {"currency": "USD", "tiers": [{"from_volume": 0, "rate_bp": 10_001}]}, CommissionPlan
        )
    euro = msgspec.structs.replace(sale(), currency="EUR")
    with pytest.raises(PlanError, match="pays in USD"):
        accrue(euro, chain(TIERED), first=True, volume_before=0)


def test_months_are_utc_calendar_months() -> None:
    assert month_of(1_793_491_200 * 10**9) == "2026-11"
    assert month_of(1_793_491_200 * 10**9 - 1) == "2026-10"
