"""Reports: money moved by jurisdiction and time (`GET /api/v1/reports/transactions`, JSON or
CSV) and traders followed by acquisition source (`GET /api/v1/reports/cohorts`).

Every kind of transaction is one `select` onto the same columns (`_purchase_rows` for purchases);
the report reads their UNION ALL, so payouts and refunds join by adding a function to `SOURCES`
and a value to `Kind`. Each source applies the filter to its own table, so each branch can seek
through its own (country, time) index. Cohort figures are counted by the database (GROUP BY);
Python only divides the counts.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from aiohttp import hdrs, web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    Subquery,
    Text,
    distinct,
    func,
    literal_column,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from api.admin.traders import country_code
from api.auth import Permission
from api.endpoints import REQUEST_ID, Call, Endpoint, Reply
from api.pagination import PageQuery, decode_cursor, page_of
from ledger.money import amount_text
from ledger.schema import accounts, purchases, traders

# -- money and time ----------------------------------------------------------------------------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NS = 1_000_000_000
_INT64_MAX = 2**63 - 1  # the time columns are BIGINT nanoseconds


def _instant(value: object) -> dt.datetime:
    """An ISO 8601 date or date-time, in UTC (read as UTC unless it carries an offset)."""
    try:
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:  # numbers too: a Unix time is not what a report's reader means
        raise ValueError(
            "must be an ISO 8601 date or date-time, e.g. 2026-01-31 or 2026-01-31T12:00Z"
        )
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def ns_of(moment: dt.datetime) -> int:
    """UTC nanoseconds of an aware datetime, held to the BIGINT range of the columns (a bound
    past every row there can be selects the same rows as the bound itself)."""
    ns = (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1000
    return min(max(ns, -_INT64_MAX - 1), _INT64_MAX)


def iso_of(ts_ns: int) -> str:
    """ISO 8601 UTC with `Z`, to the nanosecond (fraction shown only when there is one)."""
    seconds, nanos = divmod(ts_ns, _NS)
    text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{nanos:09d}".rstrip("0") if nanos else "") + "Z"


Instant = Annotated[
    dt.datetime,
    BeforeValidator(_instant),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date"},
                {"type": "string", "format": "date-time"},
            ],
            "description": "ISO 8601 date or date-time, UTC unless it carries an offset",
        }
    ),
]
"""A point in time given as ISO 8601 text (never a number), held in UTC."""

Country = Annotated[
    str,
    AfterValidator(country_code),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z]{2}$", "examples": ["DE"]}),
]

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Window(BaseModel):
    """A time window: `from` inclusive, `to` exclusive; either may be left open."""

    model_config = ConfigDict(extra="forbid")

    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None

    @field_validator("to")
    @classmethod
    def _after_from(cls, to: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
        start = info.data.get("from_")
        if to is not None and start is not None and to <= start:
            raise ValueError("must be later than `from`")
        return to

    def conditions(self, column: Any) -> list[ColumnElement[bool]]:
        """The window on a nanosecond column."""
        found: list[ColumnElement[bool]] = []
        if self.from_ is not None:
            found.append(column >= ns_of(self.from_))
        if self.to is not None:
            found.append(column < ns_of(self.to))
        return found


class CurrencyTotal(BaseModel):
    """How many transactions in one currency and their sum (a decimal string)."""

    currency: str
    count: int
    amount: str


# -- transactions ------------------------------------------------------------------------------

Kind = Literal["purchase"]  # payouts and refunds join here, each with its source in SOURCES


class TransactionQuery(PageQuery, Window):
    """Transactions in a country (`country`, the trader's at the time) and a time window.
    `format`: json (a page, `cursor` and `limit`) or csv (every row); without it, an `Accept`
    of text/csv asks for CSV."""

    model_config = ConfigDict(extra="forbid")

    country: Country | None = None
    format: Literal["json", "csv"] | None = None


class Transaction(BaseModel):
    """One money movement. Amounts are decimal strings in the currency's units; `plan_id`,
    `plan_version` and `account_id` are null for kinds that have none."""

    id: str
    kind: Kind
    ts: Timestamp = Field(description="when it happened, ISO 8601 UTC (exact: `ts_ns`)")
    ts_ns: int = Field(description="when it happened, UTC nanoseconds since the epoch")
    trader_id: str
    country: str = Field(description="the trader's ISO 3166-1 alpha-2 country at the time")
    amount: str = Field(examples=["99.00"])
    currency: str
    reference: str = Field(description="the payment provider's reference")
    plan_id: str | None
    plan_version: int | None
    account_id: str | None


class TransactionPage(BaseModel):
    """A page of transactions, ordered by time then id; `totals` cover every transaction the
    filter matches, not just this page."""

    items: list[Transaction]
    next_cursor: str | None
    totals: list[CurrencyTotal]


@dataclass(frozen=True)
class Scope:
    """What a transactions report covers; each source applies it to its own columns."""

    country: str | None
    window: Window

    def conditions(self, country: Any, ts_ns: Any) -> list[ColumnElement[bool]]:
        """The scope on a source's country and nanosecond time columns."""
        found = self.window.conditions(ts_ns)
        if self.country is not None:
            found.append(country == self.country)
        return found


def _purchase_rows(scope: Scope) -> Select[Any]:
    p = purchases.c
    return select(
        p.id.label("id"),
        literal_column("'purchase'", Text).label("kind"),
        p.created_ns.label("ts_ns"),
        p.trader_id.label("trader_id"),
        p.country.label("country"),
        p.amount_minor.label("amount_minor"),
        p.currency.label("currency"),
        p.payment_reference.label("reference"),
        p.plan_id.label("plan_id"),
        p.plan_version.label("plan_version"),
        p.account_id.label("account_id"),
    ).where(*scope.conditions(p.country, p.created_ns))


SOURCES: tuple[Callable[[Scope], Select[Any]], ...] = (_purchase_rows,)
"""One select per kind of transaction, each onto the columns of `_purchase_rows`."""


def transactions_of(scope: Scope) -> Subquery:
    """Every kind of transaction the scope matches, as one relation."""
    selects = [source(scope) for source in SOURCES]
    rows = selects[0] if len(selects) == 1 else union_all(*selects)
    return rows.subquery("transactions")


Key = tuple[int, str, str]  # (ts_ns, id, kind): the order, and the cursor


async def _page(
    conn: AsyncConnection, rows: Subquery, after: Sequence[Any] | None, limit: int
) -> list[Row[Any]]:
    """Up to `limit` rows after `after`, ordered by time, then id (then kind: two kinds may
    one day share an id)."""
    order = (rows.c.ts_ns, rows.c.id, rows.c.kind)
    statement = select(rows).order_by(*order).limit(limit)
    if after is not None:
        statement = statement.where(tuple_(*order) > tuple_(*after))
    return list((await conn.execute(statement)).all())


async def _totals(conn: AsyncConnection, rows: Subquery) -> list[CurrencyTotal]:
    statement = (
        select(rows.c.currency, func.count(), func.sum(rows.c.amount_minor))
        .group_by(rows.c.currency)
        .order_by(rows.c.currency)
    )
    return [
        CurrencyTotal(currency=currency, count=count, amount=amount_text(int(total), currency))
        for currency, count, total in (await conn.execute(statement)).all()
    ]


_STORED = ("id", "kind", "ts_ns", "trader_id", "country", "currency", "reference", "plan_id",
           "plan_version", "account_id")  # fmt: skip


def _transaction(row: Row[Any]) -> Transaction:
    values = row._mapping
    return Transaction(
        ts=iso_of(values["ts_ns"]),
        amount=amount_text(values["amount_minor"], values["currency"]),
        **{name: values[name] for name in _STORED},
    )


def _key(row: Row[Any]) -> Key:
    return (row.ts_ns, row.id, row.kind)


async def transactions(call: Call) -> Reply | web.StreamResponse:
    """Transactions by jurisdiction and time: a JSON page with totals, or the whole CSV."""
    query = call.query_as(TransactionQuery)
    scope = Scope(country=query.country, window=query)
    if _wants_csv(query.format, call.request.headers.get(hdrs.ACCEPT, "")):
        return await _stream_csv(call, scope)
    after = decode_cursor(query.cursor, (int, str, str))  # (ts_ns, id, kind)
    rows = transactions_of(scope)
    async with call.engine.connect() as conn:
        found = await _page(conn, rows, after, query.limit + 1)
        totals = await _totals(conn, rows)
    page = page_of([_transaction(row) for row in found], query.limit, _cursor_key)
    return Reply(TransactionPage(items=page.items, next_cursor=page.next_cursor, totals=totals))


def _cursor_key(transaction: Transaction) -> list[Any]:
    return [transaction.ts_ns, transaction.id, transaction.kind]


def _wants_csv(given: str | None, accept: str) -> bool:
    """`format` decides; without it, CSV when `Accept` rates text/csv above JSON."""
    if given is not None:
        return given == "csv"
    return _quality(accept, "text/csv") > _quality(accept, "application/json")


def _quality(accept: str, media: str) -> float:
    """The q the `Accept` header gives `media` (its most specific match; 0 if none)."""
    kind = media.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for part in accept.split(","):
        name, *params = (piece.strip() for piece in part.split(";"))
        specific = {media: 2, f"{kind}/*": 1, "*/*": 0}.get(name.lower())
        if specific is not None and specific > best[0]:
            best = (specific, _q(params))
    return best[1]


def _q(params: Sequence[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


CSV_CHUNK = 1000
COLUMNS = tuple(Transaction.model_fields)


async def _stream_csv(call: Call, scope: Scope) -> web.StreamResponse:
    """Every matching row, a chunk at a time. Each chunk is its own short query (seeking past
    the last row sent), so a slow download holds no connection or transaction open."""
    rows = transactions_of(scope)
    # The first chunk is read before the headers go out: a failure there is still a clean error.
    async with call.engine.connect() as conn:
        chunk = await _page(conn, rows, None, CSV_CHUNK)
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_DISPOSITION: f'attachment; filename="{_filename(scope)}"',
            REQUEST_ID: call.request_id,  # the middleware's own comes too late once streaming
        }
    )
    response.content_type = "text/csv"
    response.charset = "utf-8"
    await response.prepare(call.request)
    await response.write(_csv_lines([COLUMNS]))
    while chunk:
        await response.write(_csv_lines(_cells(_transaction(row)) for row in chunk))
        if len(chunk) < CSV_CHUNK:
            break
        async with call.engine.connect() as conn:
            chunk = await _page(conn, rows, _key(chunk[-1]), CSV_CHUNK)
    await response.write_eof()
    return response


def _cells(transaction: Transaction) -> list[object]:
    values = transaction.model_dump()
    return [values[name] if name == "amount" else _safe(values[name]) for name in COLUMNS]


def _safe(value: object) -> object:
    """Text a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading
    quote: references come from payment providers, and these files are opened in spreadsheets.
    (Amounts are ours and left alone, so a negative amount stays a number.)"""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_lines(rows: Iterable[Sequence[object]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)  # RFC 4180 line ends
    return out.getvalue().encode()


def _filename(scope: Scope) -> str:
    """transactions-{country|all}-{from|start}-{to|now}.csv"""
    start, end = scope.window.from_, scope.window.to
    parts = (
        scope.country or "all",
        "start" if start is None else _stamp(start),
        "now" if end is None else _stamp(end),
    )
    return "transactions-" + "-".join(parts) + ".csv"


def _stamp(moment: dt.datetime) -> str:
    if moment.time() == dt.time():
        return moment.strftime("%Y-%m-%d")  # a whole day: the date alone
    return moment.strftime("%Y%m%dT%H%M%SZ")


# -- cohorts -----------------------------------------------------------------------------------

CONCLUDED = ("passed", "failed")
UNSPECIFIED_RULE = "unspecified"


class CohortQuery(Window):
    """Traders who signed up in the window (`from` inclusive, `to` exclusive), optionally from
    one `source`; one row per source, or per source and campaign with `by=campaign`."""

    model_config = ConfigDict(extra="forbid")

    # NUL refused here: PostgreSQL text cannot hold it (the query would fail, a 500).
    source: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[^\x00]*$")
    by: Literal["source", "campaign"] = "source"


class CohortRow(BaseModel):
    """One cohort: the traders of a source (and campaign) who signed up in the window, and
    everything they did since, whenever it happened."""

    source: str
    campaign: str | None = Field(
        description="with by=campaign, the campaign (null: traders without one); "
        "with by=source, always null (every campaign together)"
    )
    traders: int = Field(description="traders who signed up in the window")
    traders_with_purchase: int = Field(description="of those, traders with at least one purchase")
    conversion: float = Field(description="traders_with_purchase / traders")
    purchases: int = Field(description="purchases those traders made")
    revenue: list[CurrencyTotal] = Field(description="those purchases per currency, summed")
    first_phase_concluded: int = Field(
        description="first-phase accounts (one per purchase: no previous account) that ended, "
        "passed or failed; accounts still trading, frozen or never opened are not counted"
    )
    first_phase_passed: int = Field(description="of those, passed")
    first_phase_failed: int = Field(description="of those, failed")
    pass_rate: float | None = Field(
        description="first_phase_passed / first_phase_concluded; null when none concluded"
    )
    failed_by_rule: dict[str, int] = Field(
        description="failed first-phase accounts per rule that failed them "
        f"({UNSPECIFIED_RULE!r}: failed with no rule recorded)"
    )
    breach_rate_by_rule: dict[str, float] = Field(
        description="failed_by_rule / first_phase_concluded, per rule"
    )


class CohortReport(BaseModel):
    """Cohorts by acquisition source. Funded accounts are not reported: which phase is the
    funded one is the plan's to say, and the registry does not record it yet."""

    by: Literal["source", "campaign"]
    signed_up_from: Timestamp | None
    signed_up_to: Timestamp | None
    rows: list[CohortRow]


GroupKey = tuple[str, str | None]


@dataclass
class _Tally:
    """A cohort's counts, as the database returned them."""

    traders: int = 0
    with_purchase: int = 0
    purchases: int = 0
    revenue: list[CurrencyTotal] = field(default_factory=list)
    passed: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    def row(self, key: GroupKey) -> CohortRow:
        failed = sum(self.failed.values())
        concluded = self.passed + failed
        return CohortRow(
            source=key[0],
            campaign=key[1],
            traders=self.traders,
            traders_with_purchase=self.with_purchase,
            conversion=self.with_purchase / self.traders if self.traders else 0.0,
            purchases=self.purchases,
            revenue=self.revenue,
            first_phase_concluded=concluded,
            first_phase_passed=self.passed,
            first_phase_failed=failed,
            pass_rate=self.passed / concluded if concluded else None,
            failed_by_rule=dict(sorted(self.failed.items())),
            breach_rate_by_rule={
                rule: count / concluded for rule, count in sorted(self.failed.items())
            },
        )


@dataclass(frozen=True)
class _Cohorts:
    """The cohort (traders who signed up in the window), the key columns every count selects
    first (source, campaign) and the columns that group them."""

    members: Subquery
    keys: tuple[Any, ...]
    groups: tuple[Any, ...]

    @classmethod
    def of(cls, query: CohortQuery) -> _Cohorts:
        t = traders.c
        conditions = query.conditions(t.created_ns)
        if query.source is not None:
            conditions.append(t.source == query.source)
        members = select(t.id, t.source, t.campaign).where(*conditions).subquery("cohort")
        if query.by == "campaign":
            groups = (members.c.source, members.c.campaign)
            return cls(members, groups, groups)
        every = literal_column("NULL", Text).label("campaign")  # all campaigns together
        return cls(members, (members.c.source, every), (members.c.source,))

    def grouped(self, *columns: Any) -> Select[Any]:
        """SELECT keys, columns ... GROUP BY the keys (the caller adds joins and groups)."""
        return select(*self.keys, *columns).group_by(*self.groups)


async def cohorts(call: Call) -> Reply:
    """Cohorts by acquisition source; every figure is defined on `CohortRow`."""
    query = call.query_as(CohortQuery)
    cohort = _Cohorts.of(query)
    tallies: dict[GroupKey, _Tally] = defaultdict(_Tally)
    async with call.engine.connect() as conn:
        for count in (_count_traders, _count_purchases, _count_revenue, _count_outcomes):
            await count(conn, cohort, tallies)
    rows = [tallies[key].row(key) for key in sorted(tallies, key=_order)]
    return Reply(
        CohortReport(
            by=query.by,
            signed_up_from=_iso(query.from_),
            signed_up_to=_iso(query.to),
            rows=rows,
        )
    )


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _order(key: GroupKey) -> tuple[str, bool, str]:
    return (key[0], key[1] is not None, key[1] or "")


Tallies = dict[GroupKey, _Tally]


async def _count_traders(conn: AsyncConnection, cohort: _Cohorts, tallies: Tallies) -> None:
    for source, campaign, count in await conn.execute(cohort.grouped(func.count())):
        tallies[(source, campaign)].traders = count


async def _count_purchases(conn: AsyncConnection, cohort: _Cohorts, tallies: Tallies) -> None:
    members = cohort.members
    statement = cohort.grouped(
        func.count(distinct(purchases.c.trader_id)), func.count(purchases.c.id)
    ).join_from(members, purchases, purchases.c.trader_id == members.c.id)
    for source, campaign, buyers, count in await conn.execute(statement):
        tally = tallies[(source, campaign)]
        tally.with_purchase, tally.purchases = buyers, count


async def _count_revenue(conn: AsyncConnection, cohort: _Cohorts, tallies: Tallies) -> None:
    members, p = cohort.members, purchases.c
    statement = (
        cohort.grouped(p.currency, func.count(), func.sum(p.amount_minor))
        .join_from(members, purchases, p.trader_id == members.c.id)
        .group_by(p.currency)
        .order_by(p.currency)
    )
    for source, campaign, currency, count, total in await conn.execute(statement):
        tallies[(source, campaign)].revenue.append(
            CurrencyTotal(currency=currency, count=count, amount=amount_text(int(total), currency))
        )


async def _count_outcomes(conn: AsyncConnection, cohort: _Cohorts, tallies: Tallies) -> None:
    """First-phase accounts that ended, by status and the rule that failed them."""
    members, a = cohort.members, accounts.c
    rule = func.coalesce(a.failed_rule, UNSPECIFIED_RULE)
    statement = (
        cohort.grouped(a.status, rule, func.count())
        .join_from(members, accounts, a.trader_id == members.c.id)
        .where(a.previous_id.is_(None), a.status.in_(CONCLUDED))
        .group_by(a.status, rule)
    )
    for source, campaign, status, failed_rule, count in await conn.execute(statement):
        tally = tallies[(source, campaign)]
        if status == "passed":
            tally.passed += count
        else:
            tally.failed[failed_rule] = tally.failed.get(failed_rule, 0) + count


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/v1/reports/transactions",
        "report_transactions",
        "Transactions (purchases) by jurisdiction and time, ordered by time then id: a JSON "
        "page with totals per currency over the whole filter, or every row as CSV "
        "(format=csv or Accept: text/csv).",
        transactions,
        Permission.REPORTS_TRANSACTIONS,
        "reports",
        query=TransactionQuery,
        response=TransactionPage,
        content=("application/json", "text/csv"),
    ),
    Endpoint(
        "GET",
        "/api/v1/reports/cohorts",
        "report_cohorts",
        "Cohorts by acquisition source: traders who signed up in the window, their purchases "
        "and revenue, and how their first-phase accounts ended (pass rate, breach rate per "
        "rule); each figure is defined in the CohortRow schema.",
        cohorts,
        Permission.REPORTS_COHORTS,
        "reports",
        query=CohortQuery,
        response=CohortReport,
    ),
]
