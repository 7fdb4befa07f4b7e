"""`BridgeWorker`: one Ray actor per platform connection.

Inbound: pull raw messages from the platform, decode and validate each at the edge (a malformed
one is rejected alone), drop repeats by event id, and send one ordered batch per shard. Each
shard's batches carry consecutive delivery numbers and are kept here until the shard says a
checkpoint holds them, so a shard that crashed gets again everything after its checkpoint.
Outbound: platform commands wait in priority lanes (a freeze goes before everything else) behind
the connection's rate limiter, so the platform never sees more than its published limit; a
command id already queued or carried out is dropped, so a shard re-deriving its effects after a
crash never sends a freeze twice. A caller that needs the outcome (`execute`: provisioning,
balance operations) waits for it; asking for a command id already waiting shares its request
(coalescing). A request refused (for its rate or its credentials) or lost to a 5xx, a time-out
or a dropped connection goes back to its lanes and the sender backs off (`bridge/circuit.py`);
after enough failures in a row the circuit opens and the health view says so. Queries (history,
positions, account state) wait in the lowest lane, after every command, and go one per request
through the same limit; the same query asked twice while it waits is sent once, and on a platform
with a batch call (`BatchStates`) the account-state queries waiting together go as one request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec
import ray
from cachetools import LRUCache

from bridge.circuit import BackoffConfig, Breaker
from bridge.codec import Rejection, decode_command_batch, decode_messages, encode_batch
from bridge.commands import AnyPlatformCommand, DisableTrading, Lane
from bridge.events import AnyPlatformEvent, PriceTicked
from bridge.liveness import Pulse, pulse
from bridge.metrics import BridgeMetrics
from bridge.platform import (
    DONE,
    AccountState,
    BatchStates,
    NotFound,
    OpenPosition,
    Platform,
    RateLimited,
    Refused,
    Replayable,
)
from bridge.ratelimit import TokenBucket
from bridge.validation import TickGuard, TickLimits

log = logging.getLogger(__name__)
T = TypeVar("T")


class Placement(Protocol):
    """Which shard hosts an account (the actors' router satisfies it)."""

    shard_count: int

    def shard_of(self, account_id: str) -> int: ...


class IngestReport(msgspec.Struct, kw_only=True):
    """What became of one inbound batch."""

    received: int
    applied: int
    duplicates: int
    rejected: list[Rejection]


class BridgeStats(msgspec.Struct, kw_only=True):
    connection: str
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    commands_sent: int = 0
    command_failures: int = 0
    delivery_retries: int = 0
    redelivered: int = 0  # batches delivered again to a shard that lost them in a crash
    retained: int = 0  # batches kept until a shard checkpoint holds them
    duplicate_commands: int = 0  # commands dropped: the same command id was queued or sent
    coalesced: int = 0  # `execute` calls answered by a request already waiting for the same id
    rate_limited: int = 0  # requests the platform refused for their rate
    refused: int = 0  # requests the platform refused (credentials): retried, the circuit says so
    circuit: str = "closed"  # closed, open, half_open
    circuit_opened: int = 0
    queries: int = 0  # history, positions and account-state requests answered
    queries_coalesced: int = 0  # asked again while the same query was waiting: shared
    query_failures: int = 0  # queries whose request was lost to a rate limit, 5xx or time-out
    query_requests: int = 0  # requests that answered queries (a batch call answers several)


class WorkerConfig(msgspec.Struct, frozen=True, kw_only=True):
    connection: str = ""  # set from the connection's name (`bridge/connections.py`)
    requests_per_second: float = 50.0
    burst: int = 10
    max_batch: int = 5_000
    poll_interval_s: float = 0.01
    retry_interval_s: float = 0.2
    request_timeout_s: float = 10.0  # a request not answered by then counts as unavailable
    backoff: BackoffConfig = BackoffConfig()
    ticks: TickLimits = TickLimits()
    commands_per_request: int = 100
    states_per_request: int = 100  # account-state queries per request, where it has a batch call
    dedupe_window: int = 200_000
    max_retained: int = 256  # per shard; beyond it the shard is asked to checkpoint first


class Ack(Protocol):
    """A shard's answer to a delivery (actors.shard_actor.Ack)."""

    applied: int
    durable: int


class Query:
    """A question for the platform (history, positions, account state), waiting in the lowest
    lane: it goes after every command, through the same rate limit, one per request (or several
    account states in one, where the platform has a batch call)."""

    def __init__(
        self,
        key: tuple[Any, ...],
        ask: Callable[[Platform], Awaitable[Any]],
        future: asyncio.Future[Any],
    ) -> None:
        self.key, self.ask, self.future = key, ask, future
        self.callers = 0  # when the last one gives up, the query is not sent
        self.alone = False  # a batch call failed for it as a whole: it goes by itself


class BridgeWorker:
    """Bridges one platform connection to the account shards."""

    def __init__(
        self, config: WorkerConfig, platform: Platform, shards: Sequence[Any], placement: Placement
    ) -> None:
        self.config = config
        self.platform = platform
        self.shards = list(shards)
        self.placement = placement
        self.seen: LRUCache[str, None] = LRUCache(maxsize=config.dedupe_window)
        self.limiter = TokenBucket(config.requests_per_second, config.burst)
        self.lanes: asyncio.PriorityQueue[tuple[int, int, AnyPlatformCommand | Query]] = (
            asyncio.PriorityQueue()
        )
        self.order = itertools.count()
        self.stats_ = BridgeStats(connection=config.connection)
        self.tasks: list[asyncio.Task[None]] = []
        self.ingesting = asyncio.Lock()
        # This incarnation's name at the shards: a restarted worker numbers from 1 again.
        self.source = f"{config.connection}@{secrets.token_hex(4)}"
        self.delivered = [0] * len(self.shards)  # last delivery number per shard
        self.applied = [0] * len(self.shards)  # last number each shard says it applied
        self.retained: list[deque[tuple[int, bytes]]] = [deque() for _ in self.shards]
        self.durable = [0] * len(self.shards)  # last number each shard's checkpoint holds
        # A replayable platform's fetched batches not yet confirmed durable: the delivery
        # numbers each shard must hold in a checkpoint first.
        self.unconfirmed: deque[list[int]] = deque()
        self.to_confirm = 0
        self.confirming: asyncio.Task[None] | None = None
        self.shard_locks = [asyncio.Lock() for _ in self.shards]
        self.redeliveries: set[asyncio.Task[None]] = set()
        # Command ids carried out (code 0), and those waiting in a lane or being sent.
        self.commands_seen: LRUCache[str, None] = LRUCache(maxsize=config.dedupe_window)
        self.queued: set[str] = set()
        self.waiters: dict[str, list[asyncio.Future[int]]] = {}  # callers of `execute`, by id
        self.asked: dict[tuple[Any, ...], Query] = {}  # queries waiting, by what they ask
        self.breaker = Breaker(config.backoff)
        self.ticks = TickGuard(config.ticks)
        self.refused_ticks: LRUCache[str, str] = LRUCache(maxsize=10_000)  # event id -> why
        self.holding: list[bytes] = []  # fetched from the platform, not yet delivered
        self.arrivals: LRUCache[str, float] = LRUCache(maxsize=config.dedupe_window)
        self.metrics = BridgeMetrics(config.connection)
        self.pulling = False
        self.fetching = False
        self.unsent = 0

    async def start(self, pull: bool = True) -> None:
        """Start sending commands and, with `pull`, pulling events from the platform."""
        if not self.tasks:
            self.tasks.append(asyncio.create_task(self._send_forever()))
            if pull:
                self.pulling = True
                self.tasks.append(asyncio.create_task(self._pull_forever()))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop pulling once the batch in hand is delivered; queued commands are still sent."""
        self.pulling = False
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*self.tasks[1:])
        await self.drain(timeout_s)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued command has been sent."""
        async with asyncio.timeout(timeout_s):
            await self.lanes.join()

    async def idle(self) -> bool:
        """Nothing in hand: no fetch in flight, no batch being delivered or owed to a shard
        that lost it, no command or query waiting or being sent."""
        return (
            not self.fetching
            and not self.ingesting.locked()
            and not self.holding
            and self.unsent == 0
            and self.applied == self.delivered
            and not any(lock.locked() for lock in self.shard_locks)
        )

    async def ingest(self, raw: Sequence[bytes]) -> IngestReport:
        """Decode, validate, dedupe and apply one batch of raw platform messages."""
        async with self.ingesting:  # one batch at a time keeps every shard's input in order
            arrived = time.monotonic()
            events, rejected = decode_messages(raw)
            events = self._sane(events, rejected)
            for rejection in rejected:
                log.warning("rejected message %d: %s", rejection.index, rejection.error)
            fresh = self._fresh(events)
            arrivals = self.arrivals
            for event in fresh:  # to time the freeze an event may cause
                arrivals[event.event_id] = arrived
            await self._deliver(fresh)
            for event in fresh:
                self.seen[event.event_id] = None
        report = IngestReport(
            received=len(raw),
            applied=len(fresh),
            duplicates=len(events) - len(fresh),
            rejected=rejected,
        )
        self._count(report)
        return report

    def _sane(
        self, events: list[AnyPlatformEvent], rejected: list[Rejection]
    ) -> list[AnyPlatformEvent]:
        """Drop absurd ticks (`bridge/validation.py`), each added to `rejected` with the index of
        its message in the batch; a repeated tick is not judged again."""
        skipped = {r.index for r in rejected}
        positions = (i for i in itertools.count() if i not in skipped)
        kept: list[AnyPlatformEvent] = []
        refusals: list[Rejection] = []
        for index, event in zip(positions, events, strict=False):
            if isinstance(event, PriceTicked) and event.event_id not in self.seen:
                # A repeat of a refused tick is refused again: it must not confirm itself.
                reason = self.refused_ticks.get(event.event_id) or self.ticks.refuse(event)
                if reason is not None:
                    self.refused_ticks[event.event_id] = reason
                    refusals.append(Rejection(index=index, error=reason))
                    continue
            kept.append(event)
        if refusals:
            rejected.extend(refusals)
            rejected.sort(key=lambda r: r.index)
        return kept

    def _fresh(self, events: list[AnyPlatformEvent]) -> list[AnyPlatformEvent]:
        """Events not seen before, in this batch or an earlier one."""
        fresh: list[AnyPlatformEvent] = []
        batch_ids: set[str] = set()
        for event in events:
            if event.event_id not in self.seen and event.event_id not in batch_ids:
                batch_ids.add(event.event_id)
                fresh.append(event)
        return fresh

    async def _deliver(self, events: list[AnyPlatformEvent]) -> None:
        batches: list[list[AnyPlatformEvent]] = [[] for _ in self.shards]
        for event in events:
            if isinstance(event, PriceTicked):
                for batch in batches:  # any shard may host an account holding the symbol
                    batch.append(event)
            else:
                batches[self.placement.shard_of(event.account_id)].append(event)
        await asyncio.gather(
            *(self._deliver_one(index, batch) for index, batch in enumerate(batches) if batch)
        )

    async def _deliver_one(self, index: int, batch: list[AnyPlatformEvent]) -> None:
        """Deliver the next batch to shard `index`, with any earlier one it lost in a crash.
        It is numbered under the shard's lock, so a redelivery cannot slip in between."""
        async with self.shard_locks[index]:
            self.delivered[index] += 1
            seq = self.delivered[index]
            retained = self.retained[index]
            retained.append((seq, encode_batch(batch)))
            if len(retained) > self.config.max_retained:
                await self._make_durable(index)
            await self._push(index, seq)

    async def _push(self, index: int, upto: int) -> None:
        """Send retained batches in order until shard `index` has applied `upto`.

        Every attempt carries the batch's own number, so a shard that applied it before a
        failure reached us ignores the repeat; a shard that restarted from a checkpoint answers
        with the last number it has, and the batches after it follow.
        """
        while self.applied[index] < upto:
            seq, payload = self._next_for(index)
            try:
                ack: Ack = await self.shards[index].apply_batch.remote(payload, self.source, seq)
            except Exception:
                self.stats_.delivery_retries += 1
                log.exception("shard %d did not take batch %d; retrying", index, seq)
                await asyncio.sleep(self.config.retry_interval_s)
                continue
            if ack.applied < seq:
                self.stats_.redelivered += 1
                log.warning("shard %d has batches to %d only; delivering again", index, ack.applied)
            self.applied[index] = ack.applied
            self._forget(index, ack.durable)

    def _next_for(self, index: int) -> tuple[int, bytes]:
        """The kept batch after the last one shard `index` applied (the first, if unknown)."""
        applied = self.applied[index]
        for seq, payload in self.retained[index]:
            if seq == applied + 1 or (applied == 0 and seq > 0):
                return seq, payload
            if seq > applied:
                break
        # Never expected: a shard only lets us forget what its checkpoint holds.
        raise RuntimeError(f"shard {index} needs batch {applied + 1}, which is no longer kept")

    def _forget(self, index: int, durable: int) -> None:
        retained = self.retained[index]
        while retained and retained[0][0] <= durable:
            retained.popleft()
        self.stats_.retained = sum(len(r) for r in self.retained)
        self.metrics.retained.set(self.stats_.retained)
        if durable > self.durable[index]:
            self.durable[index] = durable
            self._confirm()

    def _confirm(self) -> None:
        """Tell a replayable platform which fetched batches every shard's checkpoint holds."""
        while self.unconfirmed and all(
            mark <= held for mark, held in zip(self.unconfirmed[0], self.durable, strict=True)
        ):
            self.unconfirmed.popleft()
            self.to_confirm += 1
        if self.to_confirm and (self.confirming is None or self.confirming.done()):
            self.confirming = asyncio.create_task(self._confirm_forever())

    async def _confirm_forever(self) -> None:
        assert isinstance(self.platform, Replayable)
        while self.to_confirm:
            batches, self.to_confirm = self.to_confirm, 0
            try:
                await self.platform.durable(batches)
            except Exception:
                # Not recorded: after a restart these are handed over again, and dropped as
                # repeats. The next confirmation carries them.
                log.exception("could not record %d batches as durable", batches)
                self.to_confirm += batches
                return

    async def _make_durable(self, index: int) -> None:
        """Backpressure: too much kept for one shard; wait for it to checkpoint."""
        while True:
            try:
                durable: dict[str, int] = await self.shards[index].checkpoint.remote()
                self._forget(index, durable.get(self.source, 0))
                return
            except Exception:
                log.exception("shard %d could not checkpoint; retrying", index)
                await asyncio.sleep(self.config.retry_interval_s)

    async def redeliver(self, index: int) -> int:
        """A shard recovered from its checkpoint: deliver again every batch it may have lost.

        Returns at once (the shard calls this while recovering, and a delivery to it may be
        waiting on that very recovery); until the batches are in, `idle` is False. Returns how
        many batches are kept for it.
        """
        self.applied[index] = 0  # unknown until its first answer
        task = asyncio.create_task(self._redeliver(index))
        self.redeliveries.add(task)
        task.add_done_callback(self.redeliveries.discard)
        return len(self.retained[index])

    async def _redeliver(self, index: int) -> None:
        async with self.shard_locks[index]:
            if self.retained[index]:
                await self._push(index, self.delivered[index])
            elif self.applied[index] == 0:  # everything it was given is in its checkpoint
                self.applied[index] = self.delivered[index]

    def _count(self, report: IngestReport) -> None:
        if report.applied:  # a Ray counter takes only positive increments
            self.metrics.events.inc(report.applied)
        if report.rejected:
            self.metrics.rejected.inc(len(report.rejected))
        self.stats_.received += report.received
        self.stats_.applied += report.applied
        self.stats_.duplicates += report.duplicates
        self.stats_.rejected += len(report.rejected)

    async def submit(self, payload: bytes) -> int:
        """Queue a msgpack batch of platform commands in their lanes; returns how many."""
        commands = decode_command_batch(payload)
        for command in commands:
            if not self._admit(command):
                self.stats_.duplicate_commands += 1
        return len(commands)

    async def execute(self, payload: bytes) -> list[int]:
        """Carry out a msgpack batch of commands through their lanes and wait for the outcome:
        a result code per command (`DONE` or the platform's own code). A command id
        carried out before answers `DONE` without reaching the platform again; one waiting in a
        lane shares that request's outcome."""
        commands = decode_command_batch(payload)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = []
        for command in commands:
            future: asyncio.Future[int] = loop.create_future()
            futures.append(future)
            command_id = command.command_id
            if self.commands_seen.get(command_id, False) is None:
                future.set_result(DONE)
                self.stats_.duplicate_commands += 1
                continue
            self.waiters.setdefault(command_id, []).append(future)
            if not self._admit(command):
                self.stats_.coalesced += 1
        return list(await asyncio.gather(*futures))

    def _admit(self, command: AnyPlatformCommand) -> bool:
        """Queue a command unless its id is waiting or was carried out; True if queued."""
        command_id = command.command_id
        if command_id in self.queued or self.commands_seen.get(command_id, False) is None:
            return False  # (`get` also keeps it recently used)
        self.queued.add(command_id)
        self._enqueue(command)
        return True

    def _resolve(self, command_id: str, code: int) -> None:
        for future in self.waiters.pop(command_id, ()):
            if not future.done():
                future.set_result(code)

    def _enqueue(self, command: AnyPlatformCommand) -> None:
        self.unsent += 1
        self.lanes.put_nowait((int(command.lane), next(self.order), command))

    async def history(self, account_id: str, since_ns: int) -> list[bytes]:
        """The account's deals and balance operations from `since_ns` on, as the platform
        records them (`Platform.history`), asked through the lanes and the rate limit."""
        answer: list[bytes] = await self._query(
            ("history", account_id, since_ns), lambda p: p.history(account_id, since_ns)
        )
        return answer

    async def positions(self, account_id: str) -> list[OpenPosition]:
        answer: list[OpenPosition] = await self._query(
            ("positions", account_id), lambda p: p.positions(account_id)
        )
        return answer

    async def account_state(self, account_id: str) -> AccountState:
        answer: AccountState = await self._query(
            ("account_state", account_id), lambda p: p.account_state(account_id)
        )
        return answer

    async def account_states(self, account_ids: Sequence[str]) -> list[AccountState | Refused]:
        """Each account's state, asked at once (so that on a platform with a batch call they
        share requests); for an account the platform refused, its refusal (`NotFound`: no
        such account)."""
        answers = await asyncio.gather(
            *(self.account_state(a) for a in account_ids), return_exceptions=True
        )
        found: list[AccountState | Refused] = []
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, Refused):
                raise answer
            # as the protocol's own types: an adapter's may not survive the actor boundary
            if isinstance(answer, NotFound):
                answer = NotFound(str(answer))
            elif isinstance(answer, Refused):
                answer = Refused(str(answer))
            found.append(answer)
        return found

    async def _query(self, key: tuple[Any, ...], ask: Callable[[Platform], Awaitable[T]]) -> T:
        """Queue a query after every command, or share the same one while it waits (once sent,
        a new caller asks again: its answer may not predate the question). A rate limit, 5xx or
        time-out is retried with backoff, as for commands; a refusal (no such account, expired
        credentials) is the caller's answer."""
        query = self.asked.get(key)
        if query is None:
            query = Query(key, ask, asyncio.get_running_loop().create_future())
            self.asked[key] = query
            self.unsent += 1
            self.lanes.put_nowait((int(Lane.HISTORY), next(self.order), query))
        else:
            self.stats_.queries_coalesced += 1
        query.callers += 1
        try:
            result: T = await asyncio.shield(query.future)  # one caller giving up leaves the rest
        except asyncio.CancelledError:
            if not query.future.done():
                query.callers -= 1
                if query.callers == 0:
                    query.future.cancel()  # nobody waits: not sent
            raise
        return result

    async def stats(self) -> BridgeStats:
        self.stats_.circuit = self.breaker.state.value
        self.stats_.circuit_opened = self.breaker.opened
        return self.stats_

    async def ping(self) -> Pulse:
        """Liveness, and what is wrong while the platform connection fails."""
        return pulse(self.breaker.describe())

    async def _pull_forever(self) -> None:
        while self.pulling:
            try:
                if not self.holding:
                    # In flight, the batch is neither on the platform nor in hand: not idle.
                    self.fetching = True
                    self.holding = await self.platform.fetch(self.config.max_batch)
            except Exception:
                log.exception("fetching from the platform failed; retrying")
                await asyncio.sleep(self.config.retry_interval_s)
                continue
            finally:
                self.fetching = False
            if not self.holding:
                await asyncio.sleep(self.config.poll_interval_s)
                continue
            await self.ingest(self.holding)
            self.holding = []
            if isinstance(self.platform, Replayable):
                self.unconfirmed.append(list(self.delivered))
                self._confirm()

    async def _send_forever(self) -> None:
        while True:
            first = await self.lanes.get()
            batch: list[AnyPlatformCommand] = []
            try:
                # Backing off after a failure, or the circuit is open: nothing is sent until then
                # (only this task sends, so the wait cannot change while it sleeps).
                await asyncio.sleep(self.breaker.wait_s())
                # The token first, the rest of the request after it: whatever arrives while
                # we wait for the token rides in this request instead of waiting for the next.
                await self.limiter.acquire()
                if not isinstance(first[2], Query):
                    batch.append(first[2])
                elif (command := self._next_command()) is not None:
                    self.lanes.put_nowait(first)  # a command came during the wait: it goes first
                    batch.append(command)
                else:
                    await self._ask([first[2], *self._more_states(first[2])])
                    continue
                while len(batch) < self.config.commands_per_request and (
                    command := self._next_command()
                ):
                    batch.append(command)
                await self._send(batch)
            finally:
                self.lanes.task_done()

    def _next_command(self) -> AnyPlatformCommand | None:
        """The next command waiting, None if there is none (queries come after every command,
        so a query on top means none: it goes back)."""
        if self.lanes.empty():
            return None
        item = self.lanes.get_nowait()
        self.lanes.task_done()  # counted from here by the request it joins
        if isinstance(item[2], Query):
            self.lanes.put_nowait(item)
            return None
        return item[2]

    def _more_states(self, first: Query) -> list[Query]:
        """On a platform with a batch call, the account-state queries waiting right after
        `first` (an account-state query too), to ride in its request."""
        more: list[Query] = []
        if not (self._batchable(first) and isinstance(self.platform, BatchStates)):
            return more
        while len(more) + 1 < self.config.states_per_request and not self.lanes.empty():
            item = self.lanes.get_nowait()
            self.lanes.task_done()  # counted from here by the request it joins
            query = item[2]
            if not (isinstance(query, Query) and self._batchable(query)):
                self.lanes.put_nowait(item)  # not one of them: it keeps its place
                break
            more.append(query)
        return more

    @staticmethod
    def _batchable(query: Query) -> bool:
        return query.key[0] == "account_state" and not query.alone

    async def _ask(self, queries: list[Query]) -> None:
        """Send one request for `queries` (several: account states in one batch call); answer
        their callers, or queue them again after a failure."""
        live = self._wanted(queries)
        if not live:
            return
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                answers = await self._answers(live)
        except NotFound as exc:
            if len(live) > 1:  # a batch call answers a missing account by leaving it out:
                self._split(live)  # this is about the call itself (an older server?)
                return
            self.breaker.succeeded()  # the query's answer: the connection works
            answers = [exc]
        except Refused as exc:  # credentials, most likely: commands would fail too
            self.stats_.refused += 1
            self.breaker.failed(f"Refused: {exc}")
            answers = [exc] * len(live)
        except asyncio.CancelledError:
            for query in live:
                query.future.cancel()  # the worker is stopping: its callers are told
            raise
        except Exception as exc:
            self._requeue_queries(live, exc)
            return
        else:
            self.breaker.succeeded()
            self.stats_.queries += len(live)
        self.stats_.query_requests += 1
        for query, answer in zip(live, answers, strict=True):
            self._answer(query, answer)

    def _split(self, queries: list[Query]) -> None:
        """A batch call refused as a whole: its queries go again, one per request."""
        log.warning(
            "a batch call for %d account states was refused; asking one by one", len(queries)
        )
        for query in queries:
            query.alone = True
            self._ask_again(query)

    def _wanted(self, queries: list[Query]) -> list[Query]:
        """Those of `queries` someone still waits for (the others are dropped unsent)."""
        live: list[Query] = []
        for query in queries:
            self.asked.pop(query.key, None)  # from now on, a new caller asks anew
            if query.future.done():  # every caller gave up
                self.unsent -= 1
            else:
                live.append(query)
        return live

    def _requeue_queries(self, queries: list[Query], exc: Exception) -> None:
        """A query request lost to a rate limit, 5xx or time-out: back to the lane, to share
        with any new caller again."""
        self.stats_.query_failures += len(queries)
        self._failed(exc)
        for query in queries:
            self._ask_again(query)

    def _ask_again(self, query: Query) -> None:
        """Back to the lowest lane, shared again with any new caller until it is sent."""
        self.asked.setdefault(query.key, query)
        self.lanes.put_nowait((int(Lane.HISTORY), next(self.order), query))

    async def _answers(self, queries: list[Query]) -> list[Any]:
        """One request's answers, one per query (an account the batch left out: `NotFound`)."""
        if len(queries) == 1:
            return [await queries[0].ask(self.platform)]
        assert isinstance(self.platform, BatchStates)
        ids = [query.key[1] for query in queries]
        found = {state.account_id: state for state in await self.platform.account_states(ids)}
        return [found.get(a) or NotFound(f"no account {a!r} on the platform") for a in ids]

    def _answer(self, query: Query, answer: Any) -> None:
        self.unsent -= 1
        if query.future.done():
            return
        if isinstance(answer, Exception):
            query.future.set_exception(answer)
        else:
            query.future.set_result(answer)

    async def _send(self, commands: list[AnyPlatformCommand]) -> None:
        """Send one request. If it fails as a whole (rate limit, 5xx, time-out, dropped
        connection, or refused: expired credentials), the commands go back to their lanes and
        the sender backs off; a command the platform answers with its own code is answered so."""
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                codes = await self.platform.execute(commands)
            results = list(zip(commands, codes, strict=True))
        except Exception as exc:
            self._requeue(commands, exc)
            return
        else:
            self.breaker.succeeded()
            self.unsent -= len(commands)
            self.stats_.commands_sent += len(commands)
            if commands:
                self.metrics.commands.inc(len(commands))
        self._settle(results)

    def _requeue(self, commands: list[AnyPlatformCommand], exc: Exception) -> None:
        """The request failed as a whole and may or may not have been carried out: the same
        command ids go again (harmless at the platform) after a backoff. A refusal (bad or
        expired credentials) is retried too: dropping it would drop freezes, and the open
        circuit puts it in the health view for an operator to fix."""
        if isinstance(exc, Refused):
            self.stats_.refused += 1
        wait = self._failed(exc)
        log.warning("%d commands requeued, retry in %.2f s: %r", len(commands), wait, exc)
        self.stats_.command_failures += len(commands)
        for command in commands:
            self.unsent -= 1
            self._enqueue(command)

    def _failed(self, exc: Exception) -> float:
        """Count a request lost as a whole; returns how long the sender now waits."""
        retry_after = exc.retry_after_s if isinstance(exc, RateLimited) else None
        if isinstance(exc, RateLimited):
            self.stats_.rate_limited += 1
        return self.breaker.failed(f"{type(exc).__name__}: {exc}", retry_after)

    def _settle(self, results: list[tuple[AnyPlatformCommand, int]]) -> None:
        """Answer the callers waiting; remember what was carried out; time freezes."""
        done = time.monotonic()
        for command, code in results:
            self.queued.discard(command.command_id)
            self._resolve(command.command_id, code)
            if code != DONE:  # not carried out: a resend of the same id must get through
                log.warning("platform answered %d to %s", code, command)
                continue
            self.commands_seen[command.command_id] = None
            if isinstance(command, DisableTrading):
                arrived = self.arrivals.get(command.caused_by)
                if arrived is not None:
                    self.metrics.breach_to_freeze.observe(done - arrived)


RemoteBridgeWorker: Any = ray.remote(BridgeWorker)
