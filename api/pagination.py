"""Cursor pagination: a page of items and an opaque cursor to the next one.

A cursor is the sort key of the last item returned, base64url-encoded JSON. It stays valid while
rows are added (unlike an offset) and the database seeks to it through an index.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Generic, TypeVar

import msgspec
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Select

from api.problems import ApiError, FieldError

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class PageQuery(BaseModel):
    """`cursor` from the previous page's `next_cursor`; `limit` items per page."""

    model_config = ConfigDict(extra="forbid")

    cursor: str | None = Field(default=None, max_length=512)
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


class Page(BaseModel, Generic[T]):
    """One page: `next_cursor` is null on the last page."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def decode_cursor(cursor: str | None, shape: tuple[type, ...]) -> list[Any] | None:
    """The sort key in `cursor`, checked against `shape` (the types of its parts)."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = msgspec.json.decode(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        key = None
    if not _fits(key, shape):
        raise ApiError(
            400,
            "Invalid cursor",
            "query.cursor: not a cursor this list returned",
            errors=[FieldError(field="query.cursor", message="not a cursor this list returned")],
        )
    assert isinstance(key, list)
    return key


_INT64 = range(-(2**63), 2**63)


def _fits(key: Any, shape: tuple[type, ...]) -> bool:
    """The key has the shape's types, each value storable (a 64-bit integer, text without NUL)."""
    if not isinstance(key, list) or len(key) != len(shape):
        return False
    return all(_part_fits(part, kind) for part, kind in zip(key, shape, strict=True))


def _part_fits(part: Any, kind: type) -> bool:
    if type(part) is not kind:
        return False
    if isinstance(part, int):
        return part in _INT64
    return not (isinstance(part, str) and "\x00" in part)


def page_of(items: list[T], limit: int, key_of: Any) -> Page[T]:
    """`items` fetched with `limit + 1`: the page, and a cursor if there was one more."""
    more = len(items) > limit
    shown = items[:limit]
    cursor = encode_cursor(key_of(shown[-1])) if more and shown else None
    return Page[T](items=shown, next_cursor=cursor)


def keyset(
    statement: Select[Any],
    first: ColumnElement[Any],
    second: ColumnElement[Any],
    after: list[Any] | None,
    *,
    descending: bool,
) -> Select[Any]:
    """`statement` ordered by (`first`, `second`), starting after the key `after` (a decoded
    cursor; None: from the start). Two comparisons rather than a row value, so both databases
    seek through an index on the two columns."""
    if after is not None:
        if descending:
            past = (first < after[0]) | ((first == after[0]) & (second < after[1]))
        else:
            past = (first > after[0]) | ((first == after[0]) & (second > after[1]))
        statement = statement.where(past)
    if descending:
        return statement.order_by(first.desc(), second.desc())
    return statement.order_by(first, second)
