"""Endpoints: each route declared once, with its permission and its request and response models.

The same declarations wire the aiohttp routes (authentication, permission, strict parsing,
`Idempotency-Key`) and generate the OpenAPI document (`api/openapi.py`), so the two cannot drift.
Handlers stay short: they get a parsed `Call` and return a `Reply` (or a ready response, for CSV).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import pydantic
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from api import idempotency
from api.auth import Permission, Principal, allows
from api.problems import ApiError, FieldError, from_msgspec, from_pydantic, invalid, problem
from api.services import ENGINE, SUPERVISOR, TOKENS, Supervisor
from ledger.audit import AuditRecord

log = logging.getLogger(__name__)

T = TypeVar("T")

REQUEST_ID = "X-Request-Id"
REQUEST_ID_KEY = web.RequestKey("request_id", str)

BodyType = type[pydantic.BaseModel] | type[msgspec.Struct]


@dataclass(frozen=True)
class Reply:
    value: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """One parsed request: who calls, with what body and query, and its request id."""

    request: web.Request
    principal: Principal | None
    body: Any
    query: Any
    request_id: str

    def body_as(self, kind: type[T]) -> T:
        assert isinstance(self.body, kind), f"{type(self.body)} is not {kind}"
        return self.body

    def query_as(self, kind: type[T]) -> T:
        assert isinstance(self.query, kind), f"{type(self.query)} is not {kind}"
        return self.query

    def path(self, name: str) -> str:
        return self.request.match_info[name]

    @property
    def engine(self) -> AsyncEngine:
        return self.request.app[ENGINE]

    @property
    def supervisor(self) -> Supervisor:
        return self.request.app[SUPERVISOR]

    def audit(
        self,
        action: str,
        target_type: str,
        target_id: str,
        *,
        before: Any = None,
        after: Any = None,
        trader_id: str | None = None,
    ) -> AuditRecord:
        """The audit record of a change this call makes (written by the handler, in the same
        transaction as the change)."""
        principal = self.principal
        return AuditRecord(
            actor=principal.name if principal else "anonymous",
            role=principal.role.value if principal else "",
            action=action,
            target_type=target_type,
            target_id=target_id,
            trader_id=trader_id,
            before=_plain(before),
            after=_plain(after),
            request_id=self.request_id,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    return value


Handler = Callable[[Call], Awaitable[Reply | web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    """One route. `permission` None: public. `idempotent`: it creates something, so
    `Idempotency-Key` is honoured (answers stored by `api/idempotency.py`). `own_key`: the
    handler requires the key and keeps it itself, in the store of what it creates, so the
    generic store is not used (for a route whose writes must not wait on two extra
    transactions). `errors`: statuses it can answer besides the common ones
    (401/403 with a permission, 400/422 with a body or query, 404 with a path parameter)."""

    method: str
    path: str
    operation: str
    summary: str
    handler: Handler
    permission: Permission | None
    tag: str
    body: BodyType | None = None
    query: type[pydantic.BaseModel] | None = None
    response: Any = None
    status: int = 200
    idempotent: bool = False
    own_key: bool = False
    errors: tuple[int, ...] = ()
    also: tuple[int, ...] = ()  # other success statuses, with the same body
    content: tuple[str, ...] = ("application/json",)


def install(app: web.Application, endpoints: Sequence[Endpoint]) -> None:
    """Add every endpoint's route, each wrapped in authentication, parsing and idempotency."""
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, _wrap(endpoint))


