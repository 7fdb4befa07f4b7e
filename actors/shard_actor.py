"""`AccountShard`: the Ray actor that hosts a `ShardCore` and does its I/O, crash-only.

A freeze is sent to the bridge the moment its effect appears and never waits for the database. The
shard owns each freeze until the platform confirms it, sending it again (same command id; the
bridge drops a command id it already carried out) until it does. The journal is written in
batches by a background task; a failed write is kept and retried.

Recovery. Every `checkpoint_interval_s` the shard writes, in one transaction, the snapshots of the
accounts that changed and its checkpoint: the price book, the last delivery number applied from
each bridge, and the freezes not yet confirmed (the journal rows up to that point are written
first). A bridge keeps every batch it delivered until a checkpoint covers it. A shard process
that dies is restarted by Ray (`max_restarts=-1`) with the same arguments; its first call loads
the snapshots and the checkpoint, asks each bridge to deliver again what came after it, and
resends the freezes in flight. Re-deriving an effect yields the same id: the journal keeps the
first row of an event id, the bridge the first command of a command id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import ray

from actors.account import Account
from actors.events import DomainEvent
from actors.hub import encode_published
from actors.market import Quote
from actors.metrics import ShardMetrics
from actors.payout_checks import AccountFacts
from actors.plans import Plan
from actors.risk import RiskFeed
from actors.shard import AccountView, Money, ShardCore, ShardStats, floating_of
from bridge.codec import decode_event_batch, encode_batch
from bridge.commands import AnyPlatformCommand, DisableTrading, EnableTrading
from bridge.events import AnyPlatformEvent
from bridge.liveness import Pulse, pulse
from ledger.database import create_engine
from ledger.journal import Journal, JournalRecord
from ledger.snapshots import Snapshot, SnapshotStore

log = logging.getLogger(__name__)

_encode = msgspec.msgpack.encode  # module functions: Ray pickles actor classes by value


def journal_record(event: AnyPlatformEvent | DomainEvent) -> JournalRecord:
    """The journal row of an event: the ledger stores it encoded, without knowing its type."""
    return JournalRecord(
        event_id=event.event_id,
        account_id=getattr(event, "account_id", None),
        kind=str(type(event).__struct_config__.tag),
        ts_ns=event.ts_ns,
        payload=_encode(event),
    )


def _crash(reason: str) -> None:
    """End this shard's process so Ray restarts it (only inside a Ray actor)."""
    log.critical("%s; exiting so the shard restarts from its checkpoint", reason, exc_info=True)
    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        os._exit(70)  # no cleanup on purpose: nothing half-applied may be saved


class ShardConfig(msgspec.Struct, frozen=True, kw_only=True):
    flush_interval_s: float = 0.05  # journal writes
    checkpoint_interval_s: float = 1.0  # snapshots of changed accounts + the shard checkpoint
    resend_after_s: float = 1.0  # an unconfirmed freeze is sent again after this long
    # Evict a flat account with no event for this long (market time) to its snapshot; None: never.
    passivate_after_s: float | None = 3_600.0
    # The risk stream: changed accounts' rows go to the hub at most this often (wall clock).
    publish_interval_s: float = 0.02
    publish_in_flight: int = 4  # publications unanswered by the hub before the shard waits
    hub_check_s: float = 1.0  # with nothing to publish, ask the hub's epoch this often
    publish_max_rows: int = 1_000  # rows computed per publication (the rest: the next ones)
    # At most this share of the shard's time goes to publishing: after a publication whose
    # rows took t to compute and send, the next waits max(publish_interval_s, t * (1 / share -
    # 1)). Rows conflate meanwhile (latest wins), so a burst that moves many accounts slows the
    # stream, not the rules. In (0, 1].
    publish_cpu_share: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.publish_cpu_share <= 1.0:
            raise ValueError(f"publish_cpu_share must be in (0, 1], got {self.publish_cpu_share}")

    firm_currency: str = "USD"


class ShardCheckpoint(msgspec.Struct, kw_only=True):
    """What a shard needs besides its accounts' snapshots to resume where it was."""

    book: dict[str, Quote]
    delivered: dict[str, int]
    unconfirmed: list[DisableTrading]


class Ack(msgspec.Struct, frozen=True):
    """A shard's answer to a delivery: the last delivery number from that bridge it applied, and
    the last one a checkpoint holds (the bridge may forget every batch up to `durable`)."""

    applied: int
    durable: int


