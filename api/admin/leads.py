"""Lead routing: sales reps, routing rules, and `route_lead`, which picks a new trader's rep.

The first rule by (priority, id) whose languages and time zones match the trader places the lead
with one of its reps, round-robin over those active and under their daily capacity (leads
assigned since 00:00 UTC, counted from the traders table); a rule whose reps are all full lets
the next matching rule try. No rule with room: the trader stays unassigned.
"""

from __future__ import annotations

import re
import secrets
import time
import zoneinfo
from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any

import msgspec
import pycountry
from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from api.auth import Permission
from api.endpoints import Call, Endpoint, Reply
from api.pagination import Page, PageQuery, decode_cursor, keyset, page_of
from api.problems import ApiError, FieldError, invalid, not_found
from ledger import audit
from ledger.schema import lead_rules, sales_reps, traders

DAY_NS = 86_400 * 1_000_000_000
MAX_CAPACITY = 100_000  # leads a day; also keeps the value inside the INTEGER column
MAX_PRIORITY = 1_000_000
_MAX_BIGINT = 2**63 - 1

_REP_ID = re.compile(r"rep_[0-9a-f]{16}")
_RULE_ID = re.compile(r"rule_[0-9a-f]{16}")


# ---- routing ------------------------------------------------------------------------------


class _Rule(msgspec.Struct, frozen=True, kw_only=True):
    """A routing rule as `route_lead` reads it."""

    id: str
    languages: list[str]
    timezones: list[str]
    rep_ids: list[str]

    def matches(self, language: str, timezone: str) -> bool:
        return language_matches(self.languages, language) and timezone_matches(
            self.timezones, timezone
        )


def language_matches(languages: Sequence[str], language: str) -> bool:
    """Whether a rule's languages take `language` ("en-GB" counts as "en"; empty: any)."""
    primary = language.strip().lower().replace("_", "-").split("-")[0]
    return not languages or primary in languages


def timezone_matches(timezones: Sequence[str], timezone: str) -> bool:
    """Whether a rule's zones take `timezone`: an entry ending in "/" is a prefix ("Europe/"),
    any other must equal it; empty: any."""
    return not timezones or any(
        timezone == zone or (zone.endswith("/") and timezone.startswith(zone)) for zone in timezones
    )


def day_start(now_ns: int) -> int:
    """00:00 UTC of the day `now_ns` falls in (POSIX days are 86,400 s long)."""
    return now_ns - now_ns % DAY_NS


async def route_lead(
    conn: AsyncConnection, *, language: str, timezone: str, now_ns: int
) -> str | None:
    """The rep a new trader goes to, or None; call it in the transaction that then inserts the
    trader (with `created_ns` = `now_ns` and this `rep_id`), before `audit.append`.

    Lead number `turn` of the chosen rule goes to its `turn mod k`-th rep of the k with room, and
    `turn` advances in the same transaction. The reps of every matching rule are locked until
    that transaction ends, not only the rule: two rules may share a rep. So a concurrent routing
    waits and then counts the trader inserted here (PostgreSQL at READ COMMITTED, the default),
    and two routings never both take a rep's last place.
    """
    rules = [rule for rule in await _rules(conn) if rule.matches(language, timezone)]
    if not rules:
        return None
    candidates = sorted({rep for rule in rules for rep in rule.rep_ids})
    await lock_reps(conn, candidates)
    with_room = await _reps_with_room(conn, candidates, day_start(now_ns))
    for rule in rules:
        eligible = [rep for rep in rule.rep_ids if rep in with_room]
        if not eligible:
            continue  # every rep of this rule is full or inactive: the next rule may place it
        turn = await _take_turn(conn, rule.id)
        if turn is not None:
            return eligible[turn % len(eligible)]
    return None


