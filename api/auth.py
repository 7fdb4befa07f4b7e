"""Who may call what: roles, the permission matrix (the one place it is written), and API tokens.

A token is 32 random bytes shown once at creation (`propvisor token create`); the database keeps
only its SHA-256. A fast hash is enough here because the secret is random and long, not a password
a person chose: there is nothing to guess from a dictionary, and 256 bits cannot be brute-forced.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import time

import msgspec
from cachetools import TTLCache
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger import audit
from ledger.audit import AuditRecord
from ledger.schema import api_tokens

TOKEN_PREFIX = "pv_"


class Role(enum.StrEnum):
    ADMIN = "admin"
    RISK = "risk"
    OPERATIONS = "operations"
    FINANCE = "finance"
    COMPLIANCE = "compliance"
    SUPPORT = "support"
    AFFILIATE_MANAGER = "affiliate_manager"
    PARTNER = "partner"  # an affiliate itself: its token is scoped to it


class Permission(enum.StrEnum):
    SYSTEM_READ = "system:read"
    PLANS_READ = "plans:read"
    PLANS_WRITE = "plans:write"
    TRADERS_READ = "traders:read"
    TRADERS_WRITE = "traders:write"
    LEADS_READ = "leads:read"
    LEADS_WRITE = "leads:write"
    PURCHASES_READ = "purchases:read"
    PURCHASES_WRITE = "purchases:write"
    ACCOUNTS_READ = "accounts:read"
    ACCOUNTS_FREEZE = "accounts:freeze"
    ACCOUNTS_PROVISION = "accounts:provision"
    TIMELINE_READ = "timeline:read"
    REPORTS_TRANSACTIONS = "reports:transactions"
    REPORTS_COHORTS = "reports:cohorts"
    AUDIT_READ = "audit:read"
    RISK_READ = "risk:read"  # the risk stream, exposure, alerts, alert rules, the calendar
    ALERTS_ACKNOWLEDGE = "alerts:acknowledge"
    RISK_CONFIGURE = "risk:configure"  # alert rules and the economic calendar
    PAYOUTS_REQUEST = "payouts:request"  # the trader-facing backend asks for a payout
    PAYOUTS_READ = "payouts:read"
    PAYOUTS_REVIEW = "payouts:review"  # approve or reject a payout in review
    KYC_READ = "kyc:read"
    KYC_WRITE = "kyc:write"  # record a trader's verified tier
    AFFILIATES_READ = "affiliates:read"
    AFFILIATES_WRITE = "affiliates:write"  # affiliates, codes, plans, partner tokens
    AFFILIATES_STATEMENT = "affiliates:statement"  # a partner: its own statement only
    AFFILIATES_PAY = "affiliates:pay"  # run the weekly payouts


_P = Permission
_EVERYONE_READS = {_P.SYSTEM_READ, _P.PLANS_READ, _P.TRADERS_READ, _P.ACCOUNTS_READ}

MATRIX: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.RISK: frozenset(
        {
            *_EVERYONE_READS,
            _P.ACCOUNTS_FREEZE,
            _P.TIMELINE_READ,
            _P.REPORTS_COHORTS,
            _P.AUDIT_READ,
            _P.RISK_READ,
            _P.ALERTS_ACKNOWLEDGE,
            _P.RISK_CONFIGURE,
        }
    ),
    Role.OPERATIONS: frozenset(
        {
            *_EVERYONE_READS,
            _P.PLANS_WRITE,
            _P.TRADERS_WRITE,
            _P.LEADS_READ,
            _P.LEADS_WRITE,
            _P.PURCHASES_READ,
            _P.PURCHASES_WRITE,
            _P.ACCOUNTS_PROVISION,
            _P.TIMELINE_READ,
            _P.REPORTS_COHORTS,
            _P.PAYOUTS_REQUEST,
            _P.PAYOUTS_READ,
        }
    ),
    Role.FINANCE: frozenset(
        {
            *_EVERYONE_READS,
            _P.PURCHASES_READ,
            _P.REPORTS_TRANSACTIONS,
            _P.REPORTS_COHORTS,
            _P.PAYOUTS_READ,
            _P.PAYOUTS_REVIEW,
            _P.KYC_READ,
            _P.AFFILIATES_READ,
            _P.AFFILIATES_STATEMENT,
            _P.AFFILIATES_PAY,
        }
    ),
    Role.COMPLIANCE: frozenset(
        {
            *_EVERYONE_READS,
            _P.PURCHASES_READ,
            _P.TIMELINE_READ,
            _P.REPORTS_TRANSACTIONS,
            _P.AUDIT_READ,
            _P.PAYOUTS_READ,
            _P.KYC_READ,
            _P.KYC_WRITE,
        }
    ),
    Role.SUPPORT: frozenset(
        {*_EVERYONE_READS, _P.PURCHASES_READ, _P.TIMELINE_READ, _P.PAYOUTS_READ, _P.KYC_READ}
    ),
    Role.AFFILIATE_MANAGER: frozenset(
        {
            *_EVERYONE_READS,
            _P.LEADS_READ,
            _P.REPORTS_COHORTS,
            _P.AFFILIATES_READ,
            _P.AFFILIATES_WRITE,
            _P.AFFILIATES_STATEMENT,
        }
    ),
    Role.PARTNER: frozenset({_P.AFFILIATES_STATEMENT}),
}
"""Every role's permissions. `docs/security.md` shows this table (a test keeps them equal)."""


