"""The payout supervisor: decides payout requests against the written checklist, pays the
approved ones through the payment provider, and keeps the books.

Requests are decided in batches (group commit): the requests that arrive while one batch is
being decided form the next. For a batch it asks each shard once for its accounts' state, reads
the registry, the earlier payouts, the KYC tiers and the shared-signal matches in one query
each, decides every request in arrival order (a request sees the ones before it in the batch),
and writes the payouts, their ledger transfers and audit records in one transaction. Only then
are the callers answered, so an answer is never lost to a crash: a caller whose supervisor died
is retried by Ray (`max_task_retries=-1`) against the restarted one, which finds the payout by
its request key or decides it then.

Lifecycle (`docs/payouts.md`): `held` (KYC short; the KYC tier is asked for) | `review` |
`approved` | `rejected`; approved -> `sent` (ledger: pending transfer from payable to the rail's
cash) -> `settled` (posted, the platform balance reduced through the bridge's balance lane) or
`failed` (voided; sent again after `retry_s`, up to `max_attempts`, then back to review).

The supervisor keeps what is unfinished in memory and every step in the database (the payout
row and an audit record); on start it reloads the unfinished payouts and carries each on from
the step it reached.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import ray
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from actors.kyc_policy import Clearance
from actors.payments import (
    PaymentOrder,
    PaymentProvider,
    PaymentRefused,
    PaymentUpdate,
    PayoutPolicy,
    ProviderConfig,
    SimulatedProvider,
)
from actors.payout_checks import AccountFacts, Decision, Earlier, Registered, Request, decide
from actors.router import Router
from bridge.codec import encode_batch
from bridge.commands import OperateBalance
from bridge.events import BalanceKind
from bridge.liveness import Pulse, pulse
from bridge.platform import DONE
from ledger import audit, books, kyc
from ledger import payouts as store
from ledger.audit import AuditRecord
from ledger.database import create_engine
from ledger.money import exponent
from ledger.payouts import Payout, Status
from ledger.schema import accounts, traders

log = logging.getLogger(__name__)


class PayoutConfig(msgspec.Struct, frozen=True, kw_only=True):
    policy: PayoutPolicy = PayoutPolicy()
    provider: ProviderConfig = ProviderConfig()
    batch_wait_s: float = 0.005  # gather the requests arriving this long after the first
    max_batch: int = 2_000
    recheck_s: float = 2.0  # how often held payouts are checked against KYC again
    reset_timeout_s: float = 30.0  # how long a platform balance reset waits for the bridge


class Desk(msgspec.Struct, kw_only=True):
    """Per platform connection, its shards (with their router) and its bridge worker."""

    shards: dict[str, list[Any]]
    routers: dict[str, Router]
    workers: dict[str, Any]


def desk_of(runtime: Any) -> Desk:
    """The desk of a started `actors.runtime.Runtime`."""
    cells = runtime.cells.values()
    return Desk(
        shards={c.connection: c.shards for c in cells},
        routers=dict(runtime.routers),
        workers={c.connection: c.worker for c in cells},
    )


class Who(msgspec.Struct, frozen=True, kw_only=True):
    """Who takes a step, for its audit record."""

    actor: str
    role: str
    request_id: str = ""


SUPERVISOR = Who(actor="payout-supervisor", role="system")


class PayoutError(Exception):
    """A step refused (the payout is unknown, or not in a state that allows it)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def __reduce__(self) -> tuple[type[PayoutError], tuple[str, str]]:
        return type(self), (self.code, self.detail)


class PayoutStats(msgspec.Struct, kw_only=True):
    """What the supervisor has decided since it started, and the time it spent doing it."""

    requests: int = 0  # decided or answered from an earlier decision
    batches: int = 0
    largest_batch: int = 0
    deciding_s: float = 0.0  # wall time inside decision batches (facts, checks, commit)


