"""Accounts: one with its live state and every rule's progress, a filtered list, freeze and
unfreeze by hand (a real command on the platform, audited), and a provisioning retry."""

from __future__ import annotations

import enum
import secrets
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from actors.plans import Phase, Plan
from actors.runtime import CommandTimedOut, OpeningFailed
from actors.shard import AccountView
from api.admin import plans as plan_store
from api.admin import registry
from api.admin.registry import Registered, Status
from api.auth import Permission
from api.endpoints import Call, Endpoint, Reply
from api.pagination import Page, PageQuery, decode_cursor, keyset, page_of
from api.problems import ApiError, not_found
from api.services import Operator
from ledger.schema import accounts


class RuleProgress(BaseModel):
    """Where the account stands on one rule of its phase. `value` and `limit` are in the
    rule's units (account currency for money: equity against a floor, profit against a
    target; days for day counts); null where the rule has no running measure."""

    rule: str
    breached: bool
    value: float | None = None
    limit: float | None = None
    progress_pct: float | None = None


class Live(BaseModel):
    """The account as its shard holds it now (money in account currency units); `plan` is
    the runtime's plan id, `{plan_id}@{version}` for accounts sold through this API."""

    plan: str
    phase: str
    status: str
    frozen: bool
    balance: float
    equity: float
    floating: float
    day_start_balance: float
    trading_days: int
    open_positions: int
    last_event_ns: int
    rules: list[RuleProgress]
    breaches: list[dict[str, Any]]


class AccountOut(BaseModel):
    """The registry's record (null for an account the runtime hosts that was not sold through
    this API, such as the demo's) and the live state (null while it is not hosted)."""

    id: str
    registered: Registered | None
    live: Live | None


def progress(view: AccountView, plan: Plan | None) -> list[RuleProgress]:
    """Every rule of the account's current phase, with its measure where it has one."""
    breached = {b.rule.value for b in view.breaches}
    phase = _phase(plan, view.phase)
    if phase is None:
        return [RuleProgress(rule=rule, breached=True) for rule in sorted(breached)]
    found = []
    for rule in _RULES:
        settings = getattr(phase, rule)
        if settings is not None:
            found.append(_measure(rule, settings, view, plan, rule in breached))
    return found


_RULES = tuple(name for name in Phase.__struct_fields__ if name != "name")


def _phase(plan: Plan | None, name: str) -> Phase | None:
    if plan is None:
        return None
    return next((p for p in plan.phases if p.name == name), None)


def _measure(
    rule: str, settings: Any, view: AccountView, plan: Plan | None, breached: bool
) -> RuleProgress:
    if rule == "daily_loss":
        return RuleProgress(rule=rule, breached=breached, value=view.equity, limit=view.daily_floor)
    if rule == "max_loss":
        floor = view.max_loss_floor
        return RuleProgress(rule=rule, breached=breached, value=view.equity, limit=floor)
    if rule == "profit_target" and plan is not None and plan.initial_balance:
        basis = view.equity if settings.basis == "equity" else view.balance
        target = plan.initial_balance * settings.pct / 100
        profit = basis - plan.initial_balance
        pct = round(max(0.0, profit) / target * 100, 2)
        return RuleProgress(
            rule=rule, breached=breached, value=profit, limit=target, progress_pct=pct
        )
    if rule == "min_trading_days":
        days = settings.days
        pct = round(min(view.trading_days, days) / days * 100, 2)
        return RuleProgress(
            rule=rule, breached=breached, value=view.trading_days, limit=days, progress_pct=pct
        )
    return RuleProgress(rule=rule, breached=breached)


def live_of(view: AccountView, plan: Plan | None) -> Live:
    return Live(
        plan=view.plan,
        phase=view.phase,
        status=view.status,
        frozen=view.frozen,
        balance=view.balance,
        equity=view.equity,
        floating=view.floating,
        day_start_balance=view.day_start_balance,
        trading_days=view.trading_days,
        open_positions=view.open_positions,
        last_event_ns=view.last_event_ns,
        rules=progress(view, plan),
        breaches=[msgspec.to_builtins(b) for b in view.breaches],
    )


async def get_account(call: Call) -> Reply:
    account_id = call.path("account_id")
    async with call.engine.connect() as conn:
        found = await registry.find(conn, account_id)
        plan = None
        if found is not None:
            plan = plan_store.runtime_plan(
                await plan_store.load(conn, found.plan_id, found.plan_version)
            )
    view = await call.supervisor.account(account_id)
    if found is None and view is None:
        raise not_found("Account", account_id)
    live = None if view is None else live_of(view, plan)
    return Reply(AccountOut(id=account_id, registered=found, live=live))


class AccountQuery(PageQuery):
    """Filters of the account list (newest first)."""

    status: Status | None = None
    plan: str | None = Field(default=None, max_length=64)
    trader_id: str | None = Field(default=None, max_length=64)
    phase: str | None = Field(default=None, max_length=64)