async def _rules(conn: AsyncConnection) -> list[_Rule]:
    statement = select(
        lead_rules.c.id, lead_rules.c.languages, lead_rules.c.timezones, lead_rules.c.rep_ids
    ).order_by(lead_rules.c.priority, lead_rules.c.id)
    return [
        _Rule(
            id=row.id,
            languages=_list(row.languages),
            timezones=_list(row.timezones),
            rep_ids=_list(row.rep_ids),
        )
        for row in (await conn.execute(statement)).all()
    ]


async def lock_reps(conn: AsyncConnection, rep_ids: Sequence[str]) -> None:
    """Lock the reps' rows until the transaction ends (in id order, so lockers never deadlock)."""
    if conn.dialect.name == "sqlite":
        # pysqlite begins the transaction only at the first write, so the counts read before it
        # could be stale by the time we write: a no-op write first takes the database's single
        # write lock, and every read after it is current and stays so until we commit.
        unchanged = update(sales_reps).values(active=sales_reps.c.active)
        await conn.execute(unchanged.where(sales_reps.c.id.in_(rep_ids)))
        return
    locking = select(sales_reps.c.id).where(sales_reps.c.id.in_(rep_ids))
    await conn.execute(locking.order_by(sales_reps.c.id).with_for_update())


async def _reps_with_room(conn: AsyncConnection, rep_ids: Sequence[str], since_ns: int) -> set[str]:
    """The active reps among `rep_ids` with fewer leads since `since_ns` than their capacity."""
    statement = select(sales_reps.c.id, sales_reps.c.daily_capacity).where(
        sales_reps.c.id.in_(rep_ids), sales_reps.c.active != 0
    )
    reps = (await conn.execute(statement)).all()
    taken = await assigned_since(conn, [rep.id for rep in reps], since_ns)
    return {rep.id for rep in reps if taken.get(rep.id, 0) < rep.daily_capacity}


async def assigned_since(
    conn: AsyncConnection, rep_ids: Sequence[str], since_ns: int
) -> dict[str, int]:
    """Traders assigned to each rep since `since_ns` (reps with none are left out)."""
    if not rep_ids:
        return {}
    statement = (
        select(traders.c.rep_id, func.count().label("taken"))
        .where(traders.c.rep_id.in_(rep_ids), traders.c.created_ns >= since_ns)
        .group_by(traders.c.rep_id)
    )
    return {row.rep_id: int(row.taken) for row in (await conn.execute(statement)).all()}


async def _take_turn(conn: AsyncConnection, rule_id: str) -> int | None:
    """The rule's turn before this lead, advanced by one; None if the rule was just deleted."""
    statement = (
        update(lead_rules)
        .where(lead_rules.c.id == rule_id)
        .values(turn=lead_rules.c.turn + 1)
        .returning(lead_rules.c.turn)
    )
    after = await conn.scalar(statement)
    return None if after is None else int(after) - 1


def _list(text: str) -> list[str]:
    return msgspec.json.decode(text, type=list[str])


def _text(values: list[str]) -> str:
    return msgspec.json.encode(values).decode()


# ---- input validation ---------------------------------------------------------------------


def _language(value: str) -> str:
    if pycountry.languages.get(alpha_2=value) is None:
        raise ValueError(f"{value!r} is not an ISO 639-1 language code")
    return value


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(value: str) -> str:
    """An IANA zone ("America/New_York") or a prefix of one ending in "/" ("Europe/")."""
    if value.endswith("/"):
        if not any(zone.startswith(value) for zone in _zones()):
            raise ValueError(f"{value!r} is not the prefix of any IANA time zone")
    elif value not in _zones():
        raise ValueError(f"{value!r} is not an IANA time zone (a prefix ends in '/')")
    return value


def _distinct(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


# No control characters (PostgreSQL text cannot even hold a NUL); the pattern is in the schema.
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$"
    ),
]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$"), AfterValidator(_language)]
TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_timezone)]
Capacity = Annotated[int, Field(ge=1, le=MAX_CAPACITY, description="leads a UTC day at most")]
_CAPACITY_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_CAPACITY}
RepId = Annotated[str, StringConstraints(pattern=f"^{_REP_ID.pattern}$")]


