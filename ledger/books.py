"""Double-entry books in integer minor units, on the transfer model TigerBeetle uses.

Money moves only by transfers, each debiting one ledger account and crediting another by a
positive amount, in the one currency both are kept in. A transfer is immutable; its `id` is the
idempotency key: the same transfer again answers "exists" and changes nothing, and another
transfer under a used id is refused. Money in flight (a payout sent, not yet settled) is a
`pending` transfer, which holds the amount in the accounts' pending totals until exactly one
`post_pending` (all of it, or less: the rest is released) or `void_pending` resolves it.

Each account keeps running totals (debits and credits, posted and pending) updated in the same
transaction as the transfer; `reconcile` derives them again from the transfers and proves that
debits equal credits. Writers lock the accounts they touch (in id order, so two writers never
wait on each other in a cycle), which also serialises two calls with the same transfer id.

Every function takes a connection inside the caller's transaction, so a ledger transfer commits
or rolls back with the change it pays for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any, Literal

import msgspec
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.schema import ledger_accounts, ledger_transfers


class Kind(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    REVENUE = "revenue"
    EXPENSE = "expense"


DEBIT_NORMAL = frozenset({Kind.ASSET, Kind.EXPENSE})
"""Kinds whose balance is debits minus credits; the others' is credits minus debits."""

RAILS = ("bank_wire", "card", "e_wallet", "stablecoin")
"""The payment rails the firm holds cash on."""


