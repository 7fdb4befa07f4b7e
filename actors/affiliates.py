"""Affiliate supervisor: accrues commissions as purchases, refunds and chargebacks arrive,
runs the daily statements and the weekly payouts, and reconciles them with the books.

It takes the `sale_events` not accrued yet (written by the purchase API in the sale's own
transaction, and by the refund route) in `seq` order. Each batch is one transaction: its
commission lines (`actors/commissions.py`), attributions decided, the month's referred volumes,
one ledger transfer per affiliate and currency (expense to payable, or back for a clawback) and
the events marked accrued (`accrued_ns`). A crash rolls the batch back whole and the next
supervisor (Ray restarts it) takes it again: nothing is lost or counted twice. An event that
commits late (an earlier `seq` still in its transaction) is simply taken by a later batch.

`tick` (every `tick_s`) accrues, writes yesterday's statements (UTC) if not written, runs the
week's payouts on `payout_weekday` and reconciles; a difference raises an
`affiliate_reconciliation` alert on the risk hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import ray
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from actors.commissions import (
    Line,
    PlanError,
    PlanInForce,
    Sale,
    Touch,
    accrue,
    attribute,
    claw_back,
    day_of,
    month_of,
    self_referral,
)
from ledger import affiliates as store
from ledger import books
from ledger.affiliates import EXPENSE, Reconciliation, in_force, payable, payable_account
from ledger.books import Kind, LedgerAccount, Move
from ledger.database import create_engine, dialect_insert
from ledger.schema import (
    affiliate_attributions,
    affiliate_codes,
    affiliate_lines,
    affiliate_payouts,
    affiliate_statements,
    affiliate_touches,
    affiliate_volumes,
    affiliates,
    payouts,
    sale_events,
    traders,
)

log = logging.getLogger(__name__)

DAY_NS = 86_400 * 10**9


class AffiliateConfig(msgspec.Struct, frozen=True, kw_only=True):
    window_days: float = 30.0  # a touch counts this long before the first purchase
    model: Literal["first_touch", "last_touch"] = "last_touch"
    max_depth: int = 3  # parents earning an override, at most
    min_payout: int = 50_00  # minor units: a smaller balance waits for the next week
    payout_weekday: int = 0  # Monday (UTC)
    batch: int = 5_000
    tick_s: float = 60.0  # 0: only when called


class Accrued(msgspec.Struct, frozen=True, kw_only=True):
    events: int
    lines: int
    excluded: list[str]  # traders whose referral was flagged and excluded
    skipped: list[str]  # events no commission could be computed for (named in the log)

    def plus(self, other: Accrued) -> Accrued:
        return Accrued(
            events=self.events + other.events,
            lines=self.lines + other.lines,
            excluded=self.excluded + other.excluded,
            skipped=self.skipped + other.skipped,
        )


class StatementRun(msgspec.Struct, frozen=True, kw_only=True):
    day: str
    statements: int
    seconds: float


class PaidOut(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    affiliate_id: str
    amount: int
    currency: str
    rail: str


class PayoutRun(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    paid: list[PaidOut]
    carried: int  # affiliates owed less than the minimum, or owing (negative): next week


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    accrued: int
    statements: str | None
    payout_run: str | None
    reconciled: bool


class Affiliate(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str
    parent_id: str | None
    plan_id: str
    trader_id: str | None
    payout_destination: str | None


class AffiliateSupervisor:
    def __init__(
        self, database_url: str, config: AffiliateConfig | None = None, hub: Any = None
    ) -> None:
        self.config = config or AffiliateConfig()
        self.engine = create_engine(database_url)
        self.hub = hub
        self.working: asyncio.Lock | None = None
        self.loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.working = self.working or asyncio.Lock()
        if self.config.tick_s > 0 and (self.loop is None or self.loop.done()):
            self.loop = asyncio.create_task(self._tick_forever())

    async def close(self) -> None:
        if self.loop is not None:
            self.loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.loop
        await self.engine.dispose()

    # -- accrual -----------------------------------------------------------------------------

    async def accrue(self, until_idle: bool = True) -> Accrued:
        """Accrue the sale events not accrued yet, a batch per transaction (all of them with
        `until_idle`)."""
        await self.start()
        assert self.working is not None
        total = Accrued(events=0, lines=0, excluded=[], skipped=[])
        while True:
            async with self.working:
                done = await self._batch()
            total = total.plus(done)
            if not until_idle or done.events < self.config.batch:
                return total

    async def _batch(self) -> Accrued:
        async with self.engine.begin() as conn:
            c = sale_events.c
            rows = (
                await conn.execute(
                    select(sale_events)
                    .where(c.accrued_ns.is_(None))
                    .order_by(c.seq)
                    .limit(self.config.batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            sales = [store.sale_of(row) for row in rows]
            if not sales:
                return Accrued(events=0, lines=0, excluded=[], skipped=[])
            batch = _Batch(self.config, conn)
            await batch.load(sales)
            for sale in sales:
                batch.apply(sale)
            await batch.write(sales[0].seq, sales[-1].seq)
            now = time.time_ns()
            seqs = [sale.seq for sale in sales]
            for start in range(0, len(seqs), 1_000):
                await conn.execute(
                    update(sale_events)
                    .where(c.seq.in_(seqs[start : start + 1_000]))
                    .values(accrued_ns=now)
                )
        return Accrued(
            events=len(sales),
            lines=len(batch.lines),
            excluded=batch.excluded,
            skipped=batch.skipped,
        )

    # -- statements, payouts, reconciliation ----------------------------------------------------

    async def run_statements(self, day: datetime.date) -> StatementRun:
        """Write every affiliate's statement of `day` (UTC): opening balance, earned, taken
        back, paid, closing; again if run again (the day's figures as they now stand)."""
        await self.start()
        assert self.working is not None
        started = time.perf_counter()
        label = day.isoformat()
        lines, paid = affiliate_lines.c, affiliate_payouts.c
        async with self.working, self.engine.begin() as conn:
            before = await store.owed(conn, before_day=label)
            today: dict[tuple[str, str], list[int]] = {}
            for a, c, earned, clawed, count in await conn.execute(
                select(
                    lines.affiliate_id,
                    lines.currency,
                    func.coalesce(func.sum(lines.amount).filter(lines.amount > 0), 0),
                    func.coalesce(func.sum(lines.amount).filter(lines.amount < 0), 0),
                    func.count(),
                )
                .where(lines.day == label)
                .group_by(lines.affiliate_id, lines.currency)
            ):
                today[(a, c)] = [int(earned), int(clawed), 0, int(count)]
            for a, c, total in await conn.execute(
                select(paid.affiliate_id, paid.currency, func.sum(paid.amount))
                .where(paid.day == label)
                .group_by(paid.affiliate_id, paid.currency)
            ):
                today.setdefault((a, c), [0, 0, 0, 0])[2] = int(total)
            now = time.time_ns()
            rows = []
            for key in sorted(set(before) | set(today)):
                earned, clawed, out, count = today.get(key, [0, 0, 0, 0])
                opening = before.get(key, 0)
                rows.append(
                    {
                        "affiliate_id": key[0],
                        "day": label,
                        "currency": key[1],
                        "opening": opening,
                        "earned": earned,
                        "clawed": clawed,
                        "paid": out,
                        "closing": opening + earned + clawed - out,
                        "lines": count,
                        "created_ns": now,
                    }
                )
            await conn.execute(
                affiliate_statements.delete().where(affiliate_statements.c.day == label)
            )
            for start in range(0, len(rows), 5_000):
                await conn.execute(affiliate_statements.insert(), rows[start : start + 5_000])
        return StatementRun(
            day=label, statements=len(rows), seconds=round(time.perf_counter() - started, 3)
        )

    async def run_payouts(self, run_id: str, as_of_ns: int | None = None) -> PayoutRun:
        """Pay every active affiliate with a rail whose balance (commissions accrued up to
        now, less what was paid) reaches the minimum: a ledger transfer from its payable
        account to cash on its rail, and a payout row. Idempotent by `run_id`: a run made
        again pays nothing more. A balance below the minimum, or negative after a clawback,
        carries over."""
        await self.start()
        assert self.working is not None
        now = time.time_ns() if as_of_ns is None else as_of_ns
        async with self.working, self.engine.begin() as conn:
            if await conn.scalar(
                select(affiliate_payouts.c.id).where(affiliate_payouts.c.run_id == run_id).limit(1)
            ):
                return PayoutRun(run_id=run_id, paid=await _run(conn, run_id), carried=0)
            result = await store.reconcile(conn)
            payees = {
                row.id: row
                for row in await conn.execute(
                    select(affiliates).where(
                        affiliates.c.status == "active",
                        affiliates.c.payout_rail.is_not(None),
                        affiliates.c.payout_destination.is_not(None),
                    )
                )
            }
            owed = await store.owed(conn, as_of_ns=now)
            differ = {(d.affiliate_id, d.currency) for d in result.differences}
            paid, moves, carried = [], [], 0
            for (affiliate_id, currency), amount in sorted(owed.items()):
                row = payees.get(affiliate_id)
                if (affiliate_id, currency) in differ:
                    log.error("affiliates: %s not paid: its books differ", affiliate_id)
                    carried += 1
                    continue
                if row is None or amount < self.config.min_payout:
                    carried += amount != 0
                    continue
                payout = PaidOut(
                    id=f"{run_id}:{affiliate_id}:{currency}",
                    affiliate_id=affiliate_id,
                    amount=amount,
                    currency=currency,
                    rail=row.payout_rail,
                )
                paid.append(payout)
                moves.append(
                    Move(
                        id=f"affiliate-payout:{payout.id}",
                        debit=payable(affiliate_id, currency),
                        credit=f"cash:{row.payout_rail}:{currency}",
                        amount=amount,
                        reference=payout.id,
                    )
                )
            if paid:
                await books.open_accounts(
                    conn, [a for c in {p.currency for p in paid} for a in books.chart(c)]
                )
                for start in range(0, len(moves), 2_000):  # bounded lock and lookup lists
                    await books.transfer_many(conn, moves[start : start + 2_000])
                await conn.execute(
                    affiliate_payouts.insert(),
                    [
                        {
                            **msgspec.structs.asdict(p),
                            "run_id": run_id,
                            "destination": payees[p.affiliate_id].payout_destination,
                            "ts_ns": now,
                            "day": day_of(now).isoformat(),
                        }
                        for p in paid
                    ],
                )
        return PayoutRun(run_id=run_id, paid=paid, carried=carried)

    async def reconcile(self) -> Reconciliation:
        """Accrued minus paid against the books, per affiliate and in total; a difference
        raises an alert on the risk hub."""
        await self.start()
        async with self.engine.connect() as conn:
            await store.snapshot(conn)
            result = await store.reconcile(conn)
        if not result.ok:
            log.error("affiliate reconciliation: %d differences", len(result.differences))
            if self.hub is not None:
                try:
                    await self.hub.affiliate_mismatch.remote(
                        [msgspec.to_builtins(d) for d in result.differences]
                    )
                except Exception:
                    log.exception("affiliates: the risk hub was not told of the differences")
        return result

    async def tick(self, now_ns: int | None = None) -> Tick:
        """Accrue; yesterday's statements if not written; the week's payouts on the payout
        day; reconcile."""
        now = time.time_ns() if now_ns is None else now_ns
        accrued = await self.accrue()
        yesterday = day_of(now) - datetime.timedelta(days=1)
        async with self.engine.connect() as conn:
            last = await conn.scalar(select(func.max(affiliate_statements.c.day)))
        # from the last day written (again: sales accrued since may belong to it) to yesterday,
        # at most a month back
        first = max(
            datetime.date.fromisoformat(last) if last else yesterday,
            yesterday - datetime.timedelta(days=31),
        )
        written = None
        day = first
        while day <= yesterday:
            written = (await self.run_statements(day)).day
            day += datetime.timedelta(days=1)
        run_id = None
        today = day_of(now)
        if today.weekday() == self.config.payout_weekday:
            year, week, _ = today.isocalendar()
            run_id = f"{year}-W{week:02d}"
            await self.run_payouts(run_id, now)
        reconciled = (await self.reconcile()).ok
        return Tick(
            accrued=accrued.events, statements=written, payout_run=run_id, reconciled=reconciled
        )

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                await self.tick()
            except Exception:
                log.exception("affiliates: the tick failed")


class _Batch:
    """One batch of sale events: what it reads up front, what each event adds, what it
    writes at the end."""

    def __init__(self, config: AffiliateConfig, conn: AsyncConnection) -> None:
        self.config = config
        self.conn = conn
        self.lines: list[Line] = []
        self.excluded: list[str] = []
        self.skipped: list[str] = []
        self.attributions: dict[str, str | None] = {}
        self.new_attributions: list[dict[str, Any]] = []
        self.affiliates: dict[str, Affiliate] = {}
        self.plans: dict[str, list[tuple[int, PlanInForce]]] = {}
        self.volumes: dict[tuple[str, str, str], int] = {}  # (affiliate, month, currency)
        self.touched_volumes: set[tuple[str, str, str]] = set()
        self.seq_of: dict[str, int] = {}
        self.earned: dict[str, list[Line]] = defaultdict(list)  # purchase -> positive lines
        self.clawed: dict[str, dict[str, int]] = defaultdict(dict)  # purchase -> line -> taken
        self.refunded: dict[str, int] = {}
        self.purchases: dict[str, int] = {}  # purchase -> amount

    async def load(self, sales: Sequence[Sale]) -> None:
        conn = self.conn
        trader_ids = sorted({s.trader_id for s in sales})
        for start in range(0, len(trader_ids), 1_000):
            part = trader_ids[start : start + 1_000]
            c = affiliate_attributions.c
            found = await conn.execute(
                select(c.trader_id, c.affiliate_id, c.excluded).where(c.trader_id.in_(part))
            )
            # an excluded referral is recorded with its affiliate, and credits no one
            self.attributions.update({t: a if x is None else None for t, a, x in found})
        self.plans = await store.plans_in_force(conn)
        self.seq_of = {s.event_id: s.seq for s in sales}
        months = sorted({month_of(s.ts_ns) for s in sales if s.kind == "purchase"})
        v = affiliate_volumes.c
        for a, m, cur, volume in await conn.execute(
            select(v.affiliate_id, v.month, v.currency, v.volume).where(v.month.in_(months))
        ):
            self.volumes[(a, m, cur)] = int(volume)
        await self._load_affiliates(
            {a for a in self.attributions.values() if a is not None}
            | await self._touched([t for t in trader_ids if t not in self.attributions])
        )
        reversals = sorted({s.purchase_id for s in sales if s.kind != "purchase"})
        for start in range(0, len(reversals), 1_000):
            part = reversals[start : start + 1_000]
            for row in await conn.execute(
                select(affiliate_lines).where(affiliate_lines.c.purchase_id.in_(part))
            ):
                line = _line_of(row)
                if line.amount > 0:
                    self.earned[line.purchase_id].append(line)
                elif line.reverses is not None:
                    taken = self.clawed[line.purchase_id]
                    taken[line.reverses] = taken.get(line.reverses, 0) - line.amount
            e = sale_events.c
            accrued_before = (e.kind == "purchase") | e.accrued_ns.is_not(None)
            for purchase_id, kind, total in await conn.execute(
                select(e.purchase_id, e.kind, func.sum(e.amount))
                .where(e.purchase_id.in_(part), accrued_before)  # this batch's: not yet
                .group_by(e.purchase_id, e.kind)
            ):
                if kind == "purchase":
                    self.purchases[purchase_id] = int(total)
                else:
                    self.refunded[purchase_id] = self.refunded.get(purchase_id, 0) + int(total)

    async def _touched(self, trader_ids: list[str]) -> set[str]:
        """Load the touches of traders not attributed yet; the affiliates they name."""
        self.touches: dict[str, list[Touch]] = defaultdict(list)
        self.people: dict[str, tuple[str, list[str]]] = {}  # trader -> (email, destinations)
        conn = self.conn
        for start in range(0, len(trader_ids), 1_000):
            part = trader_ids[start : start + 1_000]
            for row in await conn.execute(
                select(affiliate_touches).where(affiliate_touches.c.trader_id.in_(part))
            ):
                self.touches[row.trader_id].append(
                    Touch(affiliate_id=row.affiliate_id, code=row.code, ts_ns=row.ts_ns)
                )
            signed = (
                select(
                    traders.c.id,
                    traders.c.email,
                    traders.c.created_ns,
                    affiliate_codes.c.code,
                    affiliate_codes.c.affiliate_id,
                )
                .outerjoin(affiliate_codes, affiliate_codes.c.code == traders.c.affiliate_code)
                .where(traders.c.id.in_(part))
            )
            for row in await conn.execute(signed):
                self.people[row.id] = (row.email, [])
                if row.affiliate_id is not None:  # the code given at signup is a touch
                    self.touches[row.id].append(
                        Touch(affiliate_id=row.affiliate_id, code=row.code, ts_ns=row.created_ns)
                    )
            for trader_id, destination in await conn.execute(
                select(payouts.c.trader_id, payouts.c.destination)
                .where(payouts.c.trader_id.in_(part))
                .distinct()
            ):
                self.people.setdefault(trader_id, ("", []))[1].append(destination)
        return {t.affiliate_id for found in self.touches.values() for t in found}

    async def _load_affiliates(self, wanted: set[str]) -> None:
        for _ in range(self.config.max_depth + 1):
            missing = sorted(wanted - set(self.affiliates))
            if not missing:
                return
            for start in range(0, len(missing), 1_000):
                part = missing[start : start + 1_000]
                for row in await self.conn.execute(
                    select(affiliates).where(affiliates.c.id.in_(part))
                ):
                    self.affiliates[row.id] = Affiliate(
                        id=row.id,
                        email=row.email,
                        parent_id=row.parent_id,
                        plan_id=row.plan_id,
                        trader_id=row.trader_id,
                        payout_destination=row.payout_destination,
                    )
            wanted = {a.parent_id for a in self.affiliates.values() if a.parent_id is not None}

    def apply(self, sale: Sale) -> None:
        try:
            if sale.kind == "purchase":
                self._purchase(sale)
            else:
                self._reversal(sale)
        except PlanError as exc:
            log.warning("affiliates: no commission for %s: %s", sale.event_id, exc)
            self.skipped.append(sale.event_id)

    def _purchase(self, sale: Sale) -> None:
        self.purchases[sale.purchase_id] = sale.amount
        first = sale.trader_id not in self.attributions
        if first:
            self._attribute(sale)
        affiliate_id = self.attributions.get(sale.trader_id)
        if affiliate_id is None:
            return
        chain = self._chain(affiliate_id, sale.ts_ns)
        if not chain:
            self.skipped.append(sale.event_id)
            log.warning("affiliates: no plan in force for %s at %s", affiliate_id, sale.event_id)
            return
        key = (affiliate_id, month_of(sale.ts_ns), sale.currency)
        volume = self.volumes.get(key, 0)
        made = accrue(sale, chain, first, volume)
        self.volumes[key] = volume + sale.amount
        self.touched_volumes.add(key)
        self.lines += made
        self.earned[sale.purchase_id] += made

    def _attribute(self, sale: Sale) -> None:
        window = int(self.config.window_days * DAY_NS)
        touch = attribute(
            self.touches.get(sale.trader_id, []), sale.ts_ns, window, self.config.model
        )
        excluded = None
        if touch is not None:
            affiliate = self.affiliates.get(touch.affiliate_id)
            email, destinations = self.people.get(sale.trader_id, ("", []))
            if affiliate is not None:
                excluded = self_referral(
                    email,
                    sale.trader_id,
                    destinations,
                    affiliate.email,
                    affiliate.trader_id,
                    affiliate.payout_destination,
                )
            if excluded is not None:
                self.excluded.append(sale.trader_id)
                log.warning(
                    "affiliates: referral of %s by %s excluded: %s",
                    sale.trader_id,
                    touch.affiliate_id,
                    excluded,
                )
        credited = touch.affiliate_id if touch is not None and excluded is None else None
        self.attributions[sale.trader_id] = credited
        self.new_attributions.append(
            {
                "trader_id": sale.trader_id,
                "affiliate_id": touch.affiliate_id if touch is not None else None,
                "code": touch.code if touch is not None else None,
                "touched_ns": touch.ts_ns if touch is not None else None,
                "excluded": excluded,
                "decided_ns": sale.ts_ns,
            }
        )

    def _chain(self, affiliate_id: str, ts_ns: int) -> list[tuple[str, PlanInForce]]:
        chain: list[tuple[str, PlanInForce]] = []
        current: str | None = affiliate_id
        while current is not None and len(chain) <= self.config.max_depth:
            affiliate = self.affiliates.get(current)
            if affiliate is None:
                break
            plan = in_force(self.plans.get(affiliate.plan_id, []), ts_ns)
            if plan is None:
                if not chain:
                    return []  # the referrer has no plan in force: nothing is earned
                break
            chain.append((current, plan))
            current = affiliate.parent_id
        return chain

    def _reversal(self, sale: Sale) -> None:
        amount = self.purchases.get(sale.purchase_id)
        if amount is None:
            self.skipped.append(sale.event_id)
            log.warning("affiliates: %s reverses an unknown purchase", sale.event_id)
            return
        before = self.refunded.get(sale.purchase_id, 0)
        taken = self.clawed[sale.purchase_id]
        made = claw_back(sale, self.earned.get(sale.purchase_id, []), taken, amount, before)
        for line in made:
            assert line.reverses is not None
            taken[line.reverses] = taken.get(line.reverses, 0) - line.amount
        self.refunded[sale.purchase_id] = before + sale.amount
        self.lines += made

    async def write(self, first_seq: int, last_seq: int) -> None:
        """Everything the batch made, and its ledger transfers (named by its seq range)."""
        conn = self.conn
        if self.new_attributions:
            await conn.execute(affiliate_attributions.insert(), self.new_attributions)
        if self.touched_volumes:
            rows = [
                {"affiliate_id": a, "month": m, "currency": c, "volume": self.volumes[(a, m, c)]}
                for a, m, c in sorted(self.touched_volumes)
            ]
            insert = dialect_insert(conn.engine, affiliate_volumes)
            await conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["affiliate_id", "month", "currency"],
                    set_={"volume": insert.excluded.volume},
                ),
                rows,
            )
        if not self.lines:
            return
        await conn.execute(
            affiliate_lines.insert(),
            [
                {
                    **msgspec.structs.asdict(line),
                    "seq": self.seq_of[line.event_id],
                    "day": day_of(line.ts_ns).isoformat(),
                }
                for line in self.lines
            ],
        )
        net: dict[tuple[str, str], int] = defaultdict(int)
        for line in self.lines:
            net[(line.affiliate_id, line.currency)] += line.amount
        wanted: list[LedgerAccount] = [
            LedgerAccount(
                id=f"{EXPENSE}:{c}", kind=Kind.EXPENSE, currency=c, name="Affiliate commissions"
            )
            for c in sorted({c for _, c in net})
        ] + [payable_account(a, c) for a, c in sorted(net)]
        await books.open_accounts(conn, wanted)
        moves = []
        for (affiliate_id, currency), amount in sorted(net.items()):
            if amount == 0:
                continue
            expense, owed = f"{EXPENSE}:{currency}", payable(affiliate_id, currency)
            moves.append(
                Move(
                    id=f"affiliate-accrual:{first_seq}-{last_seq}:{affiliate_id}:{currency}",
                    debit=expense if amount > 0 else owed,
                    credit=owed if amount > 0 else expense,
                    amount=abs(amount),
                    reference=affiliate_id,
                )
            )
        if moves:
            await books.transfer_many(conn, moves)