class SalesRepIn(BaseModel):
    """A new sales rep."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    email: EmailStr
    daily_capacity: Capacity
    active: bool = True


class SalesRepPatch(BaseModel):
    """The fields of a rep to change (at least one; leave out what stays)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"minProperties": 1})

    # Optional only so a field can be left out; the schema shows no null, the validator refuses it.
    daily_capacity: Annotated[Capacity | None, WithJsonSchema(_CAPACITY_SCHEMA)] = None
    active: Annotated[bool | None, WithJsonSchema({"type": "boolean"})] = None

    @field_validator("daily_capacity", "active")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("leave the field out rather than send null")
        return value

    @model_validator(mode="after")
    def _something(self) -> SalesRepPatch:
        if not self.model_fields_set:
            raise ValueError("name at least one field to change")
        return self


class LeadRuleIn(BaseModel):
    """A routing rule: the lowest priority matching a trader is tried first."""

    model_config = ConfigDict(extra="forbid", strict=True)

    priority: int = Field(ge=0, le=MAX_PRIORITY, description="lower is tried first")
    languages: Annotated[list[Language], AfterValidator(_distinct)] = Field(
        default_factory=list, max_length=200, description="ISO 639-1 codes; empty: any"
    )
    timezones: Annotated[list[TimeZone], AfterValidator(_distinct)] = Field(
        default_factory=list,
        max_length=600,
        description='IANA zones, or prefixes ending in "/" ("Europe/"); empty: any',
        examples=[["Europe/", "America/New_York"]],
    )
    rep_ids: Annotated[list[RepId], AfterValidator(_distinct)] = Field(
        min_length=1, max_length=100, description="the reps, in round-robin order"
    )


# ---- resources ----------------------------------------------------------------------------


class SalesRep(BaseModel):
    """A sales rep, with the leads assigned to them since 00:00 UTC today."""

    id: str
    name: str
    email: str
    daily_capacity: int
    active: bool
    created_ns: int
    assigned_today: int


class LeadRule(BaseModel):
    """A routing rule as stored; `turn` counts the leads it has placed (lead n goes to the
    (n mod k)-th of its k reps that are active and under capacity)."""

    id: str
    priority: int
    languages: list[str]
    timezones: list[str]
    rep_ids: list[str]
    turn: int
    created_ns: int


def _rep(row: Row[Any], assigned: int) -> SalesRep:
    values = dict(row._mapping)
    return SalesRep(**{**values, "active": bool(values["active"])}, assigned_today=assigned)


def _stored(rep: SalesRep) -> dict[str, Any]:
    """What the audit trail keeps of a rep: its own fields, not today's count."""
    return rep.model_dump(mode="json", exclude={"assigned_today"})


def _rule(row: Row[Any]) -> LeadRule:
    values = dict(row._mapping)
    for name in ("languages", "timezones", "rep_ids"):
        values[name] = _list(values[name])
    return LeadRule(**values)


def _path_id(call: Call, name: str, shape: re.Pattern[str], what: str) -> str:
    """The id in the path; one of the wrong shape is simply not found (and never queried)."""
    value = call.path(name)
    if shape.fullmatch(value) is None:
        raise not_found(what, value)
    return value


async def _load_rep(conn: AsyncConnection, rep_id: str) -> SalesRep:
    row = (await conn.execute(select(sales_reps).where(sales_reps.c.id == rep_id))).first()
    if row is None:
        raise not_found("Sales rep", rep_id)
    taken = await assigned_since(conn, [rep_id], day_start(time.time_ns()))
    return _rep(row, taken.get(rep_id, 0))