class LedgerAccount(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: Kind
    currency: str
    name: str


def chart(currency: str) -> list[LedgerAccount]:
    """The firm's chart of accounts in `currency`: fee revenue, profit-split and commission
    expenses, what is payable to traders, rail fees, and cash on each rail. What is payable to
    each affiliate is an account of its own (`ledger/affiliates.py`)."""

    def account(key: str, kind: Kind, name: str) -> LedgerAccount:
        return LedgerAccount(id=f"{key}:{currency}", kind=kind, currency=currency, name=name)

    return [
        account("fees:revenue", Kind.REVENUE, "Challenge fee revenue"),
        account("payouts:expense", Kind.EXPENSE, "Traders' profit split"),
        account("payouts:payable", Kind.LIABILITY, "Trader payouts payable"),
        account("affiliates:expense", Kind.EXPENSE, "Affiliate commissions"),
        account("rails:fees", Kind.EXPENSE, "Payment rail fees"),
        *(account(f"cash:{rail}", Kind.ASSET, f"Cash on {rail}") for rail in RAILS),
    ]


TransferKind = Literal["posted", "pending", "post_pending", "void_pending"]


class Transfer(msgspec.Struct, frozen=True, kw_only=True):
    """A transfer as stored. For `post_pending` and `void_pending`, `pending_id` names the
    pending transfer, and the accounts are its accounts."""

    id: str
    kind: TransferKind
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    pending_id: str | None = None
    reference: str = ""
    ts_ns: int = 0

    def same_as(self, other: Transfer) -> bool:
        """Equal in everything but the time it was recorded."""
        return msgspec.structs.replace(self, ts_ns=0) == msgspec.structs.replace(other, ts_ns=0)


class LedgerError(ValueError):
    """A transfer refused, with a reason naming what was wrong; nothing was changed."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def __reduce__(self) -> tuple[type[LedgerError], tuple[str, str]]:
        return type(self), (self.code, self.detail)


Outcome = Literal["created", "exists"]


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    kind: Kind
    currency: str
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def posted(self) -> int:
        """The balance on the account's normal side (an asset's debits less its credits)."""
        if self.kind in DEBIT_NORMAL:
            return self.debits_posted - self.credits_posted
        return self.credits_posted - self.debits_posted

    @property
    def pending(self) -> int:
        """What pending transfers would add to `posted` if every one were posted in full."""
        if self.kind in DEBIT_NORMAL:
            return self.debits_pending - self.credits_pending
        return self.credits_pending - self.debits_pending


_TOTALS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


async def open_accounts(
    conn: AsyncConnection, wanted: Iterable[LedgerAccount]
) -> list[LedgerAccount]:
    """Open the accounts not open yet (an open one must match its kind and currency); the
    ones opened now."""
    wanted = list(wanted)
    found: dict[str, Any] = {}
    ids = sorted({a.id for a in wanted})
    for start in range(0, len(ids), 1_000):
        part = ids[start : start + 1_000]
        rows = await conn.execute(select(ledger_accounts).where(ledger_accounts.c.id.in_(part)))
        found.update({row.id: row for row in rows})
    opened: list[LedgerAccount] = []
    seen: set[str] = set()
    for account in wanted:
        row = found.get(account.id)
        if row is not None:
            if (row.kind, row.currency) != (account.kind.value, account.currency):
                raise LedgerError(
                    "account_conflict",
                    f"{account.id!r} is open as {row.kind} in {row.currency}, not "
                    f"{account.kind.value} in {account.currency}",
                )
            continue
        if account.id not in seen:
            seen.add(account.id)
            opened.append(account)
    if opened:
        now = time.time_ns()
        await conn.execute(
            insert(ledger_accounts),
            [
                {
                    "id": a.id,
                    "kind": a.kind.value,
                    "currency": a.currency,
                    "name": a.name,
                    "created_ns": now,
                    **dict.fromkeys(_TOTALS, 0),
                }
                for a in opened
            ],
        )
    return opened


class Move(msgspec.Struct, frozen=True, kw_only=True):
    """One transfer of a batch (`transfer_many`): a `posted` or `pending` transfer of `amount`
    from `credit` to `debit`."""

    id: str
    debit: str
    credit: str
    amount: int
    pending: bool = False
    reference: str = ""


class Resolution(msgspec.Struct, frozen=True, kw_only=True):
    """One resolution of a batch (`resolve_many`): post (all, or `amount`) or void the pending
    transfer `pending_id`, under transfer id `id`."""

    id: str
    pending_id: str
    kind: Literal["post_pending", "void_pending"]
    amount: int | None = None


async def transfer(
    conn: AsyncConnection,
    id: str,
    debit: str,
    credit: str,
    amount: int,
    *,
    pending: bool = False,
    reference: str = "",
) -> Outcome:
    """Move `amount` minor units from `credit` to `debit` (posted, or held as pending)."""
    move = Move(
        id=id, debit=debit, credit=credit, amount=amount, pending=pending, reference=reference
    )
    return (await transfer_many(conn, [move]))[0]


async def transfer_many(conn: AsyncConnection, moves: Sequence[Move]) -> list[Outcome]:
    """Record `moves` in order, as `transfer` would one by one, in a few statements: one lock
    over all their accounts, one lookup of their ids, one insert, one update per account. Any
    refusal refuses the batch (the caller's transaction rolls back)."""
    wanted: list[Transfer] = []
    for move in moves:
        _check_id(move.id)
        if not _positive(move.amount):
            raise LedgerError(
                "invalid_amount", f"amount must be a positive integer, not {move.amount!r}"
            )
        if move.debit == move.credit:
            raise LedgerError("same_account", f"debit and credit are both {move.debit!r}")
    found = await _lock(conn, [a for m in moves for a in (m.debit, m.credit)])
    for move in moves:
        currency = found[move.debit]["currency"]
        if found[move.credit]["currency"] != currency:
            raise LedgerError(
                "currency_mismatch",
                f"{move.debit!r} is in {currency}, {move.credit!r} in "
                f"{found[move.credit]['currency']}",
            )
        wanted.append(
            Transfer(
                id=move.id,
                kind="pending" if move.pending else "posted",
                debit_account=move.debit,
                credit_account=move.credit,
                amount=move.amount,
                currency=currency,
                reference=move.reference,
            )
        )
    fresh, outcomes = await _new_only(conn, wanted)
    changes: dict[str, dict[str, int]] = {}
    for t in fresh:
        side = "pending" if t.kind == "pending" else "posted"
        _add(changes, t.debit_account, f"debits_{side}", t.amount)
        _add(changes, t.credit_account, f"credits_{side}", t.amount)
    await _record(conn, fresh, changes)
    return outcomes


async def post_pending(
    conn: AsyncConnection, id: str, pending_id: str, amount: int | None = None
) -> Outcome:
    """Post the pending transfer `pending_id`: all of it, or `amount` of it (the rest is
    released). Refused if it was posted or voided already (under another id)."""
    resolution = Resolution(id=id, pending_id=pending_id, kind="post_pending", amount=amount)
    return (await resolve_many(conn, [resolution]))[0]


async def void_pending(conn: AsyncConnection, id: str, pending_id: str) -> Outcome:
    """Release the pending transfer `pending_id`; refused if it was already resolved."""
    resolution = Resolution(id=id, pending_id=pending_id, kind="void_pending")
    return (await resolve_many(conn, [resolution]))[0]


async def resolve_many(conn: AsyncConnection, resolutions: Sequence[Resolution]) -> list[Outcome]:
    """Post or void pending transfers in order, as `post_pending` and `void_pending` would one
    by one, in a few statements. Any refusal refuses the batch."""
    for r in resolutions:
        _check_id(r.id)
    held = await _transfers(conn, [r.pending_id for r in resolutions])
    for r in resolutions:
        found = held.get(r.pending_id)
        if found is None or found.kind != "pending":
            raise LedgerError("no_such_pending", f"no pending transfer {r.pending_id!r}")
    await _lock(conn, [a for t in held.values() for a in (t.debit_account, t.credit_account)])
    wanted = [_resolving(r, held[r.pending_id]) for r in resolutions]
    fresh, outcomes = await _new_only(conn, wanted)
    pending_ids = [t.pending_id for t in fresh]
    resolved: dict[str, Any] = {
        row.pending_id: row
        for row in await conn.execute(
            select(
                ledger_transfers.c.id, ledger_transfers.c.kind, ledger_transfers.c.pending_id
            ).where(ledger_transfers.c.pending_id.in_(pending_ids))
        )
    }
    changes: dict[str, dict[str, int]] = {}
    for t in fresh:
        assert t.pending_id is not None
        earlier = resolved.get(t.pending_id)
        if earlier is not None:
            raise LedgerError(
                "pending_resolved",
                f"pending transfer {t.pending_id!r} was already resolved by {earlier.id!r} "
                f"({earlier.kind})",
            )
        resolved[t.pending_id] = t
        amount = held[t.pending_id].amount
        _add(changes, t.debit_account, "debits_pending", -amount)
        _add(changes, t.credit_account, "credits_pending", -amount)
        if t.kind == "post_pending":
            _add(changes, t.debit_account, "debits_posted", t.amount)
            _add(changes, t.credit_account, "credits_posted", t.amount)
    await _record(conn, fresh, changes)
    return outcomes


def _resolving(r: Resolution, held: Transfer) -> Transfer:
    amount = held.amount if r.kind == "void_pending" or r.amount is None else r.amount
    if not _positive(amount) or amount > held.amount:
        raise LedgerError(
            "invalid_amount",
            f"a post must be a positive integer up to the pending {held.amount}, not {amount!r}",
        )
    return Transfer(
        id=r.id,
        kind=r.kind,
        debit_account=held.debit_account,
        credit_account=held.credit_account,
        amount=amount,
        currency=held.currency,
        pending_id=r.pending_id,
    )


def _add(changes: dict[str, dict[str, int]], account: str, total: str, amount: int) -> None:
    deltas = changes.setdefault(account, {})
    deltas[total] = deltas.get(total, 0) + amount


def _positive(amount: object) -> bool:
    """A whole, positive number of minor units (not a float, not a bool)."""
    return isinstance(amount, int) and not isinstance(amount, bool) and amount > 0


def _check_id(id: str) -> None:
    if not isinstance(id, str) or not id or len(id) > 200 or "\x00" in id:
        raise LedgerError("invalid_id", "a transfer id is 1 to 200 characters, without NUL")


async def _lock(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """Lock the accounts `ids` (in id order; PostgreSQL row locks, SQLite's writer lock)."""
    query = (
        select(ledger_accounts.c.id, ledger_accounts.c.currency)
        .where(ledger_accounts.c.id.in_(sorted(set(ids))))
        .order_by(ledger_accounts.c.id)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    else:  # SQLite: take the write lock now, so the check below and the write stay one step
        await conn.execute(
            update(ledger_accounts).where(ledger_accounts.c.id == "").values(kind="")
        )
    found = {row.id: {"currency": row.currency} for row in await conn.execute(query)}
    for account in ids:
        if account not in found:
            raise LedgerError("no_such_account", f"no ledger account {account!r}")
    return found


async def _transfers(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, Transfer]:
    query = select(ledger_transfers).where(ledger_transfers.c.id.in_(sorted(set(ids))))
    return {
        row.id: Transfer(**{k: getattr(row, k) for k in Transfer.__struct_fields__})
        for row in await conn.execute(query)
    }


async def _new_only(
    conn: AsyncConnection, wanted: Sequence[Transfer]
) -> tuple[list[Transfer], list[Outcome]]:
    """The transfers of `wanted` not recorded yet (the first of any id repeated in the batch),
    and each one's outcome; refused if an id holds another transfer."""
    seen = await _transfers(conn, [t.id for t in wanted])
    fresh: list[Transfer] = []
    outcomes: list[Outcome] = []
    for t in wanted:
        found = seen.get(t.id)
        if found is None:
            seen[t.id] = t
            fresh.append(t)
            outcomes.append("created")
            continue
        if not found.same_as(t):
            raise LedgerError(
                "id_conflict",
                f"transfer {t.id!r} exists with different fields (a {found.kind} of "
                f"{found.amount} {found.currency} from {found.credit_account} to "
                f"{found.debit_account})",
            )
        outcomes.append("exists")
    return fresh, outcomes


async def _record(
    conn: AsyncConnection, fresh: Sequence[Transfer], changes: dict[str, dict[str, int]]
) -> None:
    if not fresh:
        return
    now = time.time_ns()
    rows = [{**msgspec.structs.asdict(t), "ts_ns": now} for t in fresh]
    await conn.execute(insert(ledger_transfers), rows)
    updates = [
        {"account": account, **{f"d_{name}": changes[account].get(name, 0) for name in _TOTALS}}
        for account in sorted(changes)
        if any(changes[account].values())
    ]
    if updates:  # one statement, sent for every account at once (in id order: the lock order)
        c = ledger_accounts.c
        await conn.execute(
            update(ledger_accounts)
            .where(c.id == bindparam("account"))
            .values({name: c[name] + bindparam(f"d_{name}") for name in _TOTALS}),
            updates,
        )


async def balances(conn: AsyncConnection, ids: Iterable[str] | None = None) -> dict[str, Balance]:
    """The accounts' running totals (every account's, or those of `ids`)."""
    query = select(ledger_accounts).order_by(ledger_accounts.c.id)
    if ids is not None:
        query = query.where(ledger_accounts.c.id.in_(list(ids)))
    return {
        row.id: Balance(
            account=row.id,
            kind=Kind(row.kind),
            currency=row.currency,
            **{name: int(getattr(row, name)) for name in _TOTALS},
        )
        for row in await conn.execute(query)
    }


class Mismatch(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    total: str  # debits_posted, credits_posted, debits_pending or credits_pending
    kept: int
    derived: int


class Reconciliation(msgspec.Struct, frozen=True, kw_only=True):
    """Totals over the books, per currency, as kept and as derived from the transfers."""

    ok: bool
    transfers: int
    debits_posted: dict[str, int]
    credits_posted: dict[str, int]
    debits_pending: dict[str, int]
    credits_pending: dict[str, int]
    mismatches: list[Mismatch]


async def reconcile(conn: AsyncConnection) -> Reconciliation:
    """Derive every account's totals from the transfers, compare them with the running totals
    kept, and check that debits equal credits in each currency, posted and pending."""
    derived = {name: await _derived(conn, name) for name in _TOTALS}
    kept = await balances(conn)
    mismatches = [
        Mismatch(
            account=account,
            total=name,
            kept=getattr(balance, name),
            derived=derived[name].get(account, 0),
        )
        for account, balance in kept.items()
        for name in _TOTALS
        if getattr(balance, name) != derived[name].get(account, 0)
    ]
    strays = {a for totals in derived.values() for a in totals} - set(kept)
    mismatches += [
        Mismatch(account=a, total=name, kept=0, derived=derived[name][a])
        for a in sorted(strays)
        for name in _TOTALS
        if a in derived[name]
    ]
    sums = {name: _by_currency(kept.values(), name) for name in _TOTALS}
    count = (await conn.execute(select(func.count()).select_from(ledger_transfers))).scalar_one()
    ok = (
        not mismatches
        and sums["debits_posted"] == sums["credits_posted"]
        and sums["debits_pending"] == sums["credits_pending"]
    )
    return Reconciliation(ok=ok, transfers=int(count), mismatches=mismatches, **sums)


def _by_currency(found: Iterable[Balance], name: str) -> dict[str, int]:
    sums: dict[str, int] = {}
    for balance in found:
        sums[balance.currency] = sums.get(balance.currency, 0) + getattr(balance, name)
    return sums


async def _derived(conn: AsyncConnection, name: str) -> dict[str, int]:
    """One total per account from the transfers alone."""
    t = ledger_transfers.c
    side = t.debit_account if name.startswith("debits") else t.credit_account
    if name.endswith("posted"):
        query = select(side, func.sum(t.amount)).where(t.kind.in_(("posted", "post_pending")))
    else:  # pending transfers that no post or void names
        other = ledger_transfers.alias("resolving")
        resolved = select(other.c.pending_id).where(other.c.pending_id.is_not(None))
        query = select(side, func.sum(t.amount)).where(t.kind == "pending", t.id.not_in(resolved))
    rows = await conn.execute(query.group_by(side))
    return {account: int(total) for account, total in rows}