def allows(role: Role, permission: Permission) -> bool:
    return permission in MATRIX[role]


def matrix_markdown() -> str:
    """The matrix as a Markdown table: a row per permission, a column per role."""
    roles = list(Role)
    lines = [
        "| permission | " + " | ".join(r.value for r in roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for permission in Permission:
        marks = ("yes" if allows(r, permission) else "" for r in roles)
        lines.append(f"| `{permission.value}` | " + " | ".join(marks) + " |")
    return "\n".join(lines)


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller a valid token stands for."""

    token_id: str
    name: str
    role: Role
    scope: str | None = None  # `affiliate:<id>`: a partner sees only that affiliate's


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    name: str
    role: Role
    token: str  # shown once; never stored


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    conn: AsyncConnection, name: str, role: Role, scope: str | None = None
) -> IssuedToken:
    """A new token for `name` in `role` (a partner's needs its `scope`, `affiliate:<id>`),
    inside the caller's transaction."""
    if not name.strip():
        raise ValueError("a token needs a name")
    if (role is Role.PARTNER) != (scope is not None):
        raise ValueError("a partner token, and only one, is scoped to its affiliate")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = "tok_" + secrets.token_hex(6)
    await conn.execute(
        api_tokens.insert().values(
            id=token_id,
            name=name,
            role=role.value,
            token_hash=hash_token(token),
            created_ns=time.time_ns(),
            scope=scope,
        )
    )
    return IssuedToken(token_id=token_id, name=name, role=role, token=token)


async def issue_token(conn: AsyncConnection, name: str, role: Role, *, by: str) -> IssuedToken:
    """Create a token and record it in the audit trail (`by`: who asked, e.g. `cli:alice`)."""
    issued = await create_token(conn, name, role)
    after = {"name": name, "role": role.value}
    record = AuditRecord(
        actor=by,
        role="admin",
        action="token.create",
        target_type="token",
        target_id=issued.token_id,
        after=after,
        request_id=f"{by}:{issued.token_id}",
    )
    await audit.append(conn, [record])
    return issued


async def revoke_token(conn: AsyncConnection, token_id: str) -> bool:
    """Revoke a token by id; False if there is no such live token."""
    result = await conn.execute(
        update(api_tokens)
        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_ns.is_(None))
        .values(revoked_ns=time.time_ns())
    )
    return bool(result.rowcount)


class Tokens:
    """Looks tokens up by hash, remembering answers for `ttl_s` (so a revocation takes effect
    within that long on every API process)."""

    def __init__(self, engine: AsyncEngine, ttl_s: float = 5.0) -> None:
        self._engine = engine
        self._cache: TTLCache[str, Principal | None] = TTLCache(maxsize=10_000, ttl=ttl_s)

    async def principal(self, token: str) -> Principal | None:
        digest = hash_token(token)
        if digest in self._cache:
            return self._cache[digest]
        found = await self._lookup(digest)
        self._cache[digest] = found
        return found

    async def _lookup(self, digest: str) -> Principal | None:
        query = select(
            api_tokens.c.id, api_tokens.c.name, api_tokens.c.role, api_tokens.c.scope
        ).where(api_tokens.c.token_hash == digest, api_tokens.c.revoked_ns.is_(None))
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Principal(token_id=row.id, name=row.name, role=Role(row.role), scope=row.scope)
