"""Funded accounts for the payout tests and benchmark: a plan that pays, traders and registry
rows, accounts hosted funded on a real runtime with their trading injected on the simulated
platform (the bridge carries it to the shards, as a trader's would), and a Friday burst of
payout requests over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec
import ray
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.plans import DailyLoss, MaxLoss, PayoutTerms, Phase, Plan, ProfitTarget
from actors.runtime import Runtime
from ledger import kyc
from ledger.schema import accounts, traders

DAY_NS = 86_400 * 10**9
DEALS = 1_000_000  # above the simulator's own deal numbers

PLAN = Plan(
    id="funded-10k",
    name="Funded 10K",
    initial_balance=10_000.0,
    phases=(
        Phase(
            name="challenge",
            profit_target=ProfitTarget(pct=8.0),
            daily_loss=DailyLoss(pct=5.0),
            max_loss=MaxLoss(pct=10.0),
        ),
        Phase(name="funded", daily_loss=DailyLoss(pct=5.0), max_loss=MaxLoss(pct=10.0)),
    ),
    payout=PayoutTerms(
        split_pct=80.0, first_after_days=14, cadence_days=14, min_amount=50.0, max_best_day_pct=50.0
    ),
)
"""10,000 funded: 80% split, first payout 14 days after funding then every 14 days, at least
50.00, no day above half of the period's profit."""


class Trader(msgspec.Struct, kw_only=True):
    trader_id: str
    account_id: str
    country: str = "DE"
    tier: kyc.Tier = kyc.Tier.FULL
    days: tuple[float, ...] = (300.0, 300.0, 300.0)  # closed profit per trading day


async def seed(
    engine: AsyncEngine,
    runtime: Runtime,
    population: Sequence[Trader],
    *,
    funded_days_ago: float = 20.0,
) -> None:
    """Traders, their funded accounts in the registry (funded `funded_days_ago`), KYC tiers,
    the accounts hosted on the runtime's first connection, then each day's trade injected."""
    now = time.time_ns()
    created = now - int(funded_days_ago * DAY_NS)
    connection = runtime.cell().connection
    async with engine.begin() as conn:
        await conn.execute(
            traders.insert(),
            [
                {
                    "id": t.trader_id,
                    "email": f"{t.trader_id}@example.com",
                    "name": t.trader_id,
                    "country": t.country,
                    "language": "en",
                    "timezone": "Europe/Berlin",
                    "source": "test",
                    "created_ns": created,
                }
                for t in population
            ],
        )
        await conn.execute(
            accounts.insert(),
            [
                {
                    "id": t.account_id,
                    "trader_id": t.trader_id,
                    "purchase_id": f"pur-{t.account_id}",
                    "plan_id": PLAN.id,
                    "plan_version": 1,
                    "phase": "funded",
                    "status": "active",
                    "connection": connection,
                    "platform_login": t.account_id,
                    "attempts": 0,
                    "created_ns": created,
                    "updated_ns": created,
                }
                for t in population
            ],
        )
        for t in population:
            if t.tier is not kyc.Tier.NONE:
                await kyc.set_tier(conn, t.trader_id, t.tier)
    await runtime.host([t.account_id for t in population], plan=PLAN, phase="funded")
    # In time order across accounts, as a platform sends them: a shard's clock moves every
    # account it hosts over day boundaries.
    timed = [m for t in population for m in trades(t.account_id, t.days, start_ns=now)]
    messages = [raw for _, raw in sorted(timed, key=lambda m: m[0])]
    server = runtime.cell().server
    for i in range(0, len(messages), 5_000):
        await server.inject.remote(messages[i : i + 5_000])


def trades(account_id: str, days: Sequence[float], *, start_ns: int) -> list[tuple[int, bytes]]:
    """One round trip a day from the day after `start_ns`: buy 1 lot of EURUSD, sell it an
    hour later for the day's profit; each message with its time."""
    out = []
    for i, profit in enumerate(days):
        ts = start_ns + (i + 1) * DAY_NS
        for entry, offset, pnl in (("in", 0, 0.0), ("out", 3_600 * 10**9, profit)):
            n = DEALS + 2 * i + (entry == "out")
            body = {
                "type": "deal",
                "event_id": f"pay-deal:{account_id}:{n}",
                "ts_ns": ts + offset,
                "account_id": account_id,
                "deal_id": n,
                "position_id": DEALS + i,
                "symbol": "EURUSD",
                "entry": entry,
                "side": "buy" if entry == "in" else "sell",
                "volume": 1.0,
                "price": 1.085,
                "profit": pnl,
            }
            out.append((ts + offset, msgspec.json.encode(body)))
    return out


class Burst(msgspec.Struct, kw_only=True):
    """A burst's shape: one request per account (`acc-{prefix}-{i}`), the first `resent`
    sent again with the same key and body, and accounts `resent .. resent + twice` asked a
    second time under another key, all at once."""

    prefix: str = "b"
    accounts: int = 2_000
    resent: int = 500
    twice: int = 500

    def requests(self) -> list[tuple[str, int]]:
        """(key suffix, account index) of every request, in the order they are sent."""
        mixed: list[tuple[str, int]] = []
        for i in range(self.accounts):
            mixed.append((f"{i}", i))
            if i < self.resent:
                mixed.append((f"{i}", i))
            if i < self.twice and self.resent + i < self.accounts:
                mixed.append((f"{self.resent + i}-bis", self.resent + i))
        return mixed


class Answers(msgspec.Struct, kw_only=True):
    by_key: dict[str, set[str]]  # the payout ids answered per key (one, if all is well)
    latencies_ns: list[int]  # per request, send to answer
    elapsed_s: float  # first send to last answer
    replayed: int  # answers marked `Idempotent-Replayed` (their key had made the payout before)
    at_kill: int = -1  # answers in hand when the supervisor was killed


async def friday(
    url: str, token: str, burst: Burst, run: str, *, kill: Any = None, kill_after: int = 300
) -> Answers:
    """Send every request of `burst` at once (keys prefixed with `run`); with `kill` (the
    payout supervisor's handle), kill it once `kill_after` requests were answered."""
    by_key: dict[str, set[str]] = defaultdict(set)
    latencies: list[int] = []
    replays = 0
    reached = asyncio.Event()
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=500)
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:

        async def one(key: str, index: int) -> None:
            nonlocal replays
            body = {"account_id": f"acc-{burst.prefix}-{index}", "currency": "USD",
                    "amount": "500.00", "destination": f"DE89-{burst.prefix}-{index}",
                    "device": f"dev-{index}"}  # fmt: skip
            started = time.perf_counter_ns()
            async with session.post(
                "/api/v1/payouts", json=body, headers={"Idempotency-Key": f"{run}-{key}"}
            ) as response:
                found = await response.json()
            if response.status != 201:
                raise RuntimeError(f"{key}: {response.status} {found}")
            by_key[key].add(found["id"])
            replays += response.headers.get("Idempotent-Replayed") == "true"
            latencies.append(time.perf_counter_ns() - started)
            if len(latencies) == kill_after:
                reached.set()

        started = time.perf_counter()
        tasks = [asyncio.create_task(one(key, index)) for key, index in burst.requests()]
        at_kill = -1
        if kill is not None:
            await reached.wait()
            at_kill = len(latencies)
            ray.kill(kill, no_restart=False)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return Answers(
        by_key=dict(by_key),
        latencies_ns=latencies,
        elapsed_s=elapsed,
        replayed=replays,
        at_kill=at_kill,
    )
