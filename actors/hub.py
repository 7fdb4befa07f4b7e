"""`RiskHub`: fan-out of the risk view from the shards to any number of API processes.

Shards publish the rows of the accounts that changed and the domain events they applied
(`actors/risk.py`), fire-and-forget: a shard never waits for a client. The hub keeps the latest
row of every account, the firm-wide exposure per book (evaluation and funded) by currency and by
symbol, the open alerts (`actors/alerts.py`, persisted to `alerts`) and the recent breaches, and
numbers every message it emits with a sequence number. It keeps the last `max_messages` messages
in encoded chunks; each API process reads them with a cursor (`read(epoch, after)`, a long poll),
so adding API processes adds fan-out capacity and the hub does no per-client work.

A restarted hub starts a new `epoch` with no rows: each shard learns it from the answer to its
next publish and sends all its rows again; each API process learns it from its next read and
takes a new `state()`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import ray
from cachetools import TTLCache
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.alerts import Alert, AlertEngine, AlertRule, CalendarEntry, Condition, alert_of
from actors.events import RuleBreached
from actors.risk import BOOKS, FUNDED, RiskRow, StreamEvent
from ledger.database import create_engine
from ledger.schema import accounts, alert_rules, alerts, calendar_events, journal

log = logging.getLogger(__name__)


# -- messages ------------------------------------------------------------------------------------


class AccountUpdate(msgspec.Struct, kw_only=True, tag="account"):
    """An account's row changed. `applied_ns`: wall time its shard applied the earliest event
    behind it (the stream's lag is measured from there)."""

    seq: int = 0
    trader_id: str | None = None
    applied_ns: int
    row: RiskRow


class ExposureLine(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Net exposure to one currency (`amount` in its units) or symbol (`amount` in lots), its
    notional in firm-currency cents, and how many accounts hold it (`unpriced` of them have no
    quote to value it with, and are left out of `notional`)."""

    name: str
    amount: float
    notional: int
    accounts: int
    unpriced: int


class ExposureUpdate(msgspec.Struct, kw_only=True, tag="exposure"):
    """A book's whole exposure table, largest notional first."""

    seq: int = 0
    book: str
    currency: str  # the firm currency of every notional
    currencies: list[ExposureLine]
    symbols: list[ExposureLine]
    at_ns: int


class AlertRaised(msgspec.Struct, kw_only=True, tag="alert"):
    seq: int = 0
    alert: Alert


class AlertAcknowledged(msgspec.Struct, kw_only=True, tag="alert_ack"):
    seq: int = 0
    alert_id: str
    by: str
    note: str | None
    acknowledged_ns: int
    severity: str = "info"
    account_id: str | None = None
    trader_id: str | None = None


class BreachReported(msgspec.Struct, kw_only=True, tag="breach"):
    seq: int = 0
    trader_id: str | None = None
    event: RuleBreached


class EventReported(msgspec.Struct, kw_only=True, tag="event"):
    """Any other domain event of an account: passes, failures, pauses, freezes, warnings,
    reconciliation mismatches."""

    seq: int = 0
    trader_id: str | None = None
    event: StreamEvent


StreamMessage = (
    AccountUpdate
    | ExposureUpdate
    | AlertRaised
    | AlertAcknowledged
    | BreachReported
    | EventReported
)


class Published(msgspec.Struct, kw_only=True):
    """What a shard sends: rows, events, and the wall time of the earliest batch behind them."""

    rows: list[RiskRow]
    events: list[StreamEvent]
    applied_ns: int
    source: str = ""  # the shard; with `number`, orders its publications
    number: int = 0


class Read(msgspec.Struct, kw_only=True):
    """An answer to `read`: encoded chunks (each a msgpack list of messages, in order) holding
    every message after the cursor, and the last sequence number. `reset`: the cursor is of
    another epoch, or older than what the hub keeps: take a new `state()`."""

    epoch: str
    seq: int
    reset: bool = False
    chunks: list[bytes] = msgspec.field(default_factory=list)


class HubState(msgspec.Struct, kw_only=True):
    """Everything a reader needs to start at `seq`: the latest message of each account and
    book, the open alerts and the recent breaches."""

    epoch: str
    seq: int
    accounts: list[AccountUpdate]
    exposure: list[ExposureUpdate]
    alerts: list[Alert]
    breaches: list[BreachReported]
    firm_currency: str


_encode = msgspec.msgpack.encode
_decode_published = msgspec.msgpack.Decoder(Published)


class HubConfig(msgspec.Struct, frozen=True, kw_only=True):
    firm_currency: str = "USD"
    max_messages: int = 200_000  # kept for readers that fall behind or resume
    exposure_interval_s: float = 0.25  # exposure tables and currency alerts, when changed
    news_interval_s: float = 1.0  # the calendar against funded exposure
    calendar_reload_s: float = 60.0
    flush_interval_s: float = 0.1  # alerts to the database
    recent_breaches: int = 200
    max_open_alerts: int = 1_000  # in the live view; every alert stays in the database
    rules_reload_s: float = 60.0
    calendar_ahead_s: float = 7 * 86_400.0


# -- exposure -----------------------------------------------------------------------------------


class _Line:
    __slots__ = ("accounts", "amount", "notional", "unpriced")

    def __init__(self) -> None:
        self.amount = 0.0
        self.notional = 0
        self.accounts = 0
        self.unpriced = 0


class Exposure:
    """One book's net exposure, kept current by adding each account's new row and taking away
    its old one."""

    def __init__(self) -> None:
        self.currencies: dict[str, _Line] = {}
        self.symbols: dict[str, _Line] = {}

    def add(self, row: RiskRow, sign: int) -> None:
        for leg in row.legs:
            self._put(self.symbols, leg.symbol, leg.lots, leg.notional, sign)
        for cleg in row.currencies:
            self._put(self.currencies, cleg.currency, cleg.amount, cleg.notional, sign)

    @staticmethod
    def _put(
        table: dict[str, _Line], name: str, amount: float, notional: int | None, sign: int
    ) -> None:
        line = table.get(name)
        if line is None:
            line = table[name] = _Line()
        line.amount += sign * amount
        line.accounts += sign
        if notional is None:
            line.unpriced += sign
        else:
            line.notional += sign * notional
        if line.accounts <= 0:
            del table[name]

    def net(self) -> dict[str, int]:
        """Net notional per currency (firm-currency cents, signed)."""
        return {name: line.notional for name, line in self.currencies.items()}

    @staticmethod
    def lines(table: dict[str, _Line]) -> list[ExposureLine]:
        found = [
            ExposureLine(
                name=name,
                amount=round(line.amount, 6),
                notional=line.notional,
                accounts=line.accounts,
                unpriced=line.unpriced,
            )
            for name, line in table.items()
        ]
        found.sort(key=lambda line: (-abs(line.notional), line.name))
        return found


# -- the hub ------------------------------------------------------------------------------------


class RiskHub:
    """The risk view's single writer: rows in, numbered messages out."""

    def __init__(self, database_url: str, config: HubConfig | None = None) -> None:
        self.config = config or HubConfig()
        self.engine: AsyncEngine = create_engine(database_url)
        self.epoch = f"{time.time_ns():x}-{secrets.token_hex(3)}"
        self.seq = 0
        self.chunks: deque[tuple[int, int, bytes]] = deque()  # (first, last seq, msgpack list)
        self.kept = 0
        self.rows: dict[str, AccountUpdate] = {}
        self.books = {book: Exposure() for book in BOOKS}
        self.exposure: dict[str, ExposureUpdate] = {}
        self.changed_books: set[str] = set()
        self.engine_alerts = AlertEngine(firm_currency=self.config.firm_currency)
        self.open: dict[str, Alert] = {}
        self.unsaved: list[Alert] = []
        self.breaches: deque[BreachReported] = deque(maxlen=self.config.recent_breaches)
        self.calendar: list[CalendarEntry] = []
        self.traders: TTLCache[str, str | None] = TTLCache(maxsize=1_000_000, ttl=60.0)
        self.known: dict[str, str] = {}  # account -> trader, for accounts in the registry
        self.arrived = asyncio.Event()
        self.loaded: asyncio.Future[None] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.published_rows = 0
        self.applying = asyncio.Lock()  # publications apply one at a time, in arrival order
        self.numbers: dict[str, tuple[str, int]] = {}  # account -> (source, number) of its row
        self.flushing = asyncio.Lock()

    # -- life cycle -------------------------------------------------------------------------------

    async def ready(self) -> str:
        """Load rules, calendar, open alerts and recent breaches (once); the epoch."""
        if self.loaded is None:
            self.loaded = asyncio.ensure_future(self._load())
        try:
            await asyncio.shield(self.loaded)
        except Exception:
            if self.loaded.done():
                self.loaded = None
            raise
        return self.epoch

    async def _load(self) -> None:
        await self.reload_rules()
        await self.reload_calendar()
        async with self.engine.connect() as conn:
            found = await conn.execute(
                select(alerts)
                .where(alerts.c.acknowledged_ns.is_(None))
                .order_by(alerts.c.raised_ns.desc())
                .limit(self.config.max_open_alerts)
            )
            opened = [alert_of(row) for row in found]
            breaches = await conn.execute(
                select(journal.c.payload)
                .where(journal.c.kind == "rule_breached")
                .order_by(journal.c.seq.desc())
                .limit(self.config.recent_breaches)
            )
            recent = [msgspec.msgpack.decode(p, type=RuleBreached) for (p,) in breaches]
        for alert in reversed(opened):
            self.open[alert.id] = alert
        self.engine_alerts.remember(alert.key for alert in opened)
        for event in reversed(recent):
            self.breaches.append(BreachReported(event=event))
        self.tasks = [asyncio.create_task(self._run_forever())]

    async def ping(self) -> Any:
        from bridge.liveness import pulse

        await self.ready()
        return pulse()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        await self._flush()
        await self.engine.dispose()

    async def reload_rules(self) -> int:
        """Read the alert rules again (the API calls this after a change); how many are on."""
        async with self.engine.connect() as conn:
            found = await conn.execute(select(alert_rules))
            rules = [
                AlertRule(
                    id=row.id,
                    name=row.name,
                    severity=row.severity,
                    enabled=bool(row.enabled),
                    condition=msgspec.json.decode(row.condition, type=Condition),
                )
                for row in found
            ]
        self.engine_alerts.set_rules(rules)
        return len(self.engine_alerts.rules)

    async def reload_calendar(self) -> int:
        """Read the releases from an hour ago to `calendar_ahead_s` ahead; how many."""
        now = time.time_ns()
        async with self.engine.connect() as conn:
            found = await conn.execute(
                select(calendar_events)
                .where(
                    calendar_events.c.ts_ns >= now - 3_600 * 10**9,
                    calendar_events.c.ts_ns <= now + round(self.config.calendar_ahead_s * 1e9),
                )
                .order_by(calendar_events.c.ts_ns)
            )
            self.calendar = [
                CalendarEntry(
                    id=row.id,
                    currency=row.currency,
                    impact=row.impact,
                    title=row.title,
                    ts_ns=row.ts_ns,
                )
                for row in found
            ]
        return len(self.calendar)

    # -- in ---------------------------------------------------------------------------------

    async def publish(self, payload: bytes) -> str:
        """A shard's rows and events (`Published`, msgpack). Returns the epoch: a shard that
        sees it change sends every row again."""
        await self.ready()
        published = _decode_published.decode(payload)
        async with self.applying:
            await self._resolve([row.account_id for row in published.rows])
            await self._resolve([e.account_id for e in published.events])
            self._apply(published)
        return self.epoch

    def _apply(self, published: Published) -> None:
        """Fold a publication in and emit its messages (no await: one step)."""
        now = time.time_ns()
        out: list[StreamMessage] = []
        traders = self.known
        for row in published.rows:
            if not self._newer(row.account_id, published):
                continue  # a later publication of the same shard was applied first
            trader = traders.get(row.account_id)
            update = AccountUpdate(trader_id=trader, applied_ns=published.applied_ns, row=row)
            previous = self.rows.get(row.account_id)
            if previous is not None:
                self.books[previous.row.book].add(previous.row, -1)
                self.changed_books.add(previous.row.book)
            self.books[row.book].add(row, 1)
            self.changed_books.add(row.book)
            self.rows[row.account_id] = update
            out.append(update)
            out.extend(AlertRaised(alert=a) for a in self.engine_alerts.on_row(row, trader, now))
        for event in published.events:
            trader = traders.get(event.account_id)
            if isinstance(event, RuleBreached):
                reported = BreachReported(trader_id=trader, event=event)
                self.breaches.append(reported)
                out.append(reported)
            else:
                out.append(EventReported(trader_id=trader, event=event))
            out.extend(
                AlertRaised(alert=a) for a in self.engine_alerts.on_event(event, trader, now)
            )
        self.published_rows += len(published.rows)
        self._emit(out)

    def _newer(self, account_id: str, published: Published) -> bool:
        if not published.number:
            return True
        seen = self.numbers.get(account_id)
        if seen is not None and seen[0] == published.source and seen[1] > published.number:
            return False
        self.numbers[account_id] = (published.source, published.number)
        return True

    async def events(self, payload: bytes) -> str:
        """Events from outside the shards (the reconciler's mismatches): `Published` too."""
        return await self.publish(payload)

    async def kyc_overdue(
        self, trader_id: str, tier: str, requested_ns: int, deadline_ns: int
    ) -> int:
        """The KYC supervisor escalated a case past its deadline: the alerts raised (0 when
        this request was alerted already, or no rule asks for it)."""
        await self.ready()
        raised = self.engine_alerts.on_kyc_overdue(
            trader_id, tier, requested_ns, deadline_ns, time.time_ns()
        )
        self._emit([AlertRaised(alert=a) for a in raised])
        return len(raised)

    async def affiliate_mismatch(self, differences: list[dict[str, Any]]) -> int:
        """The affiliate supervisor's reconciliation found differences (`ledger.affiliates.
        Difference` as dicts): the alerts raised."""
        await self.ready()
        now = time.time_ns()
        raised = [
            alert
            for d in differences
            for alert in self.engine_alerts.on_affiliate_mismatch(
                d["affiliate_id"], d["currency"], d["accrued"] - d["paid"], d["books"], now
            )
        ]
        self._emit([AlertRaised(alert=a) for a in raised])
        return len(raised)

    async def acknowledge(self, alert_id: str, by: str, note: str | None, at_ns: int) -> None:
        """An alert was acknowledged (the API wrote it and its audit record)."""
        await self.ready()
        alert = self.open.pop(alert_id, None)
        self._emit(
            [
                AlertAcknowledged(
                    alert_id=alert_id,
                    by=by,
                    note=note,
                    acknowledged_ns=at_ns,
                    severity=alert.severity if alert else "info",
                    account_id=alert.account_id if alert else None,
                    trader_id=alert.trader_id if alert else None,
                )
            ]
        )

    async def _resolve(self, account_ids: Sequence[str]) -> None:
        """Learn the trader of accounts not seen lately (the registry's; None if not there)."""
        unknown = [
            a for a in dict.fromkeys(account_ids) if a not in self.known and a not in self.traders
        ]
        if not unknown:
            return
        async with self.engine.connect() as conn:
            for start in range(0, len(unknown), 1_000):
                part = unknown[start : start + 1_000]
                found = await conn.execute(
                    select(accounts.c.id, accounts.c.trader_id).where(accounts.c.id.in_(part))
                )
                owners = dict(found.tuples().all())
                for account_id in part:
                    owner = owners.get(account_id)
                    self.traders[account_id] = owner
                    if owner is not None:
                        self.known[account_id] = owner

    # -- out ---------------------------------------------------------------------------------

    def _emit(self, messages: list[StreamMessage]) -> None:
        if not messages:
            return
        first = self.seq + 1
        for message in messages:
            self.seq += 1
            message.seq = self.seq
            if isinstance(message, AlertRaised):
                self.open[message.alert.id] = message.alert
                self.unsaved.append(message.alert)
                while len(self.open) > self.config.max_open_alerts:  # the oldest leave the view
                    del self.open[next(iter(self.open))]
        self.chunks.append((first, self.seq, _encode(messages)))
        self.kept += len(messages)
        while self.kept > self.config.max_messages and len(self.chunks) > 1:
            dropped = self.chunks.popleft()
            self.kept -= dropped[1] - dropped[0] + 1
        self.arrived.set()
        self.arrived = asyncio.Event()

    async def read(self, epoch: str, after: int, wait_s: float = 1.0) -> Read:
        """Every message after sequence number `after` of `epoch`, waiting up to `wait_s` for
        one if there is none yet."""
        await self.ready()
        oldest = self.chunks[0][0] if self.chunks else self.seq + 1
        if epoch != self.epoch or after > self.seq or after < oldest - 1:
            return Read(epoch=self.epoch, seq=self.seq, reset=True)
        if after == self.seq and wait_s > 0:
            arrived = self.arrived
            try:
                await asyncio.wait_for(arrived.wait(), timeout=wait_s)
            except TimeoutError:
                return Read(epoch=self.epoch, seq=self.seq)
        start = len(self.chunks)
        while start > 0 and self.chunks[start - 1][1] > after:
            start -= 1
        chunks = [self.chunks[i][2] for i in range(start, len(self.chunks))]
        return Read(epoch=self.epoch, seq=self.seq, chunks=chunks)

    async def state(self) -> bytes:
        """`HubState`, msgpack: what a reader starts from."""
        await self.ready()
        state = HubState(
            epoch=self.epoch,
            seq=self.seq,
            accounts=list(self.rows.values()),
            exposure=list(self.exposure.values()),
            alerts=list(self.open.values()),
            breaches=list(self.breaches),
            firm_currency=self.config.firm_currency,
        )
        return _encode(state)

    async def stats(self) -> dict[str, int]:
        await self.ready()
        return {
            "seq": self.seq,
            "accounts": len(self.rows),
            "kept": self.kept,
            "open_alerts": len(self.open),
            "rows": self.published_rows,
        }

    # -- timers ---------------------------------------------------------------------------------

    def _exposure_tick(self, now: int) -> None:
        out: list[StreamMessage] = []
        for book in sorted(self.changed_books):
            exposure = self.books[book]
            update = ExposureUpdate(
                book=book,
                currency=self.config.firm_currency,
                currencies=Exposure.lines(exposure.currencies),
                symbols=Exposure.lines(exposure.symbols),
                at_ns=now,
            )
            previous = self.exposure.get(book)
            if previous is not None and (
                previous.currencies == update.currencies and previous.symbols == update.symbols
            ):
                continue
            self.exposure[book] = update
            out.append(update)
            raised = self.engine_alerts.on_exposure(book, exposure.net(), now)
            out.extend(AlertRaised(alert=a) for a in raised)
        self.changed_books.clear()
        self._emit(out)

    def _news_tick(self, now: int) -> None:
        funded = self.books[FUNDED].net()
        raised = self.engine_alerts.on_clock(now, self.calendar, funded)
        self._emit([AlertRaised(alert=a) for a in raised])

    async def _run_forever(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        next_news = next_calendar = next_flush = loop.time()
        next_rules = loop.time() + config.rules_reload_s
        while True:
            await asyncio.sleep(config.exposure_interval_s)
            try:
                now = time.time_ns()
                self._exposure_tick(now)
                if loop.time() >= next_news:
                    next_news = loop.time() + config.news_interval_s
                    self._news_tick(now)
                if loop.time() >= next_calendar:
                    next_calendar = loop.time() + config.calendar_reload_s
                    await self.reload_calendar()
                if loop.time() >= next_rules:  # a reload the API asked for may have failed
                    next_rules = loop.time() + config.rules_reload_s
                    await self.reload_rules()
                if loop.time() >= next_flush:
                    next_flush = loop.time() + config.flush_interval_s
                    await self._flush()
            except Exception:
                log.exception("risk hub timer failed; %d alerts unsaved", len(self.unsaved))

    async def flush(self) -> int:
        """Write the alerts raised since the last write (tests and shutdown)."""
        return await self._flush()

    async def _flush(self) -> int:
        async with self.flushing:  # a caller returns only once what was raised is written
            batch, self.unsaved = self.unsaved, []
            if not batch:
                return 0
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(alerts.insert(), [_row_of(alert) for alert in batch])
            except Exception:
                self.unsaved[:0] = batch
                raise
            return len(batch)


def _row_of(alert: Alert) -> dict[str, Any]:
    return msgspec.structs.asdict(alert)


def encode_published(
    rows: Iterable[RiskRow],
    events: Iterable[StreamEvent],
    applied_ns: int,
    source: str = "",
    number: int = 0,
) -> bytes:
    """A `Published` payload. `number` counts a source's publications: the hub never lets an
    older publication's row replace a newer one's."""
    published = Published(
        rows=list(rows), events=list(events), applied_ns=applied_ns, source=source, number=number
    )
    return _encode(published)


RemoteRiskHub: Any = ray.remote(RiskHub)
