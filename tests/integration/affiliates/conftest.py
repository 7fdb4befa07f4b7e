"""The affiliate supervisor in-process on PostgreSQL, and helpers to write what it reads."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.affiliates import AffiliateConfig, AffiliateSupervisor
from actors.commissions import CommissionPlan
from ledger import affiliates as store
from ledger.affiliates import SaleIn
from ledger.database import create_engine
from ledger.schema import affiliate_codes, affiliates, commission_plans, traders
from tests.database import run_async, truncate_ledger

DAY = 86_400 * 10**9
NOV_1 = 1_793_491_200 * 10**9  # 2026-11-01 00:00 UTC


@pytest.fixture
async def engine(migrated_postgres_url: str) -> AsyncIterator[AsyncEngine]:
    run_async(truncate_ledger(migrated_postgres_url))
    engine = create_engine(migrated_postgres_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def supervisor(migrated_postgres_url: str, engine: AsyncEngine) -> AsyncIterator[Any]:
    found = AffiliateSupervisor(migrated_postgres_url, AffiliateConfig(tick_s=0, min_payout=10_00))
    yield found
    await found.close()


async def plan(
    engine: AsyncEngine, plan_id: str, body: CommissionPlan, effective_ns: int = 0, version: int = 1
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            commission_plans.insert().values(
                plan_id=plan_id,
                version=version,
                body=msgspec.json.encode(body).decode(),
                effective_ns=effective_ns,
                created_ns=effective_ns,
                created_by="test",
            )
        )


async def affiliate(
    engine: AsyncEngine,
    affiliate_id: str,
    plan_id: str,
    *,
    parent: str | None = None,
    email: str | None = None,
    trader_id: str | None = None,
    destination: str | None = "IBAN-AFF",
    code: str | None = None,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            affiliates.insert().values(
                id=affiliate_id,
                name=affiliate_id,
                email=email or f"{affiliate_id}@partner.test",
                parent_id=parent,
                plan_id=plan_id,
                trader_id=trader_id,
                payout_rail="bank_wire" if destination else None,
                payout_destination=destination,
                status="active",
                created_ns=0,
                updated_ns=0,
            )
        )
        await conn.execute(
            affiliate_codes.insert().values(
                code=code or f"code-{affiliate_id}", affiliate_id=affiliate_id, created_ns=0
            )
        )


async def trader(
    engine: AsyncEngine,
    trader_id: str,
    code: str | None,
    created_ns: int,
    email: str | None = None,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            traders.insert().values(
                id=trader_id,
                email=email or f"{trader_id}@example.test",
                name=trader_id,
                country="DE",
                language="en",
                timezone="UTC",
                source="affiliate",
                affiliate_code=code,
                created_ns=created_ns,
            )
        )


async def sale(
    engine: AsyncEngine,
    event_id: str,
    kind: str,
    purchase_id: str,
    trader_id: str,
    amount: int,
    ts_ns: int,
    currency: str = "USD",
) -> None:
    async with engine.begin() as conn:
        await store.record_sale(
            conn,
            SaleIn(
                event_id=event_id,
                kind=kind,
                purchase_id=purchase_id,
                trader_id=trader_id,
                amount=amount,
                currency=currency,
                ts_ns=ts_ns,
            ),
        )


def now_ns() -> int:
    return time.time_ns()