def _line_of(row: Any) -> Line:
    return Line(
        id=row.id,
        affiliate_id=row.affiliate_id,
        trader_id=row.trader_id,
        purchase_id=row.purchase_id,
        event_id=row.event_id,
        kind=row.kind,
        level=row.level,
        basis=int(row.basis),
        rate_bp=row.rate_bp,
        amount=int(row.amount),
        currency=row.currency,
        plan_id=row.plan_id,
        plan_version=row.plan_version,
        ts_ns=int(row.ts_ns),
        reverses=row.reverses,
    )


async def _run(conn: AsyncConnection, run_id: str) -> list[PaidOut]:
    c = affiliate_payouts.c
    rows = await conn.execute(
        select(c.id, c.affiliate_id, c.amount, c.currency, c.rail)
        .where(c.run_id == run_id)
        .order_by(c.id)
    )
    return [
        PaidOut(
            id=r.id,
            affiliate_id=r.affiliate_id,
            amount=int(r.amount),
            currency=r.currency,
            rail=r.rail,
        )
        for r in rows
    ]


RemoteAffiliateSupervisor: Any = ray.remote(AffiliateSupervisor)


def start_affiliates(
    database_url: str, config: AffiliateConfig | None = None, hub: Any = None
) -> Any:
    """The affiliate supervisor as a Ray actor, restarted by Ray if it dies (its state is in
    the database)."""
    handle = RemoteAffiliateSupervisor.options(
        max_restarts=-1, max_task_retries=-1, max_concurrency=100
    ).remote(database_url, config, hub)
    handle.start.remote()
    return handle
