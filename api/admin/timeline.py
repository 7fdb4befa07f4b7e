"""Trader timeline: `GET /api/v1/traders/{trader_id}/timeline`, a trader's whole history, newest
first.

Each source (the accounts registry, the journal, the audit trail, which holds every payout step
and KYC tier change) is one function in `SOURCES` that fetches at most `limit + 1` entries past
the cursor, through an index, and a page is the merge of their answers. So a deep page costs
what the first one costs, and a new source is one more function.

The order is (ts_ns desc, source, seq desc, ref): `seq` is the journal's or the audit trail's own
number; accounts have none, so an `account_opened` has seq 0 and its account id as `ref` (empty
for the others). The key is unique, so a cursor (the key of a page's last item) neither skips
nor repeats an item however many share a timestamp.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
from pydantic import Field, field_validator
from sqlalchemy import ColumnElement, Select, and_, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from actors.events import (
    AccountFrozen,
    AccountPaused,
    AccountResumed,
    PhaseFailed,
    PhasePassed,
    ReconciliationMismatch,
    RuleBreached,
    RuleName,
    RuleProgressed,
    VerdictUnconfirmed,
)
from api.auth import Permission
from api.endpoints import Call, Endpoint, Reply
from api.pagination import PageQuery, decode_cursor, encode_cursor
from api.problems import ApiError, FieldError, not_found
from bridge.events import (
    BalanceOperated,
    DealEntry,
    DealExecuted,
    PriceTicked,
    TradingDisabled,
)
from ledger.schema import accounts, audit_log, journal, traders

Source = Literal["account", "audit", "journal"]

ACCOUNT_OPENED = "account_opened"
MAX_KINDS = 50

# A trader with more accounts than this gets one `IN` scan of the journal instead of one
# index seek per account (the seeks are faster but the statement grows with the accounts).
_SEEKS_MAX = 32

_INT64 = 2**63
_ID_MAX = 128


class TimelineItem(msgspec.Struct, frozen=True, kw_only=True):
    """One thing that happened to the trader. `id` is stable (`journal:123`, `audit:45`,
    `account:acc-x`); `ts` is `ts_ns` to the microsecond; `data` holds the details as recorded
    (a journal event decoded, as the platform or the rules stated it; an audit record with its
    before and after; an account's registry row)."""

    id: str
    ts: datetime
    ts_ns: int
    kind: str
    source: Source
    account_id: str | None
    summary: str
    data: dict[str, Any]


class TimelinePage(msgspec.Struct, frozen=True, kw_only=True):
    """One page, newest first: `next_cursor` is null on the last page."""

    items: list[TimelineItem]
    next_cursor: str | None


class TimelineQuery(PageQuery):
    """`kinds`: only these kinds (comma-separated: journal tags such as `deal,rule_breached`,
    audit actions such as `account.freeze`, or `account_opened`); `account_id`: only what
    concerns that account of the trader."""

    kinds: str | None = Field(
        default=None, max_length=2_000, pattern=r"^[A-Za-z0-9_.:\-]+(,[A-Za-z0-9_.:\-]+)*$"
    )
    account_id: str | None = Field(
        default=None, min_length=1, max_length=_ID_MAX, pattern=r"^[^\x00]+$"
    )

    @field_validator("kinds")
    @classmethod
    def _few_kinds(cls, kinds: str | None) -> str | None:
        # Each kind is a bound parameter in each account's journal seek: keep the statement small.
        if kinds is not None and len(set(kinds.split(","))) > MAX_KINDS:
            raise ValueError(f"at most {MAX_KINDS} kinds")
        return kinds


# The sort key and the entries the sources return ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """Where an entry sits in the timeline (see the module docstring)."""

    ts_ns: int
    source: str
    seq: int
    ref: str

    @property
    def order(self) -> tuple[int, str, int, str]:
        """Ascending in this tuple is the timeline's order."""
        return (-self.ts_ns, self.source, -self.seq, self.ref)


@dataclass(frozen=True, slots=True)
class Entry:
    """A row a source found, rendered into an item only if it makes the page (so payloads past
    the page are never decoded)."""

    key: Key
    row: Any
    render: Callable[[Any], TimelineItem]


@dataclass(frozen=True)
class Scope:
    """What to fetch: the trader, its accounts (narrowed by the filter), the filters, the cursor,
    and how many entries each source returns at most."""

    trader_id: str
    accounts: Sequence[Any]
    account_id: str | None
    kinds: frozenset[str] | None
    after: Key | None
    limit: int


FetchSource = Callable[[AsyncConnection, Scope], Awaitable[list[Entry]]]


# The handler ------------------------------------------------------------------------------------


async def get_timeline(call: Call) -> Reply:
    """One page of a trader's timeline: every source's next entries, merged."""
    query = call.query_as(TimelineQuery)
    after = _after(query.cursor)
    trader_id = call.path("trader_id")
    async with call.engine.connect() as conn:
        owned = await _accounts_of(conn, trader_id)
        scope = Scope(
            trader_id=trader_id,
            accounts=[a for a in owned if query.account_id in (None, a.id)],
            account_id=query.account_id,
            kinds=None if query.kinds is None else frozenset(query.kinds.split(",")),
            after=after,
            limit=query.limit + 1,
        )
        found = [entry for fetch in SOURCES for entry in await fetch(conn, scope)]
    found.sort(key=lambda entry: entry.key.order)
    return Reply(_page(found, query.limit))


async def _accounts_of(conn: AsyncConnection, trader_id: str) -> list[Any]:
    """The trader's accounts (one round trip: the trader left-joined to them); 404 if there is
    no such trader."""
    if not 0 < len(trader_id) <= _ID_MAX or "\x00" in trader_id:
        raise not_found("Trader", trader_id)
    statement = (
        select(traders.c.id.label("trader"), accounts)
        .select_from(traders.outerjoin(accounts, accounts.c.trader_id == traders.c.id))
        .where(traders.c.id == trader_id)
    )
    rows = (await conn.execute(statement)).all()
    if not rows:
        raise not_found("Trader", trader_id)
    return [row for row in rows if row.id is not None]


def _page(found: list[Entry], limit: int) -> TimelinePage:
    shown = found[:limit]
    last = shown[-1].key if shown and len(found) > limit else None
    cursor = None if last is None else encode_cursor([last.ts_ns, last.source, last.seq, last.ref])
    return TimelinePage(items=[e.render(e.row) for e in shown], next_cursor=cursor)


def _after(cursor: str | None) -> Key | None:
    parts = decode_cursor(cursor, (int, str, int, str))
    if parts is None:
        return None
    key = Key(ts_ns=parts[0], source=parts[1], seq=parts[2], ref=parts[3])
    if not (0 <= key.ts_ns < _INT64 and 0 <= key.seq < _INT64):  # else the database refuses
        raise _invalid_cursor()
    return key


def _invalid_cursor() -> ApiError:
    message = "not a cursor this list returned"
    return ApiError(
        400,
        "Invalid cursor",
        f"query.cursor: {message}",
        errors=[FieldError(field="query.cursor", message=message)],
    )


def _seek(
    ts_ns: ColumnElement[int], seq: ColumnElement[int], source: Source, after: Key | None
) -> ColumnElement[bool] | None:
    """The rows of `source` that come after the cursor. The plain `ts_ns <=` bound is there even
    where the tuple condition implies it: it is what an index on `ts_ns` can seek to."""
    if after is None:
        return None
    if source > after.source:
        return ts_ns <= after.ts_ns
    if source < after.source:
        return ts_ns < after.ts_ns
    return and_(ts_ns <= after.ts_ns, or_(ts_ns < after.ts_ns, seq < after.seq))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(ts_ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ts_ns // 1_000)


# Source: the accounts registry ------------------------------------------------------------------


async def accounts_opened(conn: AsyncConnection, scope: Scope) -> list[Entry]:
    """Each account's opening (already read with the trader: no query of its own)."""
    if scope.kinds is not None and ACCOUNT_OPENED not in scope.kinds:
        return []
    entries = [
        Entry(Key(int(a.created_ns), "account", 0, a.id), a, _account_item) for a in scope.accounts
    ]
    if scope.after is None:
        return entries
    after = scope.after.order
    return [e for e in entries if e.key.order > after]


def _account_item(row: Any) -> TimelineItem:
    return TimelineItem(
        id=f"account:{row.id}",
        ts=_utc(row.created_ns),
        ts_ns=row.created_ns,
        kind=ACCOUNT_OPENED,
        source="account",
        account_id=row.id,
        summary=f"Account {row.id} opened: plan {row.plan_id} v{row.plan_version}, "
        f"phase {row.phase}, status now {row.status}",
        data={name: row._mapping[name] for name in _ACCOUNT_FIELDS},
    )


_ACCOUNT_FIELDS = (
    "plan_id",
    "plan_version",
    "phase",
    "status",
    "purchase_id",
    "connection",
    "platform_login",
    "failed_rule",
    "reason",
    "previous_id",
)


# Source: the journal ----------------------------------------------------------------------------


async def journal_events(conn: AsyncConnection, scope: Scope) -> list[Entry]:
    """The journal rows of the trader's accounts: one index seek per account on
    (account_id, ts_ns), each at most `limit` rows, merged by the database."""
    ids = [a.id for a in scope.accounts]
    if not ids:
        return []
    if len(ids) > _SEEKS_MAX:
        parts = [_journal_part(journal.c.account_id.in_(ids), scope)]
    else:
        parts = [_journal_part(journal.c.account_id == i, scope) for i in ids]
    merged = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery()
    statement = (
        select(merged).order_by(merged.c.ts_ns.desc(), merged.c.seq.desc()).limit(scope.limit)
    )
    rows = (await conn.execute(statement)).all()
    return [Entry(Key(row.ts_ns, "journal", row.seq, ""), row, _journal_item) for row in rows]


def _journal_part(accounts_match: ColumnElement[bool], scope: Scope) -> Select[Any]:
    c = journal.c
    statement = select(c.seq, c.account_id, c.kind, c.ts_ns, c.payload).where(accounts_match)
    if scope.kinds is not None:
        statement = statement.where(c.kind.in_(scope.kinds))
    seek = _seek(c.ts_ns, c.seq, "journal", scope.after)
    if seek is not None:
        statement = statement.where(seek)
    # Wrapped: SQLite refuses ORDER BY and LIMIT on the members of a UNION themselves.
    ordered = statement.order_by(c.ts_ns.desc(), c.seq.desc()).limit(scope.limit).subquery()
    return select(ordered)


def _journal_item(row: Any) -> TimelineItem:
    event, data = decode_payload(bytes(row.payload))
    return TimelineItem(
        id=f"journal:{row.seq}",
        ts=_utc(row.ts_ns),
        ts_ns=row.ts_ns,
        kind=row.kind,
        source="journal",
        account_id=row.account_id,
        summary=row.kind if event is None else summary(event),
        data=data,
    )


JournalEvent = (
    PriceTicked
    | DealExecuted
    | BalanceOperated
    | TradingDisabled
    | RuleBreached
    | RuleProgressed
    | PhasePassed
    | PhaseFailed
    | AccountPaused
    | AccountResumed
    | AccountFrozen
    | ReconciliationMismatch
    | VerdictUnconfirmed
)
"""Everything the journal holds: the platform events applied to accounts and the domain events
(`actors/shard_actor.py` `journal_record` encodes each as msgpack, its tag as the row's kind)."""

_events = msgspec.msgpack.Decoder(JournalEvent)
_raw = msgspec.msgpack.Decoder()


def decode_payload(payload: bytes) -> tuple[JournalEvent | None, dict[str, Any]]:
    """A journal payload as its event and that event as JSON builtins; a kind this code does not
    know (written by a newer version) comes back as the raw decoded map, with no event."""
    try:
        event = _events.decode(payload)
    except msgspec.DecodeError:  # also a ValidationError: an unknown tag or an older shape
        return None, _raw_payload(payload)
    return event, msgspec.to_builtins(event)


def _raw_payload(payload: bytes) -> dict[str, Any]:
    try:
        value = _raw.decode(payload)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


# One line per kind: short, and only what the event itself says.


def summary(event: JournalEvent) -> str:
    """A one-line text for a journal event."""
    return _SUMMARIES[type(event)](event)


def _deal(e: DealExecuted) -> str:
    text = f"Deal {e.volume:.2f} {e.symbol} {e.side.value} at {e.price}"
    if e.entry is DealEntry.OUT:
        return f"{text}, closing position {e.position_id}: profit {e.profit:,.2f}"
    return f"{text}, opening position {e.position_id}"


def _breach(e: RuleBreached) -> str:
    if e.rule in (RuleName.DAILY_LOSS, RuleName.MAX_LOSS):
        measured = f"equity {e.value:,.2f}, floor {e.limit:,.2f}"
    else:
        measured = f"{e.value:g} against a limit of {e.limit:g}"
    return f"Breached {e.rule.value} ({e.action.value}): {measured}"


def _progress(e: RuleProgressed) -> str:
    return (
        f"{e.rule.value} warning: {e.used_pct:.0f}% of the allowed loss used "
        f"(level {e.level:g}%), equity {e.equity:,.2f}"
    )


_SUMMARIES: dict[type[Any], Callable[[Any], str]] = {
    PriceTicked: lambda e: f"Price {e.symbol} {e.bid}/{e.ask}",
    DealExecuted: _deal,
    BalanceOperated: lambda e: f"{e.kind.value.capitalize()} {e.amount:,.2f}",
    TradingDisabled: lambda e: f"Trading disabled on the platform ({e.command_id})",
    RuleBreached: _breach,
    RuleProgressed: _progress,
    PhasePassed: lambda e: (
        f"Passed phase {e.phase}: profit {e.profit:,.2f} in {e.trading_days} trading days"
    ),
    PhaseFailed: lambda e: f"Failed phase {e.phase} on {e.rule.value}",
    AccountPaused: lambda e: (
        f"Paused by {e.rule.value} until {_utc(e.until_ns):%Y-%m-%d %H:%M} UTC"
    ),
    AccountResumed: lambda e: "Resumed trading",
    AccountFrozen: lambda e: f"Frozen on the platform: {e.reason}",
    ReconciliationMismatch: lambda e: f"Platform disagrees with our books: {e.detail}",
    VerdictUnconfirmed: lambda e: f"End-of-day check, verdict {e.verdict}: {e.detail}",
}


# Source: the audit trail ------------------------------------------------------------------------


async def operator_actions(conn: AsyncConnection, scope: Scope) -> list[Entry]:
    """Audit records about the trader, through (trader_id, ts_ns); with an account filter, only
    those whose target is that account."""
    c = audit_log.c
    statement = select(
        c.seq,
        c.ts_ns,
        c.actor,
        c.role,
        c.action,
        c.target_type,
        c.target_id,
        c.before,
        c.after,
        c.request_id,
    ).where(c.trader_id == scope.trader_id)
    if scope.kinds is not None:
        statement = statement.where(c.action.in_(scope.kinds))
    if scope.account_id is not None:
        statement = statement.where(c.target_type == "account", c.target_id == scope.account_id)
    seek = _seek(c.ts_ns, c.seq, "audit", scope.after)
    if seek is not None:
        statement = statement.where(seek)
    statement = statement.order_by(c.ts_ns.desc(), c.seq.desc()).limit(scope.limit)
    rows = (await conn.execute(statement)).all()
    return [Entry(Key(row.ts_ns, "audit", row.seq, ""), row, _audit_item) for row in rows]


def _audit_item(row: Any) -> TimelineItem:
    return TimelineItem(
        id=f"audit:{row.seq}",
        ts=_utc(row.ts_ns),
        ts_ns=row.ts_ns,
        kind=row.action,
        source="audit",
        account_id=row.target_id if row.target_type == "account" else None,
        summary=f"{row.action} {row.target_type} {row.target_id} by {row.actor} ({row.role})",
        data={
            "actor": row.actor,
            "role": row.role,
            "action": row.action,
            "target_type": row.target_type,
            "target_id": row.target_id,
            "before": None if row.before is None else msgspec.json.decode(row.before),
            "after": None if row.after is None else msgspec.json.decode(row.after),
            "request_id": row.request_id,
        },
    )


SOURCES: tuple[FetchSource, ...] = (accounts_opened, journal_events, operator_actions)
"""Every source of the timeline; each returns at most `scope.limit` entries past the cursor."""


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/v1/traders/{trader_id}/timeline",
        "get_trader_timeline",
        "Everything that happened to a trader (accounts, deals, breaches, operator actions), "
        "newest first.",
        get_timeline,
        Permission.TIMELINE_READ,
        "traders",
        query=TimelineQuery,
        response=TimelinePage,
    ),
]