async def create_rep(call: Call) -> Reply:
    """`POST /api/v1/sales-reps`: a new rep, audited."""
    body = call.body_as(SalesRepIn)
    rep = SalesRep(
        id="rep_" + secrets.token_hex(8),
        **body.model_dump(),
        created_ns=time.time_ns(),
        assigned_today=0,
    )
    async with call.engine.begin() as conn:
        await conn.execute(
            sales_reps.insert().values(**{**_stored(rep), "active": int(rep.active)})
        )
        record = call.audit("sales_rep.create", "sales_rep", rep.id, after=_stored(rep))
        await audit.append(conn, [record])
    return Reply(rep, status=201)


async def list_reps(call: Call) -> Reply:
    """Reps, oldest first, each with today's count."""
    query = call.query_as(PageQuery)
    after = _seek(query.cursor, _MAX_BIGINT)
    statement = select(sales_reps)
    statement = keyset(statement, sales_reps.c.created_ns, sales_reps.c.id, after, descending=False)
    async with call.engine.connect() as conn:
        rows = (await conn.execute(statement.limit(query.limit + 1))).all()
        taken = await assigned_since(conn, [r.id for r in rows], day_start(time.time_ns()))
    reps = [_rep(row, taken.get(row.id, 0)) for row in rows]
    return Reply(page_of(reps, query.limit, lambda rep: [rep.created_ns, rep.id]))


def _seek(cursor: str | None, highest: int) -> list[Any] | None:
    """The (number, id) key in a cursor. One no page of ours returns is refused here: PostgreSQL
    would fail on a number past its column or a NUL in the id (a 500, not a 400)."""
    key = decode_cursor(cursor, (int, str))
    if key is not None and not (0 <= key[0] <= highest and key[1].isprintable()):
        message = "not a cursor this list returned"
        raise ApiError(
            400,
            "Invalid cursor",
            f"query.cursor: {message}",
            errors=[FieldError(field="query.cursor", message=message)],
        )
    return key


async def get_rep(call: Call) -> Reply:
    """`GET /api/v1/sales-reps/{rep_id}`: one rep with today's count."""
    rep_id = _path_id(call, "rep_id", _REP_ID, "Sales rep")
    async with call.engine.connect() as conn:
        return Reply(await _load_rep(conn, rep_id))


async def patch_rep(call: Call) -> Reply:
    """`PATCH /api/v1/sales-reps/{rep_id}`: new capacity or active flag, audited before/after."""
    rep_id = _path_id(call, "rep_id", _REP_ID, "Sales rep")
    changes = call.body_as(SalesRepPatch).model_dump(exclude_unset=True)
    async with call.engine.begin() as conn:
        await lock_reps(conn, [rep_id])  # the before we record is the state we replace
        before = await _load_rep(conn, rep_id)
        stored = {k: int(v) if k == "active" else v for k, v in changes.items()}
        await conn.execute(update(sales_reps).where(sales_reps.c.id == rep_id).values(stored))
        after = before.model_copy(update=changes)
        record = call.audit(
            "sales_rep.update", "sales_rep", rep_id, before=_stored(before), after=_stored(after)
        )
        await audit.append(conn, [record])
    return Reply(after)


async def create_rule(call: Call) -> Reply:
    """`POST /api/v1/lead-rules`: a new rule over existing reps, audited."""
    body = call.body_as(LeadRuleIn)
    rule = LeadRule(
        id="rule_" + secrets.token_hex(8), **body.model_dump(), turn=0, created_ns=time.time_ns()
    )
    async with call.engine.begin() as conn:
        await _check_reps_exist(conn, rule.rep_ids)
        stored = rule.model_dump()
        for name in ("languages", "timezones", "rep_ids"):
            stored[name] = _text(stored[name])
        await conn.execute(lead_rules.insert().values(**stored))
        record = call.audit("lead_rule.create", "lead_rule", rule.id, after=rule)
        await audit.append(conn, [record])
    return Reply(rule, status=201)


