"""The risk desk: firm exposure, alerts (list, acknowledge), alert rules, the economic calendar.

Live data (exposure) comes from this process's mirror of the risk hub (`api/stream.py`); alerts,
rules and the calendar from the database. A change is audited in the same transaction and then
told to the hub (rules and the calendar are read again, an acknowledgement goes to every stream).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import Field
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from actors.alerts import SEVERITY_RANK, Alert, AlertRule, Condition, Severity, alert_of
from actors.hub import ExposureUpdate
from api.auth import Permission
from api.endpoints import Call, Endpoint, Reply
from api.pagination import PageQuery, decode_cursor, encode_cursor, keyset
from api.problems import ApiError, not_found
from api.stream import STREAM, StreamServer
from ledger import audit
from ledger.schema import alert_rules, alerts, calendar_events

log = logging.getLogger(__name__)

# -- exposure -----------------------------------------------------------------------------------


class FirmExposure(msgspec.Struct, kw_only=True):
    """Net exposure per book as of stream sequence number `seq` (firm-currency cents)."""

    firm_currency: str
    seq: int
    books: list[ExposureUpdate]


def _stream(call: Call) -> StreamServer | None:
    return call.request.app.get(STREAM)


async def get_exposure(call: Call) -> Reply:
    server = _stream(call)
    if server is None or not server.synced.is_set():
        raise ApiError(503, "No risk hub", "this process does not follow the risk hub (yet)")
    mirror = server.mirror
    books = [msgspec.json.decode(e.data, type=ExposureUpdate) for e in mirror.exposure.values()]
    return Reply(FirmExposure(firm_currency=mirror.firm_currency, seq=mirror.seq, books=books))


# -- alerts -------------------------------------------------------------------------------------


class AlertQuery(PageQuery):
    """Alerts newest first: `open` (not acknowledged), `acknowledged`, or `all`."""

    status: Literal["open", "acknowledged", "all"] = "all"
    severity: Severity = Field(default="info", description="the least severe shown")
    account_id: str | None = Field(default=None, max_length=128)
    kind: str | None = Field(default=None, max_length=64)


class AlertPage(msgspec.Struct, kw_only=True):
    items: list[Alert]
    next_cursor: str | None


async def list_alerts(call: Call) -> Reply:
    query = call.query_as(AlertQuery)
    after = decode_cursor(query.cursor, (int, str))
    statement = select(alerts)
    if query.status == "open":
        statement = statement.where(alerts.c.acknowledged_ns.is_(None))
    elif query.status == "acknowledged":
        statement = statement.where(alerts.c.acknowledged_ns.is_not(None))
    wanted = [s for s, rank in SEVERITY_RANK.items() if rank >= SEVERITY_RANK[query.severity]]
    statement = statement.where(alerts.c.severity.in_(wanted))
    if query.account_id is not None:
        statement = statement.where(alerts.c.account_id == query.account_id)
    if query.kind is not None:
        statement = statement.where(alerts.c.kind == query.kind)
    statement = keyset(statement, alerts.c.raised_ns, alerts.c.id, after, descending=True)
    async with call.engine.connect() as conn:
        rows = (await conn.execute(statement.limit(query.limit + 1))).all()
    found = [alert_of(row) for row in rows]
    shown = found[: query.limit]
    more = len(found) > query.limit
    cursor = encode_cursor([shown[-1].raised_ns, shown[-1].id]) if more and shown else None
    return Reply(AlertPage(items=shown, next_cursor=cursor))


class Acknowledgement(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    note: Annotated[str, msgspec.Meta(max_length=2_000)] | None = None


async def acknowledge_alert(call: Call) -> Reply:
    alert_id = call.path("alert_id")
    note = call.body_as(Acknowledgement).note
    principal = call.principal
    by = principal.name if principal else "anonymous"
    now = time.time_ns()
    server = _stream(call)
    if server is not None and alert_id in server.mirror.alerts:
        await server.hub.flush.remote()  # raised a moment ago: the hub may not have written it
    async with call.engine.begin() as conn:
        row = (await conn.execute(select(alerts).where(alerts.c.id == alert_id))).first()
        if row is None:
            raise not_found("Alert", alert_id)
        before = alert_of(row)
        if before.acknowledged_ns is not None:
            raise ApiError(
                409,
                "Already acknowledged",
                f"alert {alert_id} was acknowledged by {before.acknowledged_by}",
            )
        changed = await conn.execute(
            update(alerts)
            .where(alerts.c.id == alert_id, alerts.c.acknowledged_ns.is_(None))
            .values(acknowledged_ns=now, acknowledged_by=by, note=note)
        )
        if changed.rowcount != 1:  # someone else acknowledged it since we read it
            raise ApiError(409, "Already acknowledged", f"alert {alert_id} was just acknowledged")
        after = msgspec.structs.replace(before, acknowledged_ns=now, acknowledged_by=by, note=note)
        record = call.audit(
            "alert.acknowledge",
            "alert",
            alert_id,
            before={"acknowledged": False},
            after={"acknowledged": True, "note": note, "alert": before.message},
        )
        await audit.append(conn, [record])
    if server is not None:
        await _tell(server.hub.acknowledge.remote(alert_id, by, note, now), "acknowledgement")
    return Reply(after)


async def _tell(call: Any, what: str) -> None:
    """Tell the hub of a committed change; if it cannot hear it now, the change stands (the
    hub reads rules and the calendar again every minute, and an acknowledgement shows in
    every snapshot it takes from the database after a restart)."""
    try:
        await call
    except Exception:
        log.warning("could not tell the risk hub of an %s", what, exc_info=True)


# -- alert rules --------------------------------------------------------------------------------


class AlertRuleIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A rule: what to watch (`condition`, tagged by `kind`) and how loud its alerts are."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    severity: Severity = "warning"
    enabled: bool = True
    condition: Condition


class AlertRules(msgspec.Struct, kw_only=True):
    items: list[AlertRule]


def _rule_of(row: Any) -> AlertRule:
    return AlertRule(
        id=row.id,
        name=row.name,
        severity=row.severity,
        enabled=bool(row.enabled),
        condition=msgspec.json.decode(row.condition, type=Condition),
    )


def _values(rule: AlertRule | AlertRuleIn) -> dict[str, Any]:
    return {
        "name": rule.name,
        "severity": rule.severity,
        "enabled": int(rule.enabled),
        "condition": msgspec.json.encode(rule.condition).decode(),
    }


async def _rules_changed(call: Call) -> None:
    server = _stream(call)
    if server is not None:
        await _tell(server.hub.reload_rules.remote(), "alert rule change")


async def list_rules(call: Call) -> Reply:
    async with call.engine.connect() as conn:
        rows = await conn.execute(
            select(alert_rules).order_by(alert_rules.c.created_ns, alert_rules.c.id)
        )
        return Reply(AlertRules(items=[_rule_of(row) for row in rows]))


async def create_rule(call: Call) -> Reply:
    body = call.body_as(AlertRuleIn)
    now = time.time_ns()
    rule = AlertRule(id="ar_" + secrets.token_hex(6), **msgspec.structs.asdict(body))
    async with call.engine.begin() as conn:
        await conn.execute(
            alert_rules.insert().values(id=rule.id, created_ns=now, updated_ns=now, **_values(rule))
        )
        await audit.append(
            conn, [call.audit("alert_rule.create", "alert_rule", rule.id, after=rule)]
        )
    await _rules_changed(call)
    return Reply(rule, status=201)


async def _load_rule(conn: AsyncConnection, rule_id: str) -> AlertRule:
    row = (await conn.execute(select(alert_rules).where(alert_rules.c.id == rule_id))).first()
    if row is None:
        raise not_found("Alert rule", rule_id)
    return _rule_of(row)


async def replace_rule(call: Call) -> Reply:
    rule_id = call.path("rule_id")
    body = call.body_as(AlertRuleIn)
    rule = AlertRule(id=rule_id, **msgspec.structs.asdict(body))
    async with call.engine.begin() as conn:
        before = await _load_rule(conn, rule_id)
        await conn.execute(
            update(alert_rules)
            .where(alert_rules.c.id == rule_id)
            .values(updated_ns=time.time_ns(), **_values(rule))
        )
        record = call.audit("alert_rule.replace", "alert_rule", rule_id, before=before, after=rule)
        await audit.append(conn, [record])
    await _rules_changed(call)
    return Reply(rule)


async def delete_rule(call: Call) -> Reply:
    rule_id = call.path("rule_id")
    async with call.engine.begin() as conn:
        before = await _load_rule(conn, rule_id)
        await conn.execute(delete(alert_rules).where(alert_rules.c.id == rule_id))
        await audit.append(
            conn, [call.audit("alert_rule.delete", "alert_rule", rule_id, before=before)]
        )
    await _rules_changed(call)
    return Reply(before)


# -- the economic calendar ----------------------------------------------------------------------

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class Release(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A scheduled release: `time` in ISO 8601 with an offset (`2026-11-26T12:00:00Z`)."""

    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z0-9]{2,12}$")]
    impact: Literal["low", "medium", "high"]
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    time: Annotated[datetime, msgspec.Meta(tz=True)]

    def __post_init__(self) -> None:
        if not _EARLIEST <= self.time < _LATEST:
            raise ValueError("`time` must fall between 1970 and 2200")


class CalendarIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    releases: Annotated[list[Release], msgspec.Meta(min_length=1, max_length=10_000)]


class CalendarLoaded(msgspec.Struct, kw_only=True):
    received: int
    added: int  # the others were there already (same currency, time and title)


class CalendarEntryOut(msgspec.Struct, kw_only=True):
    id: str
    currency: str
    impact: str
    title: str
    time: datetime


class CalendarOut(msgspec.Struct, kw_only=True):
    items: list[CalendarEntryOut]


def _ns(moment: datetime) -> int:
    delta = moment - _EARLIEST
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000


def release_id(currency: str, ts_ns: int, title: str) -> str:
    """The same release loaded twice has the same id."""
    digest = hashlib.sha256(f"{currency}|{ts_ns}|{title}".encode()).hexdigest()
    return "cal_" + digest[:16]


async def load_calendar(call: Call) -> Reply:
    body = call.body_as(CalendarIn)
    now = time.time_ns()
    wanted = {}
    for release in body.releases:
        ts_ns = _ns(release.time)
        entry_id = release_id(release.currency, ts_ns, release.title)
        wanted[entry_id] = {
            "id": entry_id,
            "currency": release.currency,
            "impact": release.impact,
            "title": release.title,
            "ts_ns": ts_ns,
            "created_ns": now,
        }
    async with call.engine.begin() as conn:
        ids = list(wanted)
        present: set[str] = set()
        for start in range(0, len(ids), 1_000):
            part = ids[start : start + 1_000]
            found = await conn.execute(
                select(calendar_events.c.id).where(calendar_events.c.id.in_(part))
            )
            present.update(found.scalars())
        new = [row for entry_id, row in wanted.items() if entry_id not in present]
        if new:
            try:
                await conn.execute(calendar_events.insert(), new)
            except IntegrityError:
                raise ApiError(
                    409, "Loaded concurrently", "another load added some of these; send it again"
                ) from None
        record = call.audit(
            "calendar.load",
            "calendar",
            "economic",
            after={"received": len(body.releases), "added": len(new)},
        )
        await audit.append(conn, [record])
    server = _stream(call)
    if server is not None:
        await _tell(server.hub.reload_calendar.remote(), "calendar load")
    return Reply(CalendarLoaded(received=len(body.releases), added=len(new)), status=201)