class Submitted(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a payout request: the payout as it stands, and `replayed`: the key had
    made the payout before this call was decided, so this call changed nothing. The earlier
    maker is another request under the key, or this very call, decided and committed by a
    supervisor that died before answering (Ray resends the call to its successor)."""

    payout: Payout
    replayed: bool


class ResetRefused(Exception):
    """The platform answered a balance reset with a refusal (not a time-out)."""


REVIEWED = "review"
"""The reason a payout held for KYC keeps when finance had it in review before."""


class _Pending(msgspec.Struct):
    request: Request
    future: asyncio.Future[Submitted]


class PayoutSupervisor:
    def __init__(
        self,
        database_url: str,
        desk: Desk,
        config: PayoutConfig | None = None,
        provider: PaymentProvider | None = None,
    ) -> None:
        self.engine = create_engine(database_url)
        self.desk = desk
        self.config = config or PayoutConfig()
        self.policy = self.config.policy
        self.provider = provider or SimulatedProvider(self.config.provider, self.payment_update)
        self.inbox: list[_Pending] = []
        self.arrived = asyncio.Event()
        self.updates: list[PaymentUpdate] = []
        self.updated = asyncio.Event()
        self.open: dict[str, Payout] = {}  # unfinished payouts, by id
        # a held payout's trader's tier when held, and whether a screening hit stood then
        # (unknown after a restart: taken as a hit, so a cleared one is looked at again)
        self.held_at: dict[str, tuple[kyc.Tier, bool]] = {}
        self.stats = PayoutStats()
        self.resetting: set[str] = set()  # payouts whose platform balance reset is under way
        self.stuck: set[str] = set()  # payouts whose reset the platform refused
        # Two locks, always taken in this order. `deciding`: one decision batch at a time (a
        # batch must see the ones before it). `writing`: one change to existing payouts at a
        # time. A decision only inserts new payouts, and sending, settling or reviewing one
        # never changes what a decision reads of it (it stays not rejected, drawing its gross),
        # so money can move while requests are decided.
        self.deciding = asyncio.Lock()
        self.writing = asyncio.Lock()
        self.currencies: set[str] = set()  # whose chart of accounts is open
        self.tasks: set[asyncio.Task[Any]] = set()
        self.loops: list[asyncio.Task[None]] = []
        self.recovered: asyncio.Task[None] | None = None

    # -- life -------------------------------------------------------------------------------------

    async def ready(self) -> int:
        """Recover (once) and start working; how many unfinished payouts were reloaded."""
        if self.recovered is None or (
            self.recovered.done() and self.recovered.exception() is not None
        ):
            self.recovered = asyncio.create_task(self._recover())  # first, or after a failure
        await asyncio.shield(self.recovered)
        return len(self.open)

    async def _recover(self) -> None:
        async with self.engine.connect() as conn:
            found = await store.unfinished(conn)
        self.open = {p.id: p for p in found}
        self.loops = [
            asyncio.create_task(self._decide_forever()),
            asyncio.create_task(self._resolve_forever()),
            asyncio.create_task(self._recheck_forever()),
        ]
        if found:
            counts = Counter(p.status.value for p in found)
            log.info("payouts recovered: %d unfinished %s", len(found), dict(counts))
        sent = [p for p in found if p.status is Status.SENT]
        self._spawn(self._order(sent))  # the provider knows a reference it has seen
        self._sweep()  # sends the approved, retries the failed that are due, resets the settled

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("payout step failed", exc_info=task.exception())

    async def ping(self) -> Pulse:
        return pulse()

    async def counters(self) -> PayoutStats:
        return self.stats

    async def close(self) -> None:
        for task in [*self.loops, *self.tasks]:
            task.cancel()
        await asyncio.gather(*self.loops, *self.tasks, return_exceptions=True)
        await self.provider.close()
        await self.engine.dispose()

    async def idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until nothing is in flight: no request undecided, no payment unanswered, no
        retry or platform reset due (held and review payouts wait for people, not for us)."""
        await self.ready()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            busy = self.inbox or self.updates or self.tasks or any(
                p.status in (Status.APPROVED, Status.SENT, Status.FAILED)
                or (p.status is Status.SETTLED and not p.reset and p.id not in self.stuck)
                for p in self.open.values()
            )  # fmt: skip
            if not busy:
                return True
            await asyncio.sleep(0.05)
        return False

    # -- requests ---------------------------------------------------------------------------------

    async def submit(self, request: Request) -> Submitted:
        """Decide a payout request. The same `key` again answers the payout it made, as it
        stands now (`replayed`); under another request it is refused (`key_reused`)."""
        await self.ready()
        future: asyncio.Future[Submitted] = asyncio.get_running_loop().create_future()
        self.inbox.append(_Pending(request, future))
        self.arrived.set()
        return await future

    async def _decide_forever(self) -> None:
        while True:
            await self.arrived.wait()
            await asyncio.sleep(self.config.batch_wait_s)
            batch = self.inbox[: self.config.max_batch]
            del self.inbox[: len(batch)]
            if not self.inbox:
                self.arrived.clear()
            started = time.perf_counter()
            try:
                await self._decide(batch)
                self.stats.requests += len(batch)
                self.stats.batches += 1
                self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
                self.stats.deciding_s += time.perf_counter() - started
            except Exception as exc:
                log.exception("deciding %d payout requests failed", len(batch))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(
                            PayoutError("unavailable", f"the request could not be decided: {exc}")
                        )

    async def _decide(self, batch: list[_Pending]) -> None:
        first: dict[str, Request] = {}
        for pending in batch:
            first.setdefault(pending.request.key, pending.request)
        async with self.deciding:
            async with self.engine.connect() as conn:
                done = await store.by_keys(conn, first)
            fresh = [r for key, r in first.items() if key not in done]
            made = await self._evaluate(fresh)
            async with self.engine.begin() as conn:
                await self._record_decisions(conn, made, {r.key: r.request_id for r in fresh})
            self.currencies |= {p.currency for p, _ in made if p.status is Status.APPROVED}
        for payout, decision in made:
            if payout.status is Status.HELD:
                self.held_at[payout.id] = (decision.tier, decision.screening_hit)
            done[payout.request_key] = payout
            if payout.status is not Status.REJECTED:
                self.open[payout.id] = payout
        made_now = {p.request_key for p, _ in made}
        for pending in batch:
            payout = done[pending.request.key]
            # The first request of a key in this batch made its payout; any other only met it.
            replayed = payout.request_key not in made_now
            made_now.discard(payout.request_key)
            if pending.future.done():
                continue
            if _asked(payout) != _asked_of(pending.request):
                pending.future.set_exception(
                    PayoutError(
                        "key_reused",
                        f"the key was used for payout {payout.id}, a different request",
                    )
                )
            else:
                pending.future.set_result(Submitted(payout=payout, replayed=replayed))
        approved = [p for p, _ in made if p.status is Status.APPROVED]
        if approved:
            self._spawn(self._send(approved))

    async def _evaluate(
        self, requests: list[Request], exclude: frozenset[str] = frozenset()
    ) -> list[tuple[Payout, Decision]]:
        """Gather every fact the batch needs, then decide each request in order (payouts in
        `exclude` are the ones being decided again: they are not their own earlier payout)."""
        if not requests:
            return []
        ids = {r.account_id for r in requests}
        async with self.engine.connect() as conn:
            registered = await _registered(conn, ids)
            # The shards answer while the database does: both take milliseconds.
            asked = asyncio.ensure_future(self._facts(registered))
            try:
                earlier = await store.of_accounts(conn, ids)
                trader_ids = {r.trader_id for r in registered.values()}
                paid = await store.paid_by_traders(conn, trader_ids, exclude)
                tiers = await kyc.tiers(conn, trader_ids)
                blocked = await kyc.blocked(conn, trader_ids)
                signals = await store.sharing(
                    conn,
                    [r.destination for r in requests],
                    [r.device for r in requests],
                    [r.ip for r in requests],
                )
            finally:
                facts = await asked
        history: dict[str, list[Earlier]] = defaultdict(list)
        for p in earlier:
            if p.id not in exclude:
                history[p.account_id].append(_earlier(p))
        seen = [(s.trader_id, s.destination, s.device, s.ip) for s in signals]
        now = time.time_ns()
        made = []
        for request in requests:
            row = registered.get(request.account_id)
            trader = row.trader_id if row is not None else ""
            decision = decide(
                request,
                facts.get(request.account_id),
                row,
                history[request.account_id],
                tiers.get(trader, kyc.Tier.NONE),
                _shared(request, trader, seen),
                self.policy,
                now,
                trader_paid=paid.get((trader, request.currency), 0),
                screening_hit=trader in blocked,
            )
            payout = _payout(request, row, decision, now)
            made.append((payout, decision))
            seen.append((trader, request.destination, request.device, request.ip))
            if payout.status is not Status.REJECTED:
                history[request.account_id].append(_earlier(payout))
                key = (trader, request.currency)
                paid[key] = paid.get(key, 0) + payout.amount
        return made

    async def _facts(self, registered: dict[str, Registered]) -> dict[str, AccountFacts]:
        by_shard: dict[tuple[str, int], list[str]] = defaultdict(list)
        for row in registered.values():
            router = self.desk.routers.get(row.connection)
            if router is not None:
                by_shard[(row.connection, router.shard_of(row.account_id))].append(row.account_id)
        asked = [
            self.desk.shards[connection][index].payout_facts.remote(ids)
            for (connection, index), ids in by_shard.items()
        ]
        found: dict[str, AccountFacts] = {}
        for part in await asyncio.gather(*asked):
            found.update(part)
        return found

    async def _record_decisions(
        self,
        conn: AsyncConnection,
        made: list[tuple[Payout, Decision]],
        request_ids: dict[str, str],
    ) -> None:
        await store.insert(conn, [p for p, _ in made])
        records = []
        moves = []
        for payout, decision in made:
            who = msgspec.structs.replace(
                SUPERVISOR, request_id=request_ids.get(payout.request_key, "")
            )
            records.append(_record(payout, "payout.request", who, after=_summary(payout)))
            records.append(_decided(payout, who))
            if payout.status is Status.APPROVED:
                moves.append(_accrual(payout))
            elif payout.status is Status.HELD:
                await kyc.request(conn, payout.trader_id, decision.tier_needed)
        if moves:
            await self._books(conn, {m.debit.rsplit(":", 1)[1] for m in moves})
            await books.transfer_many(conn, moves)
        await audit.append(conn, records)

    async def _books(self, conn: AsyncConnection, currencies: set[str]) -> None:
        """Open the chart of accounts of currencies not known open (`open_accounts` skips the
        ones that are); `self.currencies` learns them only once the transaction commits."""
        for currency in sorted(currencies - self.currencies):
            await books.open_accounts(conn, books.chart(currency))

    # -- people: finance's review, KYC's verdict --------------------------------------------------

    async def review(self, payout_id: str, approve: bool, reason: str, who: Who) -> Payout:
        """Finance approves or rejects a payout in review, with a reason (audited)."""
        await self.ready()
        async with self.writing:
            payout = self.open.get(payout_id)
            if payout is None or payout.status is not Status.REVIEW:
                raise await self._not_in_review(payout_id, payout)
            if approve and payout.rail is None:
                raise PayoutError(
                    "conflict", f"payout {payout_id} has no rail to be paid by: reject it"
                )
            if approve:
                async with self.engine.connect() as conn:
                    blocked = await kyc.blocked(conn, [payout.trader_id])
                if blocked:  # a screening hit arrived after the decision: compliance first
                    raise PayoutError(
                        "conflict",
                        f"trader {payout.trader_id} has a screening hit not cleared: "
                        "compliance must clear it before this payout is approved",
                    )
            status = Status.APPROVED if approve else Status.REJECTED
            after = msgspec.structs.replace(payout, status=status, updated_ns=time.time_ns())
            # Approval owes the trader the amount; a rejection after payments failed (the
            # amount was owed since its first approval) takes the debt back.
            owed_before = payout.attempts > 0  # sent at least once, so approved before
            moves = [_accrual(after)] if approve else [_reversal(after)] if owed_before else []
            action = "payout.approve" if approve else "payout.reject"
            record = _record(
                after, action, who, _summary(payout), _summary(after) | {"reason": reason}
            )
            await self._commit([after], moves=moves, records=[record])
        if approve:
            self._spawn(self._send([after]))
        return after

    async def _not_in_review(self, payout_id: str, payout: Payout | None) -> PayoutError:
        if payout is None:
            async with self.engine.connect() as conn:
                payout = await store.load(conn, payout_id)
        if payout is None:
            return PayoutError("not_found", f"no payout {payout_id!r}")
        return PayoutError("conflict", f"payout {payout_id} is {payout.status.value}, not review")

    async def clearance(self, trader_id: str, amount: int, currency: str) -> Clearance:
        """Is the trader cleared, by KYC, for a payout of `amount` (minor units of `currency`)
        now? Answered from the case as the checklist would: the effective tier, a screening
        hit, the trader's payouts in `currency` so far and the policy of its jurisdiction."""
        async with self.engine.connect() as conn:
            found = (
                await conn.execute(select(traders.c.country).where(traders.c.id == trader_id))
            ).first()
            if found is None:
                raise PayoutError("not_found", f"no trader {trader_id!r}")
            tier = (await kyc.tiers(conn, [trader_id]))[trader_id]
            hit = bool(await kyc.blocked(conn, [trader_id]))
            paid = await store.paid_by_traders(conn, [trader_id])
        before = paid.get((trader_id, currency), 0)
        return self.policy.kyc.clearance(found.country or None, tier, amount, before, hit)

    async def kyc_changed(self, trader_id: str) -> list[Payout]:
        """The trader's KYC standing changed (a verification, a screening hit or its clearing):
        decide again its payouts held for KYC, and hold those waiting in review that are now
        short of it (a review is otherwise left to finance). The payouts changed."""
        await self.ready()
        waiting = [
            p
            for p in self.open.values()
            if p.trader_id == trader_id and p.status in (Status.HELD, Status.REVIEW)
        ]
        return await self._redecide(waiting)

    async def _recheck_forever(self) -> None:
        """Every `recheck_s`: decide again the held payouts whose trader's tier rose, and
        carry on any step a failure left undone (a send, a due retry, a balance reset)."""
        while True:
            await asyncio.sleep(self.config.recheck_s)
            try:
                await self._recheck_held()
                self._sweep()
            except Exception:
                log.exception("re-checking unfinished payouts failed")

    async def _recheck_held(self) -> None:
        held = [p for p in self.open.values() if p.status is Status.HELD]
        if not held:
            return
        traders = {p.trader_id for p in held}
        async with self.engine.connect() as conn:
            tiers = await kyc.tiers(conn, traders)
            blocked = await kyc.blocked(conn, traders)
        due = []
        for p in held:
            tier, hit = self.held_at.get(p.id, (kyc.Tier.NONE, True))
            if tiers[p.trader_id].rank > tier.rank or (hit and p.trader_id not in blocked):
                due.append(p)
        await self._redecide(due)

    def _sweep(self) -> None:
        """Start again what nothing is doing: `_send` and `_reset` check, under the lock or
        their own set, that the step is still due, so a second start is harmless."""
        now = time.time_ns()
        retry_ns = self.policy.retry_s * 1e9
        due = [
            p
            for p in self.open.values()
            if p.status is Status.APPROVED
            or (p.status is Status.FAILED and now - p.updated_ns >= retry_ns)
        ]
        if due:
            self._spawn(self._send(due))
        for p in self.open.values():
            if p.status is Status.SETTLED and not p.reset:
                self._spawn(self._reset(p.id))

    async def _redecide(self, held: list[Payout]) -> list[Payout]:
        """Run the checklist again for held payouts (and payouts in review, which change only
        if KYC now holds them), each keeping its id and request."""
        if not held:
            return []
        async with self.deciding, self.writing:
            waiting = (Status.HELD, Status.REVIEW)
            held = [p for p in held if self.open.get(p.id) is p and p.status in waiting]
            requests = [_request_of(p) for p in held]
            evaluated = await self._evaluate(requests, frozenset(p.id for p in held))
            still = [
                (payout, pair)
                for payout, pair in zip(held, evaluated, strict=True)
                if payout.status is Status.HELD or pair[0].status is Status.HELD
            ]
            held = [payout for payout, _ in still]
            made = [pair for _, pair in still]
            changed = []
            records = []
            moves = []
            asks = []
            for payout, (fresh, decision) in zip(held, made, strict=True):
                if fresh.status is Status.HELD:
                    asks.append((payout.trader_id, decision.tier_needed))
                kept = {"id", "request_key", "created_ns", "attempts", "provider_ref", "reset"}
                after = msgspec.structs.replace(
                    fresh, **{name: getattr(payout, name) for name in kept}
                )
                # A payout finance had in review goes back to review, not past it: held for
                # KYC meanwhile, it keeps `review` among its reasons.
                from_review = payout.status is Status.REVIEW or REVIEWED in payout.reasons
                if from_review and after.status is Status.HELD:
                    after = msgspec.structs.replace(after, reasons=[*after.reasons, REVIEWED])
                elif from_review:
                    reasons = [r for r in after.reasons if r != REVIEWED] or [REVIEWED]
                    after = msgspec.structs.replace(after, status=Status.REVIEW, reasons=reasons)
                changed.append(after)
                records.append(_decided(after, SUPERVISOR, before=_summary(payout)))
                if after.status is Status.APPROVED:
                    moves.append(_accrual(after))
            await self._commit(changed, moves=moves, records=records, asks=asks)
            for payout, (_, decision) in zip(changed, made, strict=True):
                self.held_at[payout.id] = (decision.tier, decision.screening_hit)
        approved = [p for p in changed if p.status is Status.APPROVED]
        if approved:
            self._spawn(self._send(approved))
        return changed

    # -- money out --------------------------------------------------------------------------------

    async def _send(self, approved: Sequence[Payout]) -> None:
        """Hold each payout's amount and fee as pending transfers to its rail's cash, mark it
        sent (one transaction), then give the orders to the provider."""
        if not approved:
            return
        async with self.writing:
            now = time.time_ns()
            ready = []
            records = []
            moves = []
            for given in approved:
                payout = self.open.get(given.id)
                if payout is None or payout.status not in (Status.APPROVED, Status.FAILED):
                    continue
                after = msgspec.structs.replace(
                    payout, status=Status.SENT, attempts=payout.attempts + 1, updated_ns=now
                )
                ready.append(after)
                moves += _sending(after)
                records.append(
                    _record(after, "payout.send", SUPERVISOR, _summary(payout), _summary(after))
                )
            if ready:
                await self._commit(ready, moves=moves, records=records)
        await self._order(ready)

    async def _order(self, sent: Sequence[Payout]) -> None:
        async def one(payout: Payout) -> None:
            order = PaymentOrder(
                reference=payout.reference,
                rail=payout.rail or "",
                amount=payout.amount,
                currency=payout.currency,
                destination=payout.destination,
            )
            try:
                await self.provider.send(order)
            except PaymentRefused as exc:
                update = PaymentUpdate(
                    reference=order.reference,
                    provider_ref="",
                    status="failed",
                    reason=f"refused: {exc}",
                    ts_ns=time.time_ns(),
                )
                await self.payment_update(update)

        await asyncio.gather(*(one(p) for p in sent))

    async def payment_update(self, update: PaymentUpdate) -> None:
        """A provider's webhook. Duplicates, late ones (a superseded attempt) and ones for
        payouts already resolved change nothing."""
        await self.ready()
        self.updates.append(update)
        self.updated.set()

    async def _resolve_forever(self) -> None:
        while True:
            await self.updated.wait()
            await asyncio.sleep(self.config.batch_wait_s)
            batch, self.updates = self.updates, []
            self.updated.clear()
            try:
                await self._resolve(batch)
            except Exception:
                log.exception("applying %d payment updates failed; kept for a retry", len(batch))
                self.updates[:0] = batch
                await asyncio.sleep(1.0)
                self.updated.set()

    async def _resolve(self, batch: list[PaymentUpdate]) -> None:
        async with self.writing:
            mine: dict[str, tuple[Payout, PaymentUpdate]] = {}
            for update in batch:
                payout = self.open.get(update.reference.rsplit(":", 1)[0])
                # resolved already, not ours, or an earlier attempt's late webhook: ignored
                if (
                    payout is not None
                    and payout.status is Status.SENT
                    and payout.reference == update.reference
                ):
                    mine.setdefault(payout.id, (payout, update))
            resolutions: list[books.Resolution] = []
            records = []
            changed = []
            for payout, update in mine.values():
                after, moves = self._answered(payout, update)
                changed.append(after)
                resolutions += moves
                action = "payout.settle" if update.status == "settled" else "payout.fail"
                note = {"provider": update.status, "reason": update.reason}
                records.append(
                    _record(after, action, SUPERVISOR, _summary(payout), _summary(after) | note)
                )
            if changed:
                await self._commit(changed, resolutions=resolutions, records=records)
        for payout in changed:
            if payout.status is Status.SETTLED:
                self._spawn(self._reset(payout.id))

    def _answered(
        self, payout: Payout, update: PaymentUpdate
    ) -> tuple[Payout, list[books.Resolution]]:
        """The payout after the provider's answer, and the resolutions of its pending
        transfers (posted if it settled, voided if it failed)."""
        settled = update.status == "settled"
        kind: Literal["post_pending", "void_pending"] = (
            "post_pending" if settled else "void_pending"
        )
        after = msgspec.structs.replace(
            payout,
            provider_ref=update.provider_ref or payout.provider_ref,
            updated_ns=time.time_ns(),
        )
        if settled:
            after.status = Status.SETTLED
        elif payout.attempts >= self.policy.max_attempts:
            after.status = Status.REVIEW
            kept = [r for r in payout.reasons if r != "payment_failed"]
            after.reasons = [*kept, "payment_failed"]
        else:
            after.status = Status.FAILED
        moves = [
            books.Resolution(id=f"{t.id}:{kind}", pending_id=t.id, kind=kind)
            for t in _sending(payout)
        ]
        return after, moves

    async def _commit(
        self,
        changed: Sequence[Payout],
        *,
        moves: Sequence[books.Move] = (),
        resolutions: Sequence[books.Resolution] = (),
        records: Sequence[AuditRecord] = (),
        asks: Sequence[tuple[str, kyc.Tier]] = (),
    ) -> None:
        """Write changed payouts with their transfers, audit records and KYC asks in one
        transaction, then (only then) take them as the payouts' state in memory (hold
        `writing`). Rejected rows go first: a payout decided again may move into the period
        a rejected one held."""
        currencies = {m.debit.rsplit(":", 1)[1] for m in moves}
        async with self.engine.begin() as conn:
            await store.save(conn, sorted(changed, key=lambda p: p.status is not Status.REJECTED))
            if moves:
                await self._books(conn, currencies)
                await books.transfer_many(conn, moves)
            if resolutions:
                await books.resolve_many(conn, resolutions)
            for trader_id, tier in asks:
                await kyc.request(conn, trader_id, tier)
            await audit.append(conn, records)
        self.currencies |= currencies
        for payout in changed:
            if payout.status is Status.REJECTED or (
                payout.status is Status.SETTLED and payout.reset
            ):
                self.open.pop(payout.id, None)
                self.held_at.pop(payout.id, None)
            else:
                self.open[payout.id] = payout

    async def _reset(self, payout_id: str) -> None:
        """Take the payout's gross profit off the platform account (the bridge's balance lane),
        once: the command id is the payout's, so a resend is the same operation. A platform
        that cannot be reached is asked again (backing off); one that refuses (no money left,
        say) is not: the refusal is audited and the payout waits for a person."""
        payout = self.open.get(payout_id)
        if payout is None or payout.reset or payout_id in self.resetting | self.stuck:
            return
        self.resetting.add(payout_id)
        try:
            await self._reset_once(payout)
        finally:
            self.resetting.discard(payout_id)

    async def _reset_once(self, payout: Payout) -> None:
        delay_s = 1.0
        while True:
            try:
                await self._withdraw(payout)
                break
            except ResetRefused as exc:
                log.error("balance reset of %s refused: %s", payout.id, exc)
                async with self.writing:
                    self.stuck.add(payout.id)
                    refusal: dict[str, Any] = {"refused": str(exc)}
                    record = _record(
                        payout, "payout.balance_reset_refused", SUPERVISOR, after=refusal
                    )
                    await self._commit([payout], records=[record])
                return
            except Exception as exc:
                log.warning("balance reset of %s failed (%s); trying again", payout.id, exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 60.0)
        async with self.writing:
            after = msgspec.structs.replace(payout, reset=True, updated_ns=time.time_ns())
            note = {"withdrawn": payout.gross}
            record = _record(
                after, "payout.balance_reset", SUPERVISOR, _summary(payout), _summary(after) | note
            )
            await self._commit([after], records=[record])

    async def _withdraw(self, payout: Payout) -> None:
        async with self.engine.connect() as conn:
            connection = await conn.scalar(
                select(accounts.c.connection).where(accounts.c.id == payout.account_id)
            )
        worker = self.desk.workers.get(connection or "")
        if worker is None:
            raise RuntimeError(f"no bridge for connection {connection!r}")
        command = OperateBalance(
            command_id=f"{payout.id}:reset",
            account_id=payout.account_id,
            kind=BalanceKind.WITHDRAWAL,
            amount_cents=payout.gross * 100 // 10 ** exponent(payout.currency),
            comment=f"payout {payout.id}",
        )
        codes: list[int] = await asyncio.wait_for(
            worker.execute.remote(encode_batch([command])), self.config.reset_timeout_s
        )
        if codes[0] != DONE:
            raise ResetRefused(f"the platform refused the withdrawal: code {codes[0]}")


# -- rows, records, transfers ----------------------------------------------------------------------


async def _registered(conn: AsyncConnection, ids: set[str]) -> dict[str, Registered]:
    query = (
        select(
            accounts.c.id,
            accounts.c.trader_id,
            accounts.c.status,
            accounts.c.connection,
            accounts.c.created_ns,
            traders.c.country,
        )
        .join(traders, traders.c.id == accounts.c.trader_id)
        .where(accounts.c.id.in_(sorted(ids)))
    )
    return {
        row.id: Registered(
            account_id=row.id,
            trader_id=row.trader_id,
            status=row.status,
            connection=row.connection,
            created_ns=row.created_ns,
            country=row.country,
        )
        for row in await conn.execute(query)
    }


def _shared(
    request: Request, trader: str, seen: list[tuple[str, str, str, str]]
) -> dict[str, list[str]]:
    """Other traders who used this request's destination, device or IP."""
    found: dict[str, set[str]] = defaultdict(set)
    for other, destination, device, ip in seen:
        if other == trader:
            continue
        for kind, mine, theirs in (
            ("destination", request.destination, destination),
            ("device", request.device, device),
            ("ip", request.ip, ip),
        ):
            if mine and mine == theirs:
                found[kind].add(other)
    return {kind: sorted(traders) for kind, traders in found.items()}


def _payout(request: Request, row: Registered | None, decision: Decision, now: int) -> Payout:
    rail = decision.rail
    return Payout(
        id="po_" + secrets.token_hex(8),
        request_key=request.key,
        trader_id=row.trader_id if row is not None else "",
        account_id=request.account_id,
        period=decision.period,
        currency=request.currency,
        amount=request.amount,
        gross=decision.gross,
        split_pct=decision.split_pct,
        status=decision.outcome,
        reasons=decision.reasons,
        checks=decision.checks,
        destination=request.destination,
        device=request.device,
        ip=request.ip,
        country=row.country if row is not None else "",
        rail=rail.rail if rail is not None else None,
        fee=rail.fee(request.amount) if rail is not None else 0,
        attempts=0,
        provider_ref=None,
        reset=False,
        created_ns=now,
        updated_ns=now,
    )


def _asked(payout: Payout) -> tuple[str, int, str, str, str, str]:
    """What a request asked for, as its payout holds it (to tell a resend from a key reused)."""
    return (
        payout.account_id,
        payout.amount,
        payout.currency,
        payout.destination,
        payout.device,
        payout.ip,
    )


def _asked_of(r: Request) -> tuple[str, int, str, str, str, str]:
    return (r.account_id, r.amount, r.currency, r.destination, r.device, r.ip)


def _request_of(payout: Payout) -> Request:
    return Request(
        key=payout.request_key,
        account_id=payout.account_id,
        amount=payout.amount,
        currency=payout.currency,
        destination=payout.destination,
        device=payout.device,
        ip=payout.ip,
    )


def _earlier(payout: Payout) -> Earlier:
    return Earlier(
        id=payout.id,
        period=payout.period,
        status=payout.status,
        amount=payout.amount,
        created_ns=payout.created_ns,
        gross=payout.gross,
        reset=payout.reset,
    )


def _move(
    payout: Payout, id: str, debit: str, credit: str, amount: int, *, pending: bool = False
) -> books.Move:
    """A transfer of the payout's, between ledger accounts named without their currency."""
    c = payout.currency
    return books.Move(
        id=id,
        debit=f"{debit}:{c}",
        credit=f"{credit}:{c}",
        amount=amount,
        pending=pending,
        reference=payout.id,
    )


def _accrual(payout: Payout) -> books.Move:
    """Approval: the firm owes the trader the amount (expense against payable)."""
    return _move(payout, f"{payout.id}:accrue", "payouts:expense", "payouts:payable", payout.amount)


def _reversal(payout: Payout) -> books.Move:
    """A rejection after approval: the amount is no longer owed."""
    return _move(
        payout, f"{payout.id}:reverse", "payouts:payable", "payouts:expense", payout.amount
    )


def _sending(payout: Payout) -> list[books.Move]:
    """An attempt in flight: the amount (payable against the rail's cash) and the rail's fee
    (fee expense against the same cash), both pending until the provider answers."""
    ref, cash = payout.reference, f"cash:{payout.rail}"
    moves = [_move(payout, f"{ref}:send", "payouts:payable", cash, payout.amount, pending=True)]
    if payout.fee:
        moves.append(_move(payout, f"{ref}:fee", "rails:fees", cash, payout.fee, pending=True))
    return moves


def _summary(payout: Payout) -> dict[str, Any]:
    return {
        "status": payout.status.value,
        "account_id": payout.account_id,
        "amount": payout.amount,
        "currency": payout.currency,
        "period": payout.period,
        "rail": payout.rail,
        "attempts": payout.attempts,
        "reasons": payout.reasons,
    }


def _record(
    payout: Payout, action: str, who: Who, before: Any = None, after: Any = None
) -> AuditRecord:
    return AuditRecord(
        actor=who.actor,
        role=who.role,
        action=action,
        target_type="payout",
        target_id=payout.id,
        trader_id=payout.trader_id or None,
        before=before,
        after=after,
        request_id=who.request_id or payout.request_key,
    )


def _decided(payout: Payout, who: Who, *, before: Any = None) -> AuditRecord:
    after = {**_summary(payout), "checks": msgspec.to_builtins(payout.checks)}
    return _record(payout, f"payout.{payout.status.value}", who, before, after)


RemotePayoutSupervisor: Any = ray.remote(PayoutSupervisor)


def start_payouts(database_url: str, runtime: Any, config: PayoutConfig | None = None) -> Any:
    """The payout supervisor actor over a started runtime. Ray restarts it if its process dies
    and sends it again the calls it held (each is safe to repeat: requests by their key)."""
    return RemotePayoutSupervisor.options(
        max_restarts=-1, max_task_retries=-1, max_concurrency=10_000
    ).remote(database_url, desk_of(runtime), config or PayoutConfig())
