"""The running system: health (public, for load balancers), stats."""

from __future__ import annotations

from aiohttp import web

from actors.runtime import RuntimeStats
from actors.supervisor import Health
from api.auth import Permission
from api.endpoints import Call, Endpoint, Reply


async def health(call: Call) -> Reply | web.StreamResponse:
    """Every actor's state; 503 when one is down for good (restarting is still a 200)."""
    found = await call.supervisor.health()
    return Reply(found, status=503 if found.status == "down" else 200)


async def stats(call: Call) -> Reply:
    return Reply(await call.supervisor.stats())


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/v1/health",
        "health",
        "Every actor's state: 503 when one is down for good.",
        health,
        None,
        "system",
        response=Health,
        errors=(503,),
    ),
    Endpoint(
        "GET",
        "/api/v1/stats",
        "stats",
        "Counters of the runtime: accounts, events, evaluations, breaches, bridges, shards.",
        stats,
        Permission.SYSTEM_READ,
        "system",
        response=RuntimeStats,
    ),
]