class CalendarQuery(PageQuery):
    """Releases between `from` and `to` (ISO 8601; default: the next 7 days), by time."""

    start: datetime | None = Field(default=None, alias="from")
    end: datetime | None = Field(default=None, alias="to")
    currency: str | None = Field(default=None, pattern="^[A-Z0-9]{2,12}$")


async def list_calendar(call: Call) -> Reply:
    query = call.query_as(CalendarQuery)
    now = time.time_ns()
    start = now if query.start is None else _ns(_aware(query.start))
    end = start + 7 * 86_400 * 10**9 if query.end is None else _ns(_aware(query.end))
    statement = select(calendar_events).where(
        calendar_events.c.ts_ns >= start, calendar_events.c.ts_ns <= end
    )
    if query.currency is not None:
        statement = statement.where(calendar_events.c.currency == query.currency)
    statement = statement.order_by(calendar_events.c.ts_ns, calendar_events.c.id).limit(query.limit)
    async with call.engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    items = [
        CalendarEntryOut(
            id=row.id,
            currency=row.currency,
            impact=row.impact,
            title=row.title,
            time=datetime.fromtimestamp(row.ts_ns / 1e9, tz=UTC),
        )
        for row in rows
    ]
    return Reply(CalendarOut(items=items))


def _aware(moment: datetime) -> datetime:
    """A query time (UTC if it names no offset), within the calendar's range."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not _EARLIEST <= moment < _LATEST:
        raise ApiError(422, "Invalid time", "query times must fall between 1970 and 2200")
    return moment


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/v1/exposure",
        "get_exposure",
        "Firm-wide net exposure per book (evaluation, funded) by currency and by symbol.",
        get_exposure,
        Permission.RISK_READ,
        "risk",
        response=FirmExposure,
        errors=(503,),
    ),
    Endpoint(
        "GET",
        "/api/v1/alerts",
        "list_alerts",
        "Alerts newest first, open or acknowledged, by severity, account or kind.",
        list_alerts,
        Permission.RISK_READ,
        "risk",
        query=AlertQuery,
        response=AlertPage,
    ),
    Endpoint(
        "POST",
        "/api/v1/alerts/{alert_id}/acknowledge",
        "acknowledge_alert",
        "Acknowledge an alert (audited; every stream hears of it).",
        acknowledge_alert,
        Permission.ALERTS_ACKNOWLEDGE,
        "risk",
        body=Acknowledgement,
        response=Alert,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/api/v1/alert-rules",
        "list_alert_rules",
        "The alert rules.",
        list_rules,
        Permission.RISK_READ,
        "risk",
        response=AlertRules,
    ),
    Endpoint(
        "POST",
        "/api/v1/alert-rules",
        "create_alert_rule",
        "Add an alert rule.",
        create_rule,
        Permission.RISK_CONFIGURE,
        "risk",
        body=AlertRuleIn,
        response=AlertRule,
        status=201,
        idempotent=True,
    ),
    Endpoint(
        "PUT",
        "/api/v1/alert-rules/{rule_id}",
        "replace_alert_rule",
        "Replace an alert rule (its open alerts stay open).",
        replace_rule,
        Permission.RISK_CONFIGURE,
        "risk",
        body=AlertRuleIn,
        response=AlertRule,
    ),
    Endpoint(
        "DELETE",
        "/api/v1/alert-rules/{rule_id}",
        "delete_alert_rule",
        "Remove an alert rule; returns it.",
        delete_rule,
        Permission.RISK_CONFIGURE,
        "risk",
        response=AlertRule,
    ),
    Endpoint(
        "POST",
        "/api/v1/calendar",
        "load_calendar",
        "Load economic-calendar releases (a release already loaded is kept once).",
        load_calendar,
        Permission.RISK_CONFIGURE,
        "risk",
        body=CalendarIn,
        response=CalendarLoaded,
        status=201,
        idempotent=True,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/api/v1/calendar",
        "list_calendar",
        "Releases between two times, by time.",
        list_calendar,
        Permission.RISK_READ,
        "risk",
        query=CalendarQuery,
        response=CalendarOut,
    ),
]