class AccountShard:
    """Hosts thousands of account entities; one batch is applied at a time, in order."""

    def __init__(
        self,
        shard: int,
        database_url: str,
        *,
        name: str = "",
        plans: Sequence[Plan] = (),
        bridge_name: str | None = None,
        config: ShardConfig | None = None,
        hub_name: str | None = None,
    ) -> None:
        self.core = ShardCore(shard)
        self.hub_name = hub_name
        self.hub: Any = None
        self.hub_epoch: str | None = None
        self.publishing: list[Any] = []  # publications the hub has not answered yet
        self.hub_contact = 0.0  # monotonic time of the last call to the hub
        self.published = 0  # publications sent (numbers them for the hub)
        self.publish_cost_s = 0.0  # the last publication's compute and send time
        self.unanswered: dict[Any, list[Any]] = {}  # publication -> its events
        self.publish_wake = asyncio.Event()
        self.name = name or f"shard-{shard}"
        self.plans = {plan.id: plan for plan in plans}
        self.bridge_name = bridge_name
        self.config = config or ShardConfig()
        if hub_name is not None:
            self.core.feed = RiskFeed(self.config.firm_currency, self.config.publish_max_rows)
        self.engine = create_engine(database_url)
        self.journal = Journal(self.engine)
        self.snapshots = SnapshotStore(self.engine)
        self.bridge: Any = None
        self.pending: list[JournalRecord] = []
        self.writing = asyncio.Lock()
        self.checkpointing = asyncio.Lock()
        self.applying = asyncio.Lock()  # waking accounts + applying a batch, or evicting
        self.delivered: dict[str, int] = {}  # last delivery number applied, per bridge source
        self.durable: dict[str, int] = {}  # last delivery number a checkpoint holds, per source
        self.unconfirmed: dict[str, tuple[DisableTrading, float]] = {}  # account -> freeze, sent
        self.sent: list[Any] = []
        self.background: asyncio.Task[None] | None = None
        self.publisher: asyncio.Task[None] | None = None
        self.recovery: asyncio.Future[None] | None = None
        self.metrics = ShardMetrics(self.name)

    # -- life cycle ------------------------------------------------------------------------------

    async def ready(self) -> int:
        """Recover if not done yet (every call does this first); the accounts hosted."""
        if self.recovery is None:
            self.recovery = asyncio.ensure_future(self._recover())
        try:
            await asyncio.shield(self.recovery)
        except Exception:
            if self.recovery.done():  # the next call tries again (the database may be back)
                self.recovery = None
            raise
        return len(self.core.accounts)

    async def _recover(self) -> None:
        snapshots, state = await self.snapshots.load_shard(self.name)
        checkpoint = None if state is None else msgspec.msgpack.decode(state, type=ShardCheckpoint)
        book = {} if checkpoint is None else checkpoint.book
        self.core.restore((self._decode(s.state) for s in snapshots), book)
        if checkpoint is not None:
            self.delivered = dict(checkpoint.delivered)
            self.durable = dict(checkpoint.delivered)
            # sent at 0: the background task sends every one of them again at once
            self.unconfirmed = {c.account_id: (c, 0.0) for c in checkpoint.unconfirmed}
        self.background = asyncio.create_task(self._run_forever())
        if self.core.feed is not None:
            self.publisher = asyncio.create_task(self._publish_forever())
        if snapshots or state is not None:
            log.warning(
                "%s recovered %d accounts at %s; asking for what came after",
                self.name,
                len(snapshots),
                self.delivered,
            )
            bridge = self._bridge()
            if bridge is not None:  # it answers at once and delivers in the background
                try:
                    await bridge.redeliver.remote(self.core.stats.shard)
                except Exception:
                    log.exception("%s could not ask the bridge to deliver again", self.name)

    def _decode(self, state: bytes) -> Account:
        account = msgspec.msgpack.decode(state, type=Account)
        shared = self.plans.get(account.plan.id)
        if shared == account.plan:  # one plan object for all its accounts, not one per account
            account.plan = shared
        return account

    def _bridge(self) -> Any:
        if self.bridge is None and self.bridge_name is not None:
            try:
                self.bridge = ray.get_actor(self.bridge_name)
            except ValueError:
                log.warning("bridge %r not found (yet)", self.bridge_name)
        return self.bridge

    async def attach(self, bridge: Any) -> None:
        """Set where platform commands go (instead of looking the bridge up by name)."""
        await self.ready()
        self.bridge = bridge

    async def register(
        self,
        accounts: Sequence[tuple[str, Plan]],
        phase: str | None = None,
        funded: bool = True,
    ) -> int:
        """Host new accounts (`ShardCore.register`) and checkpoint them before answering, so a
        restart knows them."""
        await self.ready()
        for _, plan in accounts:
            self.plans.setdefault(plan.id, plan)
        added = self.core.register(accounts, phase=phase, funded=funded)
        if added:
            await self.checkpoint()
        return added

    async def close(self) -> None:
        """Stop the background task and checkpoint, then release the database."""
        await self.ready()
        for task in (self.background, self.publisher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self.background = self.publisher = None
        await self.checkpoint()
        await self.engine.dispose()

    # -- events in, effects out --------------------------------------------------------------

    async def apply_batch(self, payload: bytes, source: str = "", seq: int = 0) -> Ack:
        """Apply a msgpack batch of platform events, delivery `seq` from bridge `source`.

        A delivery applied before is ignored (a retry after a lost reply); one that skips a
        number is not applied either (batches were lost in a crash): the answer says which
        number comes next, and the bridge delivers from there.
        """
        await self.ready()
        async with self.applying:
            return await self._apply_batch(payload, source, seq)

    async def _apply_batch(self, payload: bytes, source: str, seq: int) -> Ack:
        applied = self.delivered.get(source, 0)
        if seq and seq != applied + 1:
            return Ack(applied, self.durable.get(source, 0))
        started = time.perf_counter()
        events = decode_event_batch(payload)
        needed = self.core.needed(events)
        if needed:
            await self._wake(needed)
        stats = self.core.stats
        evaluations, breaches = stats.evaluations, stats.breaches
        try:
            result = self.core.apply(events, self._send)  # commands leave as they appear
        except Exception:
            # State may be half-changed: crash-only, let Ray restart us from the checkpoint
            # rather than answer and have the bridge apply the same prefix again.
            _crash(f"{self.name}: applying delivery {seq} from {source!r} failed")
            raise
        if seq:
            self.delivered[source] = seq
        metrics = self.metrics
        metrics.batch_seconds.observe(time.perf_counter() - started)
        if events:  # a Ray counter takes only positive increments
            metrics.events.inc(len(events))
        if stats.evaluations > evaluations:
            metrics.evaluations.inc(stats.evaluations - evaluations)
        if stats.breaches > breaches:
            metrics.breaches.inc(stats.breaches - breaches)
        self.pending.extend(journal_record(e) for e in result.journal)
        if self.core.feed is not None:
            self.core.feed.mark(time.time_ns())
            self.publish_wake.set()
        return Ack(self.delivered.get(source, 0), self.durable.get(source, 0))

    async def _wake(self, account_ids: Sequence[str]) -> None:
        """Load evicted accounts from their snapshots (hold `applying`)."""
        found = await self.snapshots.load(account_ids)
        missing = set(account_ids) - found.keys()
        if missing:  # eviction only follows a checkpoint, so this is never expected
            raise RuntimeError(f"{self.name}: no snapshot for evicted accounts {sorted(missing)}")
        self.core.wake(self._decode(found[a].state) for a in account_ids)

    async def passivate(self) -> int:
        """Evict the accounts idle for `passivate_after_s` of market time; returns how many.
        Only accounts saved as they stand are evicted, so call it right after a checkpoint."""
        after_s = self.config.passivate_after_s
        if after_s is None:
            return 0
        # No checkpoint in flight (its accounts look clean before they are saved), no batch.
        async with self.checkpointing, self.applying:
            idle = self.core.idle(round(after_s * 1e9), keep=set(self.unconfirmed))
            return self.core.evict(idle)

    def _send(self, commands: Sequence[AnyPlatformCommand]) -> None:
        bridge = self._bridge()
        if bridge is None:
            raise RuntimeError("shard has no bridge: give bridge_name or call attach() first")
        now = time.monotonic()
        for command in commands:
            if isinstance(command, DisableTrading):
                self.unconfirmed[command.account_id] = (command, now)
            elif isinstance(command, EnableTrading):  # a pause ended: stop resending its freeze
                self.unconfirmed.pop(command.account_id, None)
        self.sent.append(bridge.submit.remote(encode_batch(commands)))

    # -- reads -----------------------------------------------------------------------------------

    async def account(self, account_id: str) -> AccountView | None:
        await self.ready()
        if account_id in self.core.passive:
            async with self.applying:
                if account_id in self.core.passive:
                    await self._wake([account_id])
        account = self.core.accounts.get(account_id)
        return AccountView.of(account, self.core.market.book) if account is not None else None

    async def payout_facts(self, account_ids: Sequence[str]) -> dict[str, AccountFacts]:
        """What the payout checklist reads of each hosted account asked about (evicted ones
        woken), in cents; accounts not hosted here are left out."""
        await self.ready()
        async with self.applying:
            asleep = sorted(a for a in account_ids if a in self.core.passive)
            if asleep:
                await self._wake(asleep)
        book = self.core.market.book
        found = {}
        for account_id in account_ids:
            account = self.core.accounts.get(account_id)
            if account is None:
                continue
            found[account_id] = AccountFacts(
                account_id=account_id,
                plan=account.plan,
                phase=account.phase.name,
                status=account.status.value,
                frozen=account.frozen is not None,
                initial=account.initial,
                balance=account.balance,
                equity=account.balance + account.credit + floating_of(account, book),
                day_pnl=dict(account.day_pnl),
                breaches=list(account.breaches),
            )
        return found

    async def views(self) -> list[AccountView]:
        """Every hosted account's view, evicted ones woken (tests and tools; not a hot path)."""
        await self.ready()
        async with self.applying:
            if self.core.passive:
                await self._wake(sorted(self.core.passive))
        book = self.core.market.book
        return [AccountView.of(a, book) for a in self.core.accounts.values()]

    async def hosted(self) -> list[str]:
        """Every account this shard hosts, evicted ones included."""
        await self.ready()
        return [*self.core.accounts, *self.core.passive]

    async def money(self, account_ids: Sequence[str] | None = None) -> dict[str, Money]:
        """Hosted accounts' balance and equity (all, or those asked), evicted ones not woken."""
        await self.ready()
        return self.core.money(account_ids)

    async def stats(self) -> ShardStats:
        await self.ready()
        return self.core.stats

    async def breached(self) -> list[str]:
        await self.ready()
        return self.core.breached()

    async def frozen(self) -> list[str]:
        await self.ready()
        return self.core.frozen()

    async def ping(self) -> Pulse:
        """For the supervisor: recover if needed, then say which process this is."""
        await self.ready()
        return pulse()

    # -- the risk stream -----------------------------------------------------------------------

    def _hub(self) -> Any:
        if self.hub is None and self.hub_name is not None:
            try:
                self.hub = ray.get_actor(self.hub_name)
            except ValueError:
                log.warning("risk hub %r not found (yet)", self.hub_name)
        return self.hub

    async def publish(self) -> int:
        """Send the hub the rows of the accounts that changed and the events applied since the
        last call; returns how many rows. Waits for nothing but the hub's earlier answers: with
        `publish_in_flight` unanswered the changes stay collected for the next call (an
        account's rows conflate, latest wins)."""
        feed, hub = self.core.feed, self._hub()
        if feed is None or hub is None:
            return 0
        await self._reap_published()
        if len(self.publishing) >= self.config.publish_in_flight:
            return 0
        computing = time.perf_counter()
        rows, events, applied_ns = feed.collect(self.core.accounts, self.core.market)
        now = time.monotonic()
        if not rows and not events:
            # Quiet: still ask the hub its epoch now and then, so a restarted hub gets every
            # row again without waiting for the market to move.
            if not self.publishing and now - self.hub_contact >= self.config.hub_check_s:
                self.hub_contact = now
                self.publishing.append(hub.ready.remote())
            return 0
        self.hub_contact = now
        self.published += 1
        payload = encode_published(
            rows, events, applied_ns or time.time_ns(), self.name, self.published
        )
        ref = hub.publish.remote(payload)
        self.publish_cost_s = time.perf_counter() - computing
        self.publishing.append(ref)
        if events:
            self.unanswered[ref] = events  # sent again if the hub loses them
        if feed.touched:
            self.publish_wake.set()  # more rows wait: the next round goes at once
        return len(rows)

    async def _reap_published(self) -> None:
        """Read the hub's answers: a new epoch (the hub restarted) means send every row again;
        a lost publication (the hub died) too."""
        if not self.publishing:
            return
        ready, self.publishing = ray.wait(
            self.publishing, num_returns=len(self.publishing), timeout=0
        )
        feed = self.core.feed
        for ref in ready:
            events = self.unanswered.pop(ref, [])
            try:
                epoch: str | None = await ref
            except Exception:
                epoch = None
            if feed is None:
                continue
            if epoch is None:  # its rows and events may be lost with it
                log.warning("%s: the risk hub lost a publication; sending it again", self.name)
                feed.resend_all(self.core.accounts)
                feed.events[:0] = events
            elif self.hub_epoch is not None and epoch != self.hub_epoch:  # a new hub
                feed.resend_all(self.core.accounts)
            self.hub_epoch = epoch if epoch is not None else self.hub_epoch

    async def _publish_forever(self) -> None:
        interval = self.config.publish_interval_s
        rest = 1.0 / self.config.publish_cpu_share - 1.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.publish_wake.wait(), timeout=1.0)
            self.publish_wake.clear()
            self.publish_cost_s = 0.0
            try:
                await self.publish()
            except Exception:
                log.exception("%s: publishing to the risk hub failed", self.name)
            await asyncio.sleep(max(interval, self.publish_cost_s * rest))

    # -- persistence -----------------------------------------------------------------------------

    async def flush(self) -> int:
        """Write what is pending to the journal now; returns the rows newly inserted."""
        async with self.writing:  # one writer at a time keeps the journal in order
            batch, self.pending = self.pending, []
            try:
                inserted = await self.journal.append(batch)
            except Exception:
                self.pending[:0] = batch  # the next flush retries; ids make it harmless
                raise
        self.core.stats.journal_rows += inserted
        return inserted

    async def checkpoint(self) -> dict[str, int]:
        """Make everything applied so far recoverable; returns the durable delivery numbers.

        The state is captured at one instant (no await in between): the changed accounts, the
        book, the delivery numbers and the freezes in flight. The journal is flushed first, so
        no row of an event before the checkpoint is left only in memory.
        """
        await self.ready()
        async with self.checkpointing:
            started = time.perf_counter()
            changed = self.core.take_dirty()
            snapshots = [
                Snapshot(
                    account_id=a.account_id,
                    version=a.version,
                    ts_ns=a.ts_ns,
                    state=_encode(a),
                    shard=self.name,
                )
                for a in changed
            ]
            delivered = dict(self.delivered)
            state = ShardCheckpoint(
                book=dict(self.core.market.book),
                delivered=delivered,
                unconfirmed=[command for command, _ in self.unconfirmed.values()],
            )
            try:
                await self.flush()
                await self.snapshots.save(snapshots, (self.name, _encode(state)))
            except Exception:
                self.core.dirty.update(a.account_id for a in changed)  # the next one retries
                raise
            self.durable = delivered
            self.core.stats.checkpoints += 1
            self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
            self.metrics.accounts.set(len(self.core.accounts))
            self.metrics.unconfirmed.set(len(self.unconfirmed))
            return dict(delivered)

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_checkpoint = loop.time() + self.config.checkpoint_interval_s
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            try:
                await self._reap_sent()
                self._resend_unconfirmed()
                if loop.time() >= next_checkpoint:
                    next_checkpoint = loop.time() + self.config.checkpoint_interval_s
                    if self.core.dirty or self.delivered != self.durable:
                        await self.checkpoint()
                        await self.passivate()
                elif self.pending:
                    await self.flush()
            except Exception:
                log.exception("background write failed; %d records kept", len(self.pending))

    async def _reap_sent(self) -> None:
        """Collect the bridge's answers; a refused batch is covered by `_resend_unconfirmed`."""
        if not self.sent:
            return
        ready, self.sent = ray.wait(self.sent, num_returns=len(self.sent), timeout=0)
        for ref in ready:
            try:
                await ref
            except Exception:
                self.core.stats.command_errors += 1
                log.exception("bridge did not take a command batch")

    def _resend_unconfirmed(self) -> None:
        """Send again every freeze the platform has not confirmed within `resend_after_s`."""
        now = time.monotonic()
        due: list[AnyPlatformCommand] = []
        for account_id, (command, sent_at) in list(self.unconfirmed.items()):
            account = self.core.accounts.get(account_id)
            if account is None or account.frozen is not None:
                del self.unconfirmed[account_id]
            elif now - sent_at >= self.config.resend_after_s:
                due.append(command)
        if due:
            log.warning("%s resending %d unconfirmed freezes", self.name, len(due))
            self._send(due)


RemoteAccountShard: Any = ray.remote(AccountShard)
