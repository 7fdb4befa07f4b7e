"""Affiliate statements at size: `python -m loadtests affiliates [--affiliates 10000]
[--purchases 1000000] [--json PATH]`

A scratch PostgreSQL database gets `--affiliates` affiliates (a fifth of them sub-affiliates of
an earlier one) on three commission plans (tiered on every purchase with overrides, CPA on the
first purchase, flat), one trader per two purchases (four in five referred at signup by a code),
and `--purchases` purchases spread over October 2026, then 3% partial refunds and 1%
chargebacks after them. It is written with COPY, as a month of sales would have accumulated.

Then, timed one by one: the affiliate supervisor accrues every sale event (its own batches and
ledger transfers; the tables analyzed every 100,000 events, as autovacuum would, which this
machine's PostgreSQL has off), the daily statement run for the month's last day (every
affiliate), the same run for each day of the month, the weekly payout run, and the
reconciliation (which must hold: exit status 1 if it does not). The issue's goal is the daily
statement run under 10 s at 10,000 affiliates and 1,000,000 purchases. Nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import msgspec

from actors.affiliates import Accrued, AffiliateConfig, AffiliateSupervisor
from actors.commissions import CommissionPlan, Tier
from loadtests.common import positive, scratch_database, write_report
from loadtests.entity import _cpu_model

OCT_1 = 1_790_812_800 * 10**9  # 2026-10-01 00:00 UTC: a month that is over
DAY_NS = 86_400 * 10**9
PLANS = {
    "tiered": CommissionPlan(
        currency="USD",
        tiers=(
            Tier(from_volume=0, rate_bp=800),
            Tier(from_volume=1_000_00, rate_bp=1_000),
            Tier(from_volume=5_000_00, rate_bp=1_500),
            Tier(from_volume=20_000_00, rate_bp=2_000),
        ),
        overrides_bp=(500, 200),
    ),
    "cpa": CommissionPlan(currency="USD", basis="first_purchase", cpa=40_00),
    "flat": CommissionPlan(currency="USD", tiers=(Tier(from_volume=0, rate_bp=1_200),)),
}
FEES = (59_00, 99_00, 149_00, 299_00, 549_00)


class Report(msgspec.Struct, kw_only=True):
    scenario: str = "affiliates"
    machine: str
    affiliates: int
    traders: int
    purchases: int
    reversals: int
    seed_s: float
    accrual_s: float
    events_per_s: float
    lines: int
    statement_day: str
    statement_run_s: float  # the figure: one day, every affiliate
    statements: int
    month_of_statement_runs_s: float
    payout_run_s: float
    paid: int
    reconcile_s: float
    reconciled: bool
    command: str = ""


async def seed(url: str, affiliates: int, purchases: int, rng: random.Random) -> tuple[int, int]:
    """Affiliates, plans, codes, traders and sale events, by COPY; (traders, reversals)."""
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await conn.copy_records_to_table(
            "commission_plans",
            records=[
                (plan_id, 1, msgspec.json.encode(body).decode(), 0, 0, "bench")
                for plan_id, body in PLANS.items()
            ],
            columns=["plan_id", "version", "body", "effective_ns", "created_ns", "created_by"],
        )
        names = list(PLANS)
        rows = []
        for i in range(affiliates):
            parent = f"aff-{rng.randrange(i)}" if i > 10 and rng.random() < 0.2 else None
            rows.append(
                (
                    f"aff-{i}",
                    f"Affiliate {i}",
                    f"aff{i}@partner.test",
                    parent,
                    names[i % 3],
                    None,
                    "bank_wire",
                    f"IBAN-AFF-{i}",
                    "active",
                    0,
                    0,
                )
            )
        await conn.copy_records_to_table(
            "affiliates",
            records=rows,
            columns=[
                "id",
                "name",
                "email",
                "parent_id",
                "plan_id",
                "trader_id",
                "payout_rail",
                "payout_destination",
                "status",
                "created_ns",
                "updated_ns",
            ],
        )
        await conn.copy_records_to_table(
            "affiliate_codes",
            records=[(f"c{i}", f"aff-{i}", 0) for i in range(affiliates)],
            columns=["code", "affiliate_id", "created_ns"],
        )
        count = max(1, purchases // 2)
        # a few affiliates bring most traders, as channels do
        weights = [1.0 / (1 + i) ** 0.8 for i in range(affiliates)]
        codes = rng.choices(range(affiliates), weights=weights, k=count)
        await conn.copy_records_to_table(
            "traders",
            records=[
                (
                    f"t{i}",
                    f"t{i}@example.test",
                    f"Trader {i}",
                    "DE",
                    "en",
                    "UTC",
                    "affiliate",
                    None,
                    f"c{codes[i]}" if rng.random() < 0.8 else None,
                    None,
                    OCT_1 - DAY_NS,
                )
                for i in range(count)
            ],
            columns=[
                "id",
                "email",
                "name",
                "country",
                "language",
                "timezone",
                "source",
                "campaign",
                "affiliate_code",
                "rep_id",
                "created_ns",
            ],
        )
        month = 31 * DAY_NS
        times = sorted(OCT_1 + rng.randrange(month) for _ in range(purchases))
        events = []
        bought = []
        for n, ts in enumerate(times):
            amount = rng.choice(FEES)
            trader = f"t{rng.randrange(count)}"
            events.append((f"purchase:p{n}", "purchase", f"p{n}", trader, amount, "USD", ts, ts))
            bought.append((f"p{n}", trader, amount, ts))
        reversals = []
        for purchase_id, trader, amount, ts in rng.sample(bought, k=len(bought) // 25):
            kind = "chargeback" if rng.random() < 0.25 else "refund"
            part = amount if kind == "chargeback" else amount * rng.randint(10, 100) // 100
            later = min(ts + rng.randrange(5 * DAY_NS), OCT_1 + month - 1)
            reversals.append((later, f"rev:{purchase_id}", kind, purchase_id, trader, part))
        for later, event_id, kind, purchase_id, trader, part in sorted(reversals):
            events.append((event_id, kind, purchase_id, trader, part, "USD", later, later))
        events.sort(key=lambda e: e[6])  # recorded in time order, as they arrive
        await conn.copy_records_to_table(
            "sale_events",
            records=events,
            columns=[
                "event_id",
                "kind",
                "purchase_id",
                "trader_id",
                "amount",
                "currency",
                "ts_ns",
                "recorded_ns",
            ],
        )
        await conn.execute("ANALYZE")
        return count, len(reversals)
    finally:
        await conn.close()


ANALYZE_EVERY = 100_000
"""Events between two ANALYZEs of the supervisor's tables during accrual: what autovacuum does
on a server that runs it (this machine's PostgreSQL has it off; with statistics taken while the
tables were empty, the planner scans them whole)."""


async def accrue(url: str, supervisor: AffiliateSupervisor) -> Accrued:
    """Every sale event accrued, the tables analyzed every `ANALYZE_EVERY` events."""
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    total = Accrued(events=0, lines=0, excluded=[], skipped=[])
    since = 0
    try:
        while True:
            done = await supervisor.accrue(until_idle=False)
            total = total.plus(done)
            since += done.events
            if since >= ANALYZE_EVERY:
                await conn.execute(
                    "ANALYZE affiliate_attributions, affiliate_lines, affiliate_volumes, "
                    "ledger_accounts, ledger_transfers"
                )
                since = 0
            if done.events == 0:
                return total
    finally:
        await conn.close()


async def measure(affiliates: int, purchases: int, seed_value: int) -> Report:
    rng = random.Random(seed_value)
    async with scratch_database() as url:
        started = time.perf_counter()
        traders, reversals = await seed(url, affiliates, purchases, rng)
        seeded = time.perf_counter() - started
        print(
            f"seeded {affiliates:,} affiliates, {traders:,} traders, {purchases:,} purchases "
            f"and {reversals:,} reversals in {seeded:.1f} s",
            flush=True,
        )
        config = AffiliateConfig(tick_s=0, batch=10_000, min_payout=50_00)
        supervisor = AffiliateSupervisor(url, config)
        try:
            started = time.perf_counter()
            accrued = await accrue(url, supervisor)
            accrual = time.perf_counter() - started
            print(
                f"accrued {accrued.events:,} events ({accrued.lines:,} lines) in {accrual:.1f} s",
                flush=True,
            )
            last = datetime.date(2026, 10, 31)
            one = await supervisor.run_statements(last)
            print(
                f"daily statement run for {one.day}: {one.statements:,} statements in "
                f"{one.seconds:.2f} s",
                flush=True,
            )
            started = time.perf_counter()
            for day in range(1, 32):
                await supervisor.run_statements(datetime.date(2026, 10, day))
            month_s = time.perf_counter() - started
            started = time.perf_counter()
            run = await supervisor.run_payouts("2026-W45", OCT_1 + 32 * DAY_NS)
            payout_s = time.perf_counter() - started
            started = time.perf_counter()
            reconciled = await supervisor.reconcile()
            reconcile_s = time.perf_counter() - started
        finally:
            await supervisor.close()
    return Report(
        machine=f"{_cpu_model()}, {os.cpu_count()} cores",
        affiliates=affiliates,
        traders=traders,
        purchases=purchases,
        reversals=reversals,
        seed_s=round(seeded, 2),
        accrual_s=round(accrual, 2),
        events_per_s=round(accrued.events / accrual, 1),
        lines=accrued.lines,
        statement_day=one.day,
        statement_run_s=one.seconds,
        statements=one.statements,
        month_of_statement_runs_s=round(month_s, 2),
        payout_run_s=round(payout_s, 2),
        paid=len(run.paid),
        reconcile_s=round(reconcile_s, 2),
        reconciled=reconciled.ok,
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests affiliates")
    parser.add_argument("--affiliates", type=positive, default=10_000)
    parser.add_argument("--purchases", type=positive, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = asyncio.run(measure(args.affiliates, args.purchases, args.seed))
    report.command = " ".join(["python -m loadtests affiliates", *argv])
    print(
        f"{report.purchases:,} purchases, {report.affiliates:,} affiliates on {report.machine}: "
        f"daily statement run {report.statement_run_s:.2f} s (goal: under 10 s); accrual "
        f"{report.events_per_s:,.0f} events/s; payout run {report.payout_run_s:.2f} s "
        f"({report.paid:,} paid); reconciled: {report.reconciled}",
        flush=True,
    )
    if args.json is not None:
        write_report(args.json, report)
    return 0 if report.reconciled else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
