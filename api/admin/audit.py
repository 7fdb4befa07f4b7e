"""The audit trail over HTTP: `GET /api/v1/audit` (filtered, newest first) and
`GET /api/v1/audit/verify` (the whole chain walked and every hash recomputed).

Records are written by the handlers that make changes (`ledger.audit.append`, in the change's own
transaction); this module only reads them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from sqlalchemy import ColumnElement, select

from api.auth import Permission, Role
from api.endpoints import Call, Endpoint, Reply
from api.pagination import Page, PageQuery, decode_cursor, page_of
from ledger import audit
from ledger.audit import AuditEntry, ChainReport
from ledger.schema import audit_log

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT64_MAX = 2**63 - 1  # the columns are BIGINT: a bound past them would fail in the database


def _as_utc(value: dt.datetime) -> dt.datetime:
    """A time without an offset is read as UTC (the trail's own clock)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


# NUL is refused here because PostgreSQL text cannot hold it (the query would fail, a 500).
Text = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00]*$")]
Instant = Annotated[dt.datetime, AfterValidator(_as_utc)]
# Inline: the OpenAPI generator does not carry a query model's `$defs` into the components.
RoleName = Annotated[Role, WithJsonSchema({"type": "string", "enum": [r.value for r in Role]})]


class AuditQuery(PageQuery):
    """Filters, all optional and combined with AND; `since` inclusive, `until` exclusive
    (ISO 8601, UTC unless an offset is given). Newest first; `cursor` from `next_cursor`."""

    actor: Text | None = None
    role: RoleName | None = None
    action: Text | None = None
    target_type: Text | None = None
    target_id: Text | None = None
    trader_id: Text | None = None
    request_id: Text | None = None
    since: Instant | None = None
    until: Instant | None = None

    @field_validator("until")
    @classmethod
    def _after_since(cls, until: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
        since = info.data.get("since")
        if until is not None and since is not None and until <= since:
            raise ValueError("must be later than `since`")
        return until


class AuditEntryView(BaseModel):
    """One audit record as stored, with its place in the hash chain. `before` and `after` are
    the target's state (JSON values, null when there is none)."""

    seq: int
    ts: dt.datetime = Field(description="when it was written, UTC (microseconds; see `ts_ns`)")
    ts_ns: int = Field(description="when it was written, UTC nanoseconds since the epoch")
    actor: str
    role: str
    action: str
    target_type: str
    target_id: str
    trader_id: str | None
    before: Any
    after: Any
    request_id: str
    prev_hash: str
    hash: str


AuditPage = Page[AuditEntryView]

_EXACT = ("actor", "role", "action", "target_type", "target_id", "trader_id", "request_id")


def ns_of(instant: dt.datetime) -> int:
    """UTC nanoseconds of an aware datetime, held to the BIGINT range."""
    ns = (instant - EPOCH) // dt.timedelta(microseconds=1) * 1000
    return min(max(ns, -_INT64_MAX - 1), _INT64_MAX)


def instant_of(ts_ns: int) -> dt.datetime:
    """The UTC datetime of a nanosecond timestamp (truncated to microseconds)."""
    seconds, rest = divmod(ts_ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=rest // 1000)


def view(entry: AuditEntry) -> AuditEntryView:
    """An entry as the API shows it: its time also as an ISO 8601 datetime."""
    return AuditEntryView(ts=instant_of(entry.ts_ns), **msgspec.structs.asdict(entry))


def conditions(query: AuditQuery) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a query: exact matches, the time window, and the cursor's seek."""
    found = [
        audit_log.c[name] == str(value)
        for name in _EXACT
        if (value := getattr(query, name)) is not None
    ]
    if query.since is not None:
        found.append(audit_log.c.ts_ns >= ns_of(query.since))
    if query.until is not None:
        found.append(audit_log.c.ts_ns < ns_of(query.until))
    after = decode_cursor(query.cursor, (int,))
    if after is not None:
        # A forged cursor past the BIGINT range starts from the newest rather than failing.
        found.append(audit_log.c.seq < min(max(after[0], 0), _INT64_MAX))
    return found


async def list_audit(call: Call) -> Reply:
    """A page of records matching the filters, newest first (keyset on `seq`)."""
    query = call.query_as(AuditQuery)
    statement = select(audit_log).where(*conditions(query))
    entries = await audit.read(call.engine, statement, query.limit + 1)
    return Reply(page_of([view(e) for e in entries], query.limit, lambda e: [e.seq]))


async def verify_audit(call: Call) -> Reply:
    """The whole chain checked; `ok` false names the first broken record."""
    return Reply(await audit.verify(call.engine))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/v1/audit",
        "list_audit",
        "Audit records, newest first, filtered by actor, role, action, target, trader, "
        "request and time.",
        list_audit,
        Permission.AUDIT_READ,
        "audit",
        query=AuditQuery,
        response=AuditPage,
    ),
    Endpoint(
        "GET",
        "/api/v1/audit/verify",
        "verify_audit",
        "Walk the audit chain and recompute every hash: the first broken record, or the head "
        "to keep elsewhere.",
        verify_audit,
        Permission.AUDIT_READ,
        "audit",
        response=ChainReport,
    ),
]
