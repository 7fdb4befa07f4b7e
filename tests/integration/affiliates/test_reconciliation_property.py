"""A randomized month of purchases, partial refunds, chargebacks and weekly payouts across
tiered, CPA and override plans: afterwards, and after every payout run, commissions accrued
less paid equal the books' payable balance to the cent, per affiliate and in total; the books
balance; each month's statement adds up; a purchase refunded in full nets to zero."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.affiliates import AffiliateConfig, AffiliateSupervisor
from actors.commissions import CommissionPlan, Tier
from ledger import affiliates as store
from ledger import books
from ledger.database import create_engine
from ledger.schema import affiliate_lines
from tests.database import run_async, truncate_ledger
from tests.integration.affiliates.conftest import DAY, NOV_1, affiliate, plan, sale, trader

pytestmark = pytest.mark.postgres

PLANS = {
    "tiered": CommissionPlan(
        currency="USD",
        tiers=(
            Tier(from_volume=0, rate_bp=800),
            Tier(from_volume=500_00, rate_bp=1_000),
            Tier(from_volume=1_500_00, rate_bp=1_500),
            Tier(from_volume=3_000_00, rate_bp=2_000),
        ),
        overrides_bp=(500, 250),
    ),
    "cpa": CommissionPlan(currency="USD", basis="first_purchase", cpa=25_00, overrides_bp=(300,)),
    "flat": CommissionPlan(currency="USD", tiers=(Tier(from_volume=0, rate_bp=1_250),)),
}
AFFILIATES = [
    ("a0", "tiered", None),
    ("a1", "cpa", "a0"),
    ("a2", "flat", "a1"),
    ("a3", "cpa", None),
]

operation = st.one_of(
    st.tuples(st.just("purchase"), st.integers(0, 7), st.integers(1_00, 600_00)),
    st.tuples(
        st.just("refund"), st.integers(0, 40), st.integers(1, 100)
    ),  # percent of what is left
    st.tuples(st.just("chargeback"), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("payout"), st.just(0), st.just(0)),
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(month=st.lists(operation, min_size=5, max_size=40))
def test_a_random_month_reconciles_to_the_cent(
    migrated_postgres_url: str, month: list[tuple[str, int, int]]
) -> None:
    run_async(truncate_ledger(migrated_postgres_url))
    run_async(_month(migrated_postgres_url, month))


async def _month(url: str, month: list[tuple[str, int, int]]) -> None:
    engine = create_engine(url)
    supervisor = AffiliateSupervisor(url, AffiliateConfig(tick_s=0, min_payout=20_00))
    try:
        for plan_id, body in PLANS.items():
            await plan(engine, plan_id, body)
        for affiliate_id, plan_id, parent in AFFILIATES:
            await affiliate(engine, affiliate_id, plan_id, parent=parent)
        for i in range(8):
            await trader(engine, f"t{i}", f"code-a{i % 4}", NOV_1)
        purchases: list[tuple[str, str, int]] = []  # (purchase, trader, amount left)
        step = (30 * DAY) // len(month)
        for n, (kind, who, amount) in enumerate(month):
            ts = NOV_1 + DAY + n * step
            if kind == "payout":
                await supervisor.accrue()
                await supervisor.run_payouts(f"run-{n}", ts)
                await _holds(engine)
            else:
                await _sale(engine, purchases, n, kind, who, amount, ts)
        await supervisor.accrue()
        await _holds(engine)
        async with engine.connect() as conn:
            for purchase_id, _, left in purchases:
                net = await conn.scalar(
                    select(func.coalesce(func.sum(affiliate_lines.c.amount), 0)).where(
                        affiliate_lines.c.purchase_id == purchase_id
                    )
                )
                assert net >= 0
                if left == 0:
                    assert net == 0, purchase_id  # refunded in full: nothing kept
    finally:
        await supervisor.close()
        await engine.dispose()


async def _sale(
    engine: AsyncEngine,
    purchases: list[tuple[str, str, int]],
    n: int,
    kind: str,
    who: int,
    amount: int,
    ts: int,
) -> None:
    """A purchase, or a refund (a share of what is left) or chargeback of an earlier one."""
    if kind == "purchase":
        purchases.append((f"pur-{n}", f"t{who}", amount))
        await sale(engine, f"e{n}", "purchase", f"pur-{n}", f"t{who}", amount, ts)
        return
    if not purchases:
        return
    index = who % len(purchases)
    purchase_id, trader_id, left = purchases[index]
    part = left if kind == "chargeback" else max(1, left * amount // 100)
    if left == 0:
        return
    await sale(engine, f"e{n}", kind, purchase_id, trader_id, part, ts)
    purchases[index] = (purchase_id, trader_id, left - part)


async def _holds(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        found = await store.reconcile(conn)
        assert found.ok, found.differences
        assert (await books.reconcile(conn)).ok
        total_owed = 0
        for affiliate_id, _, _ in AFFILIATES:
            owed = (await store.reconcile_one(conn, affiliate_id)).get("USD", 0)
            month = await store.statement(
                conn, affiliate_id, "USD", datetime.date(2026, 10, 1), datetime.date(2026, 12, 31)
            )
            assert month.opening == 0
            assert month.closing == owed == month.earned + month.clawed - month.paid
            for day in month.days:
                assert day.closing == day.opening + day.earned + day.clawed - day.paid
            total_owed += owed
        assert total_owed == found.accrued.get("USD", 0) - found.paid.get("USD", 0)
