"""The affiliate supervisor on PostgreSQL: tiers crossed mid-month, clawbacks after a payout
(a negative balance carried over), sub-affiliate overrides, plan versions, self-referral
exclusion, attribution by window and model, and statements that add up."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.affiliates import AffiliateConfig, AffiliateSupervisor
from actors.commissions import CommissionPlan, Tier
from ledger import affiliates as store
from ledger import books
from ledger.schema import affiliate_attributions, affiliate_lines, affiliate_touches
from tests.integration.affiliates.conftest import DAY, NOV_1, affiliate, plan, sale, trader

pytestmark = pytest.mark.postgres

TIERED = CommissionPlan(
    currency="USD",
    tiers=(
        Tier(from_volume=0, rate_bp=800),
        Tier(from_volume=1_000_00, rate_bp=1_000),
        Tier(from_volume=3_000_00, rate_bp=1_500),
    ),
)


async def lines(engine: AsyncEngine, **where: str) -> list[tuple[str, str, int, int]]:
    """(affiliate, kind, rate_bp, amount) of the lines, in the order accrued."""
    query = select(affiliate_lines).order_by(affiliate_lines.c.seq, affiliate_lines.c.id)
    for name, value in where.items():
        query = query.where(affiliate_lines.c[name] == value)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [(r.affiliate_id, r.kind, r.rate_bp, r.amount) for r in rows]


async def owed(engine: AsyncEngine, affiliate_id: str) -> int:
    async with engine.connect() as conn:
        return (await store.reconcile_one(conn, affiliate_id)).get("USD", 0)


async def reconciled(engine: AsyncEngine) -> store.Reconciliation:
    async with engine.connect() as conn:
        found = await store.reconcile(conn)
        assert (await books.reconcile(conn)).ok
    assert found.ok, found.differences
    return found


async def test_a_tier_crossed_mid_month_applies_from_the_crossing_purchase_on(
    engine: AsyncEngine, supervisor: AffiliateSupervisor
) -> None:
    await plan(engine, "tiered", TIERED)
    await affiliate(engine, "aff-a", "tiered")
    amounts = [600_00, 600_00, 1_500_00, 500_00, 600_00]  # volume 600, 1200, 2700, 3200, 3800
    for i, amount in enumerate(amounts):
        await trader(engine, f"t{i}", "code-aff-a", NOV_1 + i * DAY)
        await sale(engine, f"p{i}", "purchase", f"pur-{i}", f"t{i}", amount, NOV_1 + i * DAY + 1)
    await trader(engine, "t-dec", "code-aff-a", NOV_1 + 29 * DAY)
    await sale(engine, "p-dec", "purchase", "pur-dec", "t-dec", 600_00, NOV_1 + 31 * DAY)

    done = await supervisor.accrue()

    assert (done.events, done.lines) == (6, 6)
    assert await lines(engine) == [
        ("aff-a", "commission", 800, 48_00),  # 600 of 1,000: 8%
        ("aff-a", "commission", 1_000, 60_00),  # crosses 1,000: 10% from this purchase on
        ("aff-a", "commission", 1_000, 150_00),
        ("aff-a", "commission", 1_500, 75_00),  # crosses 3,000: 15%
        ("aff-a", "commission", 1_500, 90_00),
        ("aff-a", "commission", 800, 48_00),  # December starts again at 8%
    ]
    assert await owed(engine, "aff-a") == 471_00
    await reconciled(engine)
    again = await supervisor.accrue()
    assert again.events == 0  # a retry applies nothing twice
    assert len(await lines(engine)) == 6


async def test_a_clawback_after_a_payout_carries_a_negative_balance_to_the_next_week(
    engine: AsyncEngine, supervisor: AffiliateSupervisor
) -> None:
    body = CommissionPlan(currency="USD", tiers=(Tier(from_volume=0, rate_bp=1_000),), cpa=20_00)
    await plan(engine, "cpa", body)
    await affiliate(engine, "aff-b", "cpa")
    await trader(engine, "tb", "code-aff-b", NOV_1)
    await sale(engine, "pb1", "purchase", "pur-b1", "tb", 1_000_00, NOV_1 + DAY)
    await supervisor.accrue()
    assert await lines(engine) == [
        ("aff-b", "commission", 1_000, 100_00),
        ("aff-b", "cpa", 0, 20_00),
    ]

    first = await supervisor.run_payouts("2026-W45", NOV_1 + 2 * DAY)
    assert [(p.affiliate_id, p.amount, p.rail) for p in first.paid] == [
        ("aff-b", 120_00, "bank_wire")
    ]
    assert (await supervisor.run_payouts("2026-W45")).paid == first.paid  # the same run: once
    assert await owed(engine, "aff-b") == 0

    await sale(engine, "cb1", "chargeback", "pur-b1", "tb", 1_000_00, NOV_1 + 3 * DAY)
    await supervisor.accrue()
    assert await owed(engine, "aff-b") == -120_00  # the CPA goes back with a chargeback too
    second = await supervisor.run_payouts("2026-W46", NOV_1 + 9 * DAY)
    assert (second.paid, second.carried) == ([], 1)  # owes the firm: nothing paid, carried
    await reconciled(engine)

    await sale(engine, "pb2", "purchase", "pur-b2", "tb", 2_000_00, NOV_1 + 10 * DAY)
    await supervisor.accrue()
    assert await owed(engine, "aff-b") == 80_00  # 200 earned pays back the 120 first
    third = await supervisor.run_payouts("2026-W47", NOV_1 + 16 * DAY)
    assert [p.amount for p in third.paid] == [80_00]
    await reconciled(engine)

    async with engine.connect() as conn:
        month = await store.statement(
            conn, "aff-b", "USD", datetime.date(2026, 11, 1), datetime.date(2026, 11, 30)
        )
    assert (month.opening, month.earned, month.clawed, month.paid, month.closing) == (
        0,
        320_00,
        -120_00,
        200_00,
        0,
    )
    days = {d.day: (d.opening, d.closing) for d in month.days}
    assert days["2026-11-04"] == (0, -120_00)  # the chargeback after the first payout


async def test_partial_refunds_take_back_in_proportion_and_never_more_than_was_earned(
    engine: AsyncEngine, supervisor: AffiliateSupervisor
) -> None:
    body = CommissionPlan(currency="USD", tiers=(Tier(from_volume=0, rate_bp=1_000),), cpa=15_00)
    await plan(engine, "cpa", body)
    await affiliate(engine, "aff-r", "cpa")
    await trader(engine, "tr", "code-aff-r", NOV_1)
    await sale(engine, "pr", "purchase", "pur-r", "tr", 99_99, NOV_1 + DAY)  # 9.99 earned
    for i, part in enumerate((33_33, 33_33, 33_33)):
        await sale(engine, f"rf{i}", "refund", "pur-r", "tr", part, NOV_1 + (2 + i) * DAY)
    await supervisor.accrue()

    assert await lines(engine) == [
        ("aff-r", "commission", 1_000, 9_99),
        ("aff-r", "cpa", 0, 15_00),
        ("aff-r", "clawback", 0, -3_33),  # a third of 9.99
        ("aff-r", "clawback", 0, -3_33),  # two thirds: 6.66 in all
        ("aff-r", "clawback", 0, -3_33),  # all of it: 9.99
        ("aff-r", "clawback", 0, -15_00),  # the CPA, once the whole purchase is refunded
    ]
    assert await owed(engine, "aff-r") == 0
    await reconciled(engine)


async def test_sub_affiliates_earn_their_parents_an_override_to_the_configured_depth(
    engine: AsyncEngine, migrated_postgres_url: str
) -> None:
    flat = CommissionPlan(currency="USD", tiers=(Tier(from_volume=0, rate_bp=1_000),))
    await plan(engine, "child", flat)
    await plan(engine, "parent", CommissionPlan(currency="USD", overrides_bp=(500,)))
    await plan(engine, "grand", CommissionPlan(currency="USD", overrides_bp=(500, 200)))
    await plan(engine, "top", CommissionPlan(currency="USD", overrides_bp=(500, 200, 100)))
    await affiliate(engine, "aff-top", "top")
    await affiliate(engine, "aff-g", "grand", parent="aff-top")
    await affiliate(engine, "aff-p", "parent", parent="aff-g")
    await affiliate(engine, "aff-c", "child", parent="aff-p")
    await trader(engine, "tc", "code-aff-c", NOV_1)
    await sale(engine, "pc", "purchase", "pur-c", "tc", 1_000_00, NOV_1 + DAY)
    shallow = AffiliateSupervisor(migrated_postgres_url, AffiliateConfig(tick_s=0, max_depth=2))
    try:
        await shallow.accrue()
    finally:
        await shallow.close()

    assert await lines(engine) == [
        ("aff-c", "commission", 1_000, 100_00),
        ("aff-p", "override", 500, 50_00),  # one level up: the parent's first override
        ("aff-g", "override", 200, 20_00),  # two up: the grandparent's second
    ]  # aff-top is three up: past max_depth 2
    await reconciled(engine)


async def test_a_new_plan_version_commissions_the_purchases_made_after_it(
    engine: AsyncEngine, supervisor: AffiliateSupervisor
) -> None:
    ten = CommissionPlan(currency="USD", tiers=(Tier(from_volume=0, rate_bp=1_000),))
    twenty = CommissionPlan(currency="USD", tiers=(Tier(from_volume=0, rate_bp=2_000),))
    await plan(engine, "versioned", ten, effective_ns=0, version=1)
    await plan(engine, "versioned", twenty, effective_ns=NOV_1 + 15 * DAY, version=2)
    await affiliate(engine, "aff-v", "versioned")
    for i, day in enumerate((10, 20)):
        await trader(engine, f"tv{i}", "code-aff-v", NOV_1)
        await sale(engine, f"pv{i}", "purchase", f"pur-v{i}", f"tv{i}", 500_00, NOV_1 + day * DAY)
    await supervisor.accrue()

    async with engine.connect() as conn:
        rows = (await conn.execute(select(affiliate_lines).order_by(affiliate_lines.c.seq))).all()
    assert [(r.plan_version, r.rate_bp, r.amount) for r in rows] == [
        (1, 1_000, 50_00),  # before the 15th: version 1
        (2, 2_000, 100_00),
    ]


async def test_a_referral_of_oneself_is_flagged_and_earns_nothing(
    engine: AsyncEngine, supervisor: AffiliateSupervisor
) -> None:
    await plan(engine, "flat", CommissionPlan(currency="USD", cpa=50_00))
    await affiliate(engine, "aff-s", "flat", email="Sam@Partner.test", trader_id="own")
    await trader(engine, "alias", "code-aff-s", NOV_1, email="sam@partner.test ")
    await trader(engine, "own", "code-aff-s", NOV_1)
    await trader(engine, "friend", "code-aff-s", NOV_1)
    for i, who in enumerate(("alias", "own", "friend")):
        await sale(engine, f"ps{i}", "purchase", f"pur-s{i}", who, 100_00, NOV_1 + DAY)
    done = await supervisor.accrue()

    assert sorted(done.excluded) == ["alias", "own"]
    async with engine.connect() as conn:
        found = await conn.execute(
            select(affiliate_attributions.c.trader_id, affiliate_attributions.c.excluded)
        )
        excluded = {t: x for t, x in found}
    assert excluded == {"alias": "same_email", "own": "own_trader_account", "friend": None}
    assert await lines(engine) == [
        ("aff-s", "commission", 1_000, 10_00),
        ("aff-s", "cpa", 0, 50_00),
    ]  # the friend's purchase only
    await sale(engine, "ps9", "purchase", "pur-s9", "alias", 100_00, NOV_1 + 2 * DAY)
    await supervisor.accrue()
    assert len(await lines(engine)) == 2  # excluded for good, not only at the first purchase


@pytest.mark.parametrize(
    ("model", "credited"), [("last_touch", "aff-late"), ("first_touch", "aff-early")]
)
async def test_attribution_credits_the_first_or_last_touch_within_the_window(
    engine: AsyncEngine, migrated_postgres_url: str, model: Any, credited: str
) -> None:
    await plan(engine, "flat", CommissionPlan(currency="USD"))
    for name in ("aff-old", "aff-early", "aff-late"):
        await affiliate(engine, name, "flat")
    buy_ns = NOV_1 + 40 * DAY
    await trader(engine, "tw", "code-aff-old", buy_ns - 35 * DAY)  # signup code: too old
    async with engine.begin() as conn:
        for name, days_before in (("aff-early", 20), ("aff-late", 2)):
            await conn.execute(
                affiliate_touches.insert().values(
                    trader_id="tw",
                    affiliate_id=name,
                    code=f"code-{name}",
                    ts_ns=buy_ns - days_before * DAY,
                )
            )
    await sale(engine, "pw", "purchase", "pur-w", "tw", 100_00, buy_ns)
    picked = AffiliateSupervisor(
        migrated_postgres_url, AffiliateConfig(tick_s=0, window_days=30, model=model)
    )
    try:
        await picked.accrue()
    finally:
        await picked.close()
    assert [a for a, *_ in await lines(engine)] == [credited]


async def test_an_event_whose_transaction_commits_late_is_accrued_by_a_later_batch(
    engine: AsyncEngine, supervisor: AffiliateSupervisor
) -> None:
    await plan(engine, "flat", CommissionPlan(currency="USD"))
    await affiliate(engine, "aff-l", "flat")
    for name in ("slow", "fast"):
        await trader(engine, name, "code-aff-l", NOV_1)
    async with engine.connect() as slow:
        transaction = await slow.begin()  # takes the lower seq, commits last
        await store.record_sale(
            slow,
            store.SaleIn(
                event_id="p-slow",
                kind="purchase",
                purchase_id="pur-slow",
                trader_id="slow",
                amount=100_00,
                currency="USD",
                ts_ns=NOV_1 + DAY,
            ),
        )
        await sale(engine, "p-fast", "purchase", "pur-fast", "fast", 200_00, NOV_1 + DAY)
        assert (await supervisor.accrue()).events == 1  # the committed one
        await transaction.commit()
    assert (await supervisor.accrue()).events == 1  # the late one, not skipped
    assert sorted(a for *_, a in await lines(engine)) == [10_00, 20_00]
    await reconciled(engine)
