"""Traders: `POST /api/v1/traders` (a sales rep assigned by lead routing), `GET` one or a page."""

from __future__ import annotations

import re
import secrets
import time
import zoneinfo
from typing import Any

import pycountry
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from api.admin.leads import route_lead
from api.auth import Permission
from api.endpoints import Call, Endpoint, Reply
from api.pagination import Page, PageQuery, decode_cursor, keyset, page_of
from api.problems import ApiError, not_found
from ledger import audit
from ledger.schema import traders

_CODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def country_code(value: str) -> str:
    """An ISO 3166-1 alpha-2 code (any case in, upper case out)."""
    code = value.strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return code


def language_code(value: str) -> str:
    code = value.strip().lower()
    if len(code) != 2 or pycountry.languages.get(alpha_2=code) is None:
        raise ValueError(f"{value!r} is not an ISO 639-1 language code")
    return code


def time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone") from None
    return value


class TraderIn(BaseModel):
    """A new trader: contact, jurisdiction, and where they came from."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
    country: str = Field(description="ISO 3166-1 alpha-2", examples=["GB"])
    language: str = Field(description="ISO 639-1", examples=["en"])
    timezone: str = Field(description="IANA time zone", examples=["Europe/London"])
    source: str = Field(min_length=1, max_length=64, description="acquisition source")
    campaign: str | None = Field(default=None, max_length=128)
    affiliate_code: str | None = Field(default=None, pattern=_CODE.pattern)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        return country_code(value)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        return language_code(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return time_zone(value)


class Trader(BaseModel):
    """A trader as stored, with the sales rep lead routing chose (null: none matched)."""

    id: str
    email: str
    name: str
    country: str
    language: str
    timezone: str
    source: str
    campaign: str | None
    affiliate_code: str | None
    rep_id: str | None
    created_ns: int


async def load(conn: AsyncConnection, trader_id: str) -> Trader:
    row = (await conn.execute(select(traders).where(traders.c.id == trader_id))).first()
    if row is None:
        raise not_found("Trader", trader_id)
    return Trader.model_validate(dict(row._mapping))


async def create_trader(call: Call) -> Reply:
    body = call.body_as(TraderIn)
    now = time.time_ns()
    trader = Trader(
        id="trd_" + secrets.token_hex(8),
        **body.model_dump(),
        rep_id=None,
        created_ns=now,
    )
    try:
        async with call.engine.begin() as conn:
            rep = await route_lead(
                conn, language=trader.language, timezone=trader.timezone, now_ns=now
            )
            trader = trader.model_copy(update={"rep_id": rep})
            await conn.execute(traders.insert().values(**trader.model_dump()))
            record = call.audit(
                "trader.create", "trader", trader.id, after=trader, trader_id=trader.id
            )
            await audit.append(conn, [record])
    except IntegrityError:
        raise ApiError(
            409, "Trader exists", f"a trader with the email {body.email!r} exists already"
        ) from None
    return Reply(trader, status=201)


async def get_trader(call: Call) -> Reply:
    async with call.engine.connect() as conn:
        return Reply(await load(conn, call.path("trader_id")))


class TraderQuery(PageQuery):
    """Filters of the trader list (newest first)."""

    source: str | None = Field(default=None, max_length=64)
    country: str | None = None
    rep_id: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=320)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        return None if value is None else country_code(value)


async def list_traders(call: Call) -> Reply:
    query = call.query_as(TraderQuery)
    after = decode_cursor(query.cursor, (int, str))
    statement = select(traders)
    for name in ("source", "country", "rep_id", "email"):
        value = getattr(query, name)
        if value is not None:
            statement = statement.where(traders.c[name] == value)
    statement = keyset(statement, traders.c.created_ns, traders.c.id, after, descending=True)
    async with call.engine.connect() as conn:
        rows = (await conn.execute(statement.limit(query.limit + 1))).all()
    found = [Trader.model_validate(dict(r._mapping)) for r in rows]
    return Reply(page_of(found, query.limit, _key))


def _key(trader: Trader) -> list[Any]:
    return [trader.created_ns, trader.id]


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/v1/traders",
        "create_trader",
        "Register a trader; lead routing assigns a sales rep (by language and time zone).",
        create_trader,
        Permission.TRADERS_WRITE,
        "traders",
        body=TraderIn,
        response=Trader,
        status=201,
        idempotent=True,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/api/v1/traders",
        "list_traders",
        "Traders, newest first, filtered by source, country, rep or email.",
        list_traders,
        Permission.TRADERS_READ,
        "traders",
        query=TraderQuery,
        response=Page[Trader],
    ),
    Endpoint(
        "GET",
        "/api/v1/traders/{trader_id}",
        "get_trader",
        "One trader.",
        get_trader,
        Permission.TRADERS_READ,
        "traders",
        response=Trader,
    ),
]
