"""`Idempotency-Key` on POSTs that create something.

The first call with a key claims it (a row with no answer yet), runs, and stores its answer; a
retry with the same key and the same body gets that answer again without running; the same key
with a different body is a 409. Only successful answers are kept: after an error the claim is
released, so a retry runs again. A claim left without an answer by a process that died mid-call
is never taken over: the call may have committed before the process died, and running it again
could apply it twice. After `STALE_CLAIM_S` such a key answers a 409 that says its outcome is
unknown; the caller looks the resource up and retries, if it must, with a new key.
"""

from __future__ import annotations

import hashlib
import time

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.problems import ApiError, FieldError
from ledger.schema import idempotency_keys

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
STALE_CLAIM_S = 300.0


class Stored(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    body: bytes


def body_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join((method.encode(), path.encode(), body))).hexdigest()


def check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        message = f"must be 1 to {MAX_KEY_LENGTH} printable characters"
        raise ApiError(
            400,
            "Invalid Idempotency-Key",
            f"header.{HEADER}: {message}",
            errors=[FieldError(field=f"header.{HEADER}", message=message)],
        )


async def claim(
    engine: AsyncEngine, principal: str, key: str, route: str, digest: str
) -> Stored | None:
    """Claim `key` for this call (None: go ahead) or return the answer stored for it."""
    for _ in range(2):
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    idempotency_keys.insert().values(
                        principal=principal,
                        key=key,
                        route=route,
                        body_hash=digest,
                        created_ns=time.time_ns(),
                    )
                )
            return None
        except IntegrityError:
            stored = await _existing(engine, principal, key, digest)
            if stored is not None:
                return stored
    raise _in_progress(key)


async def _existing(engine: AsyncEngine, principal: str, key: str, digest: str) -> Stored | None:
    """The stored answer for the key; None if the claim was released meanwhile (claim again)."""
    where = (idempotency_keys.c.principal == principal, idempotency_keys.c.key == key)
    async with engine.begin() as conn:
        row = (await conn.execute(select(idempotency_keys).where(*where))).first()
        if row is None:
            return None  # released between our insert and this read: claim again
        if row.body_hash != digest:
            raise ApiError(
                409,
                "Idempotency-Key reused",
                f"the {HEADER} {key!r} was used before with a different request",
            )
        if row.status is not None:
            return Stored(status=int(row.status), body=bytes(row.response))
        if time.time_ns() - int(row.created_ns) < STALE_CLAIM_S * 1e9:
            raise _in_progress(key)
    raise ApiError(
        409,
        "Outcome unknown",
        f"the first request with {HEADER} {key!r} never finished, and may or may not have "
        "taken effect: look the resource up before retrying with a new key",
    )


def _in_progress(key: str) -> ApiError:
    return ApiError(
        409,
        "Request in progress",
        f"a request with {HEADER} {key!r} is still running; retry later",
        headers={"Retry-After": "1"},
    )


async def store(engine: AsyncEngine, principal: str, key: str, status: int, body: bytes) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.principal == principal, idempotency_keys.c.key == key)
            .values(status=status, response=body)
        )


async def release(engine: AsyncEngine, principal: str, key: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.principal == principal, idempotency_keys.c.key == key
            )
        )
