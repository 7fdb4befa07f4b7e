"""`Idempotency-Key`: a claim whose first call never answered is never run again."""

from __future__ import annotations

import json
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import Role, Tokens
from api.idempotency import STALE_CLAIM_S, body_hash
from ledger.schema import idempotency_keys
from tests.api import serve

PLAN = {"id": "idem", "name": "Idem", "initial_balance": 1000, "phases": [{"name": "one"}]}


async def claim_left_behind(engine: AsyncEngine, token: str, key: str, age_s: float) -> None:
    """What a process that died between claiming a key and answering leaves in the table."""
    principal = await Tokens(engine).principal(token)
    assert principal is not None
    async with engine.begin() as conn:
        await conn.execute(
            idempotency_keys.insert().values(
                principal=principal.token_id,
                key=key,
                route="POST /api/v1/plans",
                # the same body the client sends: aiohttp encodes `json=` with json.dumps
                body_hash=body_hash("POST", "/api/v1/plans", json.dumps(PLAN).encode()),
                created_ns=time.time_ns() - int(age_s * 1e9),
            )
        )


async def test_key_whose_first_call_never_answered_is_never_run_again(engine: AsyncEngine) -> None:
    async with serve(engine) as api:
        token = api.tokens[Role.ADMIN]
        await claim_left_behind(engine, token, "fresh", 1.0)
        await claim_left_behind(engine, token, "stale", STALE_CLAIM_S + 60)

        running = await api.call("POST", "/api/v1/plans", json=PLAN,
                                 headers={"Idempotency-Key": "fresh"})  # fmt: skip
        unknown = await api.call("POST", "/api/v1/plans", json=PLAN,
                                 headers={"Idempotency-Key": "stale"})  # fmt: skip
        status, found = await api.call("GET", "/api/v1/plans/idem")

    assert (running[0], running[1]["title"]) == (409, "Request in progress")
    assert (unknown[0], unknown[1]["title"]) == (409, "Outcome unknown")
    assert status == 404, found  # neither ran the create
