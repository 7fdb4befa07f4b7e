"""Errors as RFC 9457 problem details (`application/problem+json`), each naming what was wrong."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pydantic
from aiohttp import web

PROBLEM_TYPE = "application/problem+json"

_encoder = msgspec.json.Encoder()


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One offending input: `field` is a path such as `body.phases[0].daily_loss.pct`,
    `query.limit` or `header.Idempotency-Key`."""

    field: str
    message: str


class ApiError(Exception):
    """A request the API refuses; rendered as problem+json by the app's middleware."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


def not_found(what: str, key: str) -> ApiError:
    return ApiError(404, f"{what} not found", f"no {what.lower()} with id {key!r}")


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    request_id: str = "",
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A problem+json response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    if request_id:
        body["request_id"] = request_id
    if errors:
        body["errors"] = errors
    return web.Response(
        body=_encoder.encode(body), status=status, content_type=PROBLEM_TYPE, headers=headers
    )


def invalid(where: str, errors: list[FieldError]) -> ApiError:
    """A 422 naming every offending field (the first in `detail`)."""
    first = errors[0]
    return ApiError(422, "Invalid request", f"{first.field}: {first.message}", errors=errors)


def from_pydantic(where: str, exc: pydantic.ValidationError) -> ApiError:
    """A pydantic failure as a problem naming each field (`body.email`, `query.limit`)."""
    errors = []
    for error in exc.errors(include_url=False):
        if error["type"] == "json_invalid":
            return malformed_json(str(error.get("ctx", {}).get("error", error["msg"])))
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        errors.append(FieldError(field=f"{where}{path}", message=error["msg"]))
    return invalid(where, errors or [FieldError(field=where, message=str(exc))])


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def from_msgspec(where: str, exc: msgspec.ValidationError | msgspec.DecodeError) -> ApiError:
    """A msgspec failure (`Object missing required field `id` - at `$.phases[0]``) as a problem."""
    if not isinstance(exc, msgspec.ValidationError):
        return malformed_json(str(exc))
    match = _AT.match(str(exc))
    message, path = (match["message"], match["path"] or "") if match else (str(exc), "")
    named = re.match(r"(?:Object (?:missing required|contains unknown) field )`(\w+)`", message)
    if named:
        path = f"{path}.{named.group(1)}"
    return invalid(where, [FieldError(field=f"{where}{path}", message=message)])


def malformed_json(reason: str) -> ApiError:
    return ApiError(
        400,
        "Malformed JSON",
        f"the request body is not valid JSON: {reason}",
        errors=[FieldError(field="body", message=reason)],
    )
