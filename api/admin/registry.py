"""The account registry: which trader owns an account, under which plan version and phase, and
where it stands. Shared by purchases, accounts and the registry follower.

Statuses: `pending` (sold, not yet open on the platform), `active`, `provisioning_failed` (the
platform refused or did not answer; retried), `frozen` (by an operator), `failed` (a rule ended
the phase), `passed` (the next phase's account is opened automatically).
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any

import msgspec
from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from actors.runtime import OpeningFailed
from api.admin import plans as plan_store
from api.endpoints import Call
from api.problems import not_found
from api.services import Operator
from ledger import audit
from ledger.audit import AuditRecord
from ledger.schema import accounts

log = logging.getLogger(__name__)

SYSTEM = "system"  # the actor of what the API does by itself (phase progression, retries)


class Status(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    PROVISIONING_FAILED = "provisioning_failed"
    FROZEN = "frozen"
    FAILED = "failed"
    PASSED = "passed"


class Registered(BaseModel):
    """An account's registry row."""

    id: str
    trader_id: str
    purchase_id: str
    plan_id: str
    plan_version: int
    phase: str
    status: Status
    connection: str
    platform_login: str | None
    failed_rule: str | None
    reason: str | None
    attempts: int
    previous_id: str | None
    created_ns: int
    updated_ns: int


async def load(conn: AsyncConnection, account_id: str) -> Registered:
    row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
    if row is None:
        raise not_found("Account", account_id)
    return Registered.model_validate(dict(row._mapping))


async def find(conn: AsyncConnection, account_id: str) -> Registered | None:
    row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
    return None if row is None else Registered.model_validate(dict(row._mapping))


async def change(
    conn: AsyncConnection,
    account: Registered,
    record: AuditRecord,
    *,
    expect: tuple[Status, ...] | None = None,
    **values: Any,
) -> Registered | None:
    """Update the account (only if its status is still one of `expect`) and audit it in the
    same transaction; None if its status had moved on."""
    statement = update(accounts).where(accounts.c.id == account.id)
    if expect is not None:
        statement = statement.where(accounts.c.status.in_([s.value for s in expect]))
    values["updated_ns"] = time.time_ns()
    result = await conn.execute(statement.values(**values))
    if not result.rowcount:
        return None
    after = account.model_copy(update=values)
    before = {k: getattr(account, k) for k in values}
    changed = {k: getattr(after, k) for k in values}
    record = msgspec.structs.replace(record, before=_plain(before), after=_plain(changed))
    await audit.append(conn, [record])
    return after


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items()}


def system_record(action: str, account: Registered, request_id: str) -> AuditRecord:
    """An audit record of something the API did by itself."""
    return AuditRecord(
        actor=SYSTEM,
        role=SYSTEM,
        action=action,
        target_type="account",
        target_id=account.id,
        trader_id=account.trader_id,
        request_id=request_id,
    )


def record_for(call: Call | None, action: str, account: Registered) -> AuditRecord:
    if call is None:
        return system_record(action, account, f"{SYSTEM}:{action}:{account.id}")
    return call.audit(action, "account", account.id, trader_id=account.trader_id)


async def provision(
    engine: AsyncEngine, operator: Operator, account: Registered, call: Call | None = None
) -> Registered:
    """Open a pending (or failed) account on its platform and record the outcome: `active`
    with its login, or `provisioning_failed` with the platform's reason."""
    async with engine.connect() as conn:
        version = await plan_store.load(conn, account.plan_id, account.plan_version)
    plan = plan_store.runtime_plan(version)
    phase = None if account.phase == plan.phases[0].name else account.phase
    try:
        opened = await operator.open_account(account.id, plan, phase=phase)
    except OpeningFailed as exc:
        return await _record_failure(engine, account, str(exc), call)
    except Exception as exc:  # an actor restarting, a lost connection: the sale stands
        log.exception("opening %s failed", account.id)
        return await _record_failure(engine, account, f"{type(exc).__name__}: {exc}", call)
    async with engine.begin() as conn:
        changed = await change(
            conn,
            account,
            record_for(call, "account.provisioned", account),
            expect=(Status.PENDING, Status.PROVISIONING_FAILED),
            status=Status.ACTIVE,
            connection=opened.connection,
            platform_login=opened.login,
            reason=None,
            attempts=account.attempts + 1,
        )
        return changed or await load(conn, account.id)


async def _record_failure(
    engine: AsyncEngine, account: Registered, reason: str, call: Call | None
) -> Registered:
    async with engine.begin() as conn:
        changed = await change(
            conn,
            account,
            record_for(call, "account.provisioning_failed", account),
            expect=(Status.PENDING, Status.PROVISIONING_FAILED),
            status=Status.PROVISIONING_FAILED,
            reason=reason,
            attempts=account.attempts + 1,
        )
        return changed or await load(conn, account.id)
