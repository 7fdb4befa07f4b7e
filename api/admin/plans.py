"""Plans: `POST/GET /api/v1/plans`, versioned.

A plan is posted in the rules' own format (`actors/plans.py`, as JSON), so the API and the rule
engine cannot disagree about it. Posting a plan whose id exists makes a new version, unless it is
identical to the latest (then that version is returned, 200). Accounts keep the version they
were sold under: inside the runtime a version's id is `{plan_id}@{version}` (`runtime_plan`).
"""

from __future__ import annotations

import hashlib
import time

import msgspec
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from actors.plans import Plan
from api.auth import Permission
from api.endpoints import Call, Endpoint, Reply
from api.pagination import PageQuery, decode_cursor, encode_cursor
from api.problems import ApiError, not_found
from ledger import audit
from ledger.schema import plans


class PlanVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a plan, as stored."""

    plan_id: str
    version: int
    digest: str
    created_ns: int
    created_by: str
    plan: Plan


class PlanPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[PlanVersion]
    next_cursor: str | None


def runtime_plan(version: PlanVersion) -> Plan:
    """The plan as the runtime hosts it: one id per version, so two versions never mix."""
    return msgspec.structs.replace(version.plan, id=f"{version.plan_id}@{version.version}")


def digest_of(plan: Plan) -> str:
    return hashlib.sha256(msgspec.json.encode(plan)).hexdigest()


async def load(conn: AsyncConnection, plan_id: str, version: int | None = None) -> PlanVersion:
    """A plan's given version, else its latest; `ApiError` 404 if there is none."""
    query = select(plans).where(plans.c.plan_id == plan_id)
    if version is not None:
        query = query.where(plans.c.version == version)
    row = (await conn.execute(query.order_by(plans.c.version.desc()).limit(1))).first()
    if row is None:
        raise not_found("Plan", plan_id if version is None else f"{plan_id} v{version}")
    return _version(row._mapping)


def _version(row: object) -> PlanVersion:
    values = dict(row)  # type: ignore[call-overload]
    return PlanVersion(
        plan_id=values["plan_id"],
        version=values["version"],
        digest=values["digest"],
        created_ns=values["created_ns"],
        created_by=values["created_by"],
        plan=msgspec.json.decode(values["body"], type=Plan),
    )


async def create_plan(call: Call) -> Reply:
    plan = call.body_as(Plan)
    for _ in range(3):  # two versions of one plan posted at once: the loser takes the next
        try:
            return await _store(call, plan)
        except IntegrityError:
            continue
    raise ApiError(409, "Plan busy", f"plan {plan.id!r} is being changed; retry")


async def _store(call: Call, plan: Plan) -> Reply:
    digest = digest_of(plan)
    async with call.engine.begin() as conn:
        latest = await conn.scalar(
            select(func.max(plans.c.version)).where(plans.c.plan_id == plan.id)
        )
        if latest is not None:
            current = await load(conn, plan.id, int(latest))
            if current.digest == digest:
                return Reply(current)
        version = PlanVersion(
            plan_id=plan.id,
            version=int(latest or 0) + 1,
            digest=digest,
            created_ns=time.time_ns(),
            created_by=call.principal.name if call.principal else "",
            plan=plan,
        )
        await conn.execute(
            plans.insert().values(
                plan_id=version.plan_id,
                version=version.version,
                body=msgspec.json.encode(plan).decode(),
                digest=digest,
                created_ns=version.created_ns,
                created_by=version.created_by,
            )
        )
        before = None if latest is None else {"version": int(latest)}
        after = {"version": version.version, "digest": digest}
        await audit.append(
            conn, [call.audit("plan.version", "plan", plan.id, before=before, after=after)]
        )
    return Reply(version, status=201)


async def list_plans(call: Call) -> Reply:
    """The latest version of every plan, by plan id."""
    query = call.query_as(PageQuery)
    after = decode_cursor(query.cursor, (str,))
    latest = (
        select(plans.c.plan_id, func.max(plans.c.version).label("version"))
        .group_by(plans.c.plan_id)
        .subquery()
    )
    statement = select(plans).join(
        latest,
        (plans.c.plan_id == latest.c.plan_id) & (plans.c.version == latest.c.version),
    )
    if after is not None:
        statement = statement.where(plans.c.plan_id > after[0])
    statement = statement.order_by(plans.c.plan_id).limit(query.limit + 1)
    async with call.engine.connect() as conn:
        rows = [_version(r._mapping) for r in (await conn.execute(statement)).all()]
    return Reply(_page(rows, query.limit, lambda v: [v.plan_id]))


async def list_versions(call: Call) -> Reply:
    query = call.query_as(PageQuery)
    after = decode_cursor(query.cursor, (int,))
    plan_id = call.path("plan_id")
    statement = select(plans).where(plans.c.plan_id == plan_id)
    if after is not None:
        statement = statement.where(plans.c.version > after[0])
    statement = statement.order_by(plans.c.version).limit(query.limit + 1)
    async with call.engine.connect() as conn:
        rows = [_version(r._mapping) for r in (await conn.execute(statement)).all()]
        if not rows and after is None:
            await load(conn, plan_id)  # 404 for an unknown plan rather than an empty list
    return Reply(_page(rows, query.limit, lambda v: [v.version]))


def _page(rows: list[PlanVersion], limit: int, key: object) -> PlanPage:
    more = len(rows) > limit
    shown = rows[:limit]
    cursor = encode_cursor(key(shown[-1])) if more and shown else None  # type: ignore[operator]
    return PlanPage(items=shown, next_cursor=cursor)


async def get_plan(call: Call) -> Reply:
    async with call.engine.connect() as conn:
        return Reply(await load(conn, call.path("plan_id")))


async def get_version(call: Call) -> Reply:
    text = call.path("version")
    if not text.isdigit() or len(text) > 9:
        raise not_found("Plan version", f"{call.path('plan_id')} v{text}")
    async with call.engine.connect() as conn:
        return Reply(await load(conn, call.path("plan_id"), int(text)))


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/v1/plans",
        "create_plan",
        "Create a plan, or a new version of it (an identical body returns the latest, 200).",
        create_plan,
        Permission.PLANS_WRITE,
        "plans",
        body=Plan,
        response=PlanVersion,
        status=201,
        also=(200,),
        idempotent=True,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/api/v1/plans",
        "list_plans",
        "The latest version of every plan.",
        list_plans,
        Permission.PLANS_READ,
        "plans",
        query=PageQuery,
        response=PlanPage,
    ),
    Endpoint(
        "GET",
        "/api/v1/plans/{plan_id}",
        "get_plan",
        "A plan's latest version.",
        get_plan,
        Permission.PLANS_READ,
        "plans",
        response=PlanVersion,
    ),
    Endpoint(
        "GET",
        "/api/v1/plans/{plan_id}/versions",
        "list_plan_versions",
        "Every version of a plan, oldest first.",
        list_versions,
        Permission.PLANS_READ,
        "plans",
        query=PageQuery,
        response=PlanPage,
    ),
    Endpoint(
        "GET",
        "/api/v1/plans/{plan_id}/versions/{version}",
        "get_plan_version",
        "One version of a plan.",
        get_version,
        Permission.PLANS_READ,
        "plans",
        response=PlanVersion,
    ),
]