async def _check_reps_exist(conn: AsyncConnection, rep_ids: list[str]) -> None:
    found = select(sales_reps.c.id).where(sales_reps.c.id.in_(rep_ids))
    known = set((await conn.scalars(found)).all())
    missing = [
        FieldError(field=f"body.rep_ids[{i}]", message=f"no sales rep with id {rep!r}")
        for i, rep in enumerate(rep_ids)
        if rep not in known
    ]
    if missing:
        raise invalid("body", missing)


async def list_rules(call: Call) -> Reply:
    """Rules in the order routing tries them: by priority, then id."""
    query = call.query_as(PageQuery)
    after = _seek(query.cursor, MAX_PRIORITY)
    statement = select(lead_rules)
    statement = keyset(statement, lead_rules.c.priority, lead_rules.c.id, after, descending=False)
    async with call.engine.connect() as conn:
        rows = (await conn.execute(statement.limit(query.limit + 1))).all()
    rules = [_rule(row) for row in rows]
    return Reply(page_of(rules, query.limit, lambda rule: [rule.priority, rule.id]))


async def delete_rule(call: Call) -> web.Response:
    """`DELETE /api/v1/lead-rules/{rule_id}`: 204 with no body, audited with the rule as it was."""
    rule_id = _path_id(call, "rule_id", _RULE_ID, "Lead rule")
    async with call.engine.begin() as conn:
        statement = delete(lead_rules).where(lead_rules.c.id == rule_id).returning(*lead_rules.c)
        row = (await conn.execute(statement)).first()
        if row is None:
            raise not_found("Lead rule", rule_id)
        record = call.audit("lead_rule.delete", "lead_rule", rule_id, before=_rule(row))
        await audit.append(conn, [record])
    # No body at all: a `Reply` would send a JSON content type with nothing after it.
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/v1/sales-reps",
        "create_sales_rep",
        "Add a sales rep new traders can be routed to.",
        create_rep,
        Permission.LEADS_WRITE,
        "leads",
        body=SalesRepIn,
        response=SalesRep,
        status=201,
        idempotent=True,
    ),
    Endpoint(
        "GET",
        "/api/v1/sales-reps",
        "list_sales_reps",
        "Sales reps, oldest first, with the leads each got today (UTC).",
        list_reps,
        Permission.LEADS_READ,
        "leads",
        query=PageQuery,
        response=Page[SalesRep],
    ),
    Endpoint(
        "GET",
        "/api/v1/sales-reps/{rep_id}",
        "get_sales_rep",
        "One sales rep, with the leads assigned today (UTC).",
        get_rep,
        Permission.LEADS_READ,
        "leads",
        response=SalesRep,
    ),
    Endpoint(
        "PATCH",
        "/api/v1/sales-reps/{rep_id}",
        "update_sales_rep",
        "Change a rep's daily capacity or take them in or out of routing.",
        patch_rep,
        Permission.LEADS_WRITE,
        "leads",
        body=SalesRepPatch,
        response=SalesRep,
    ),
    Endpoint(
        "POST",
        "/api/v1/lead-rules",
        "create_lead_rule",
        "Add a routing rule (languages, time zones, reps in round-robin order).",
        create_rule,
        Permission.LEADS_WRITE,
        "leads",
        body=LeadRuleIn,
        response=LeadRule,
        status=201,
        idempotent=True,
    ),
    Endpoint(
        "GET",
        "/api/v1/lead-rules",
        "list_lead_rules",
        "Routing rules in the order they are tried (priority, then id).",
        list_rules,
        Permission.LEADS_READ,
        "leads",
        query=PageQuery,
        response=Page[LeadRule],
    ),
    Endpoint(
        "DELETE",
        "/api/v1/lead-rules/{rule_id}",
        "delete_lead_rule",
        "Delete a routing rule (traders it placed keep their rep).",
        delete_rule,
        Permission.LEADS_WRITE,
        "leads",
        status=204,
        content=(),
    ),
]