def _wrap(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = await _authorize(request, endpoint.permission)
        raw = await request.read() if endpoint.body is not None else b""
        _refuse_nul(request, raw)
        call = Call(
            request=request,
            principal=principal,
            body=_parse_body(endpoint.body, raw),
            query=_parse_query(endpoint.query, request),
            request_id=request[REQUEST_ID_KEY],
        )
        key = request.headers.get(idempotency.HEADER)
        stored = endpoint.idempotent and not endpoint.own_key
        if stored and key is not None and principal is not None:
            return await _idempotent(endpoint, call, principal, key, raw)
        return encode(await endpoint.handler(call))

    handle.__name__ = endpoint.operation
    return handle


def _refuse_nul(request: web.Request, raw: bytes) -> None:
    """No text we keep may hold NUL (PostgreSQL cannot store it): refuse it at the edge, named,
    instead of failing in the database."""
    places = [("path", request.match_info), ("query", request.query)]
    for where, values in places:
        for name, value in values.items():
            if "\x00" in value:
                raise invalid(where, [FieldError(field=f"{where}.{name}", message=_NUL)])
    if b"\\u0000" in raw:
        raise invalid("body", [FieldError(field="body", message=_NUL)])


_NUL = "text may not contain the NUL character"


async def _authorize(request: web.Request, permission: Permission | None) -> Principal | None:
    if permission is None:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    principal = None
    if scheme.lower() == "bearer" and token:
        principal = await request.app[TOKENS].principal(token.strip())
    if principal is None:
        raise ApiError(
            401,
            "Unauthorized",
            "a valid bearer token is required (Authorization: Bearer pv_...)",
            headers={"WWW-Authenticate": 'Bearer realm="propvisor"'},
        )
    if not allows(principal.role, permission):
        raise ApiError(
            403,
            "Forbidden",
            f"role {principal.role.value!r} lacks the permission {permission.value!r}",
        )
    return principal


def _parse_body(kind: BodyType | None, raw: bytes) -> Any:
    if kind is None:
        return None
    if issubclass(kind, pydantic.BaseModel):
        try:
            return kind.model_validate_json(raw or b"")
        except pydantic.ValidationError as exc:
            raise from_pydantic("body", exc) from None
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise from_msgspec("body", exc) from None


def _parse_query(kind: type[pydantic.BaseModel] | None, request: web.Request) -> Any:
    if kind is None:
        return None
    try:
        return kind.model_validate(dict(request.query))
    except pydantic.ValidationError as exc:
        raise from_pydantic("query", exc) from None


async def _idempotent(
    endpoint: Endpoint, call: Call, principal: Principal, key: str, raw: bytes
) -> web.StreamResponse:
    idempotency.check_key(key)
    engine = call.engine
    route = f"{endpoint.method} {endpoint.path}"
    digest = idempotency.body_hash(endpoint.method, call.request.path, raw)
    stored = await idempotency.claim(engine, principal.token_id, key, route, digest)
    if stored is not None:
        return web.Response(
            body=stored.body,
            status=stored.status,
            content_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        response = encode(await endpoint.handler(call))
    except BaseException:
        await idempotency.release(engine, principal.token_id, key)
        raise
    assert isinstance(response, web.Response)
    assert isinstance(response.body, bytes)
    await idempotency.store(engine, principal.token_id, key, response.status, response.body)
    return response


_json = msgspec.json.Encoder()


def encode(reply: Reply | web.StreamResponse) -> web.StreamResponse:
    if isinstance(reply, web.StreamResponse):
        return reply
    return web.Response(
        body=to_json(reply.value),
        status=reply.status,
        content_type="application/json",
        headers=reply.headers,
    )


def to_json(value: Any) -> bytes:
    if isinstance(value, pydantic.BaseModel):
        return value.__pydantic_serializer__.to_json(value)
    return _json.encode(value)


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Give every request an id (`X-Request-Id`, the caller's if it sent a sane one) and turn
    every failure into problem+json: our refusals, aiohttp's 404/405/413, and crashes (500,
    logged, with no internals in the answer)."""
    given = request.headers.get(REQUEST_ID, "")
    request_id = given if 0 < len(given) <= 128 and given.isprintable() else _new_id()
    request[REQUEST_ID_KEY] = request_id
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        response = problem(
            exc.status,
            exc.title,
            exc.detail,
            request_id=request_id,
            errors=exc.errors,
            headers=exc.headers,
        )
    except web.HTTPException as exc:  # aiohttp's own: 404 no route, 405 (keeping `Allow`)...
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
        response = problem(
            exc.status, exc.reason, exc.text or exc.reason, request_id=request_id, headers=kept
        )
    except Exception:
        log.exception(
            "request %s %s failed (request id %s)", request.method, request.path, request_id
        )
        response = problem(
            500,
            "Internal error",
            f"the server failed; quote request id {request_id}",
            request_id=request_id,
        )
    response.headers[REQUEST_ID] = request_id
    return response


_BODY_HEADERS = {"content-type", "content-length"}


def _new_id() -> str:
    return "req_" + secrets.token_hex(8)