async def list_accounts(call: Call) -> Reply:
    query = call.query_as(AccountQuery)
    after = decode_cursor(query.cursor, (int, str))
    statement = select(accounts)
    filters = {"status": query.status, "plan_id": query.plan, "trader_id": query.trader_id}
    filters["phase"] = query.phase
    for column, value in filters.items():
        if value is not None:
            statement = statement.where(accounts.c[column] == _sql(value))
    statement = keyset(statement, accounts.c.created_ns, accounts.c.id, after, descending=True)
    async with call.engine.connect() as conn:
        rows = (await conn.execute(statement.limit(query.limit + 1))).all()
    found = [Registered.model_validate(dict(r._mapping)) for r in rows]
    return Reply(page_of(found, query.limit, lambda a: [a.created_ns, a.id]))


def _sql(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


class Reason(BaseModel):
    """Why an operator acts: it goes to the platform and the audit trail."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field(min_length=3, max_length=500)


async def freeze(call: Call) -> Reply:
    return await _set_trading(call, enabled=False)


async def unfreeze(call: Call) -> Reply:
    return await _set_trading(call, enabled=True)


async def _set_trading(call: Call, *, enabled: bool) -> Reply:
    """Carry the command out on the platform first, then record it. A refusal changes nothing;
    a time-out (504) leaves the command queued in the bridge, so the platform may still carry
    it out: the answer says so, and repeating the call records it once it goes through."""
    reason = call.body_as(Reason).reason
    async with call.engine.connect() as conn:
        account = await registry.load(conn, call.path("account_id"))
    wanted, action = (Status.FROZEN, "unfreeze") if enabled else (Status.ACTIVE, "freeze")
    if account.status != wanted:
        raise _wrong_status(account, action)
    await _check_rules_allow(call, account, action)
    operator: Operator = call.supervisor  # type: ignore[assignment]
    try:
        await operator.set_trading(
            account.id,
            enabled=enabled,
            reason=reason,
            # Ours, never the caller's: a command id the bridge has seen is not sent again.
            command_id=f"operator-{action}:{account.id}:{secrets.token_hex(8)}",
            connection=account.connection or None,
        )
    except CommandTimedOut as exc:
        raise ApiError(504, "Platform did not confirm", str(exc)) from None
    except OpeningFailed as exc:
        raise ApiError(502, "Platform refused", str(exc)) from None
    target = Status.ACTIVE if enabled else Status.FROZEN
    async with call.engine.begin() as conn:
        changed = await registry.change(
            conn,
            account,
            registry.record_for(call, f"account.{action}", account),
            expect=(wanted,),
            status=target,
            reason=reason,
        )
    if changed is None:
        raise _wrong_status(account, action)
    return Reply(changed)


async def _check_rules_allow(call: Call, account: Registered, action: str) -> None:
    """The rule engine has the last word: an account it failed or passed stays disabled, and
    one it paused for the day resumes by itself at the next day boundary (a manual freeze then
    would be undone by that resume, so it is refused until the pause ends)."""
    view = await call.supervisor.account(account.id)
    if view is None or view.status == "active":
        return
    raise ApiError(
        409,
        "Rule engine decides",
        f"cannot {action} account {account.id!r}: the rule engine has it {view.status}",
    )


def _wrong_status(account: Registered, action: str) -> ApiError:
    why = f" by rule {account.failed_rule}" if account.failed_rule else ""
    return ApiError(
        409,
        "Account not in a state for this",
        f"cannot {action} account {account.id!r}: it is {account.status.value}{why}",
    )


async def provision(call: Call) -> Reply:
    """Retry opening an account that is pending or failed to provision."""
    async with call.engine.connect() as conn:
        account = await registry.load(conn, call.path("account_id"))
    if account.status not in (Status.PENDING, Status.PROVISIONING_FAILED):
        raise _wrong_status(account, "provision")
    operator: Operator = call.supervisor  # type: ignore[assignment]
    return Reply(await registry.provision(call.engine, operator, account, call))


def _account_endpoint(
    method: str, suffix: str, operation: str, summary: str, handler: Any, permission: Permission
) -> Endpoint:
    body = Reason if suffix in ("/freeze", "/unfreeze") else None
    return Endpoint(
        method,
        f"/api/v1/accounts/{{account_id}}{suffix}",
        operation,
        summary,
        handler,
        permission,
        "accounts",
        body=body,
        response=Registered if suffix else AccountOut,
        errors=(409, 502, 504) if suffix else (),
    )


ENDPOINTS = [
    _account_endpoint(
        "GET",
        "",
        "get_account",
        "An account: its registry record, live balance and equity, and every rule's progress.",
        get_account,
        Permission.ACCOUNTS_READ,
    ),
    Endpoint(
        "GET",
        "/api/v1/accounts",
        "list_accounts",
        "Accounts, newest first, filtered by status, plan, trader or phase.",
        list_accounts,
        Permission.ACCOUNTS_READ,
        "accounts",
        query=AccountQuery,
        response=Page[Registered],
    ),
    _account_endpoint(
        "POST",
        "/freeze",
        "freeze_account",
        "Freeze an active account on its platform (protect lane), with a mandatory reason.",
        freeze,
        Permission.ACCOUNTS_FREEZE,
    ),
    _account_endpoint(
        "POST",
        "/unfreeze",
        "unfreeze_account",
        "Let an account frozen by an operator trade again, with a mandatory reason.",
        unfreeze,
        Permission.ACCOUNTS_FREEZE,
    ),
    _account_endpoint(
        "POST",
        "/provision",
        "provision_account",
        "Retry opening a pending or provisioning_failed account on its platform.",
        provision,
        Permission.ACCOUNTS_PROVISION,
    ),
]
