"""URL handling of the ledger: no database needed."""

from __future__ import annotations

import re

import pytest

from ledger.database import database_label, normalize_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://root@127.0.0.1:5432/propvisor",
            "postgresql+asyncpg://root@127.0.0.1:5432/propvisor",
        ),
        ("postgres://u:p@db/propvisor", "postgresql+asyncpg://u:p@db/propvisor"),
        ("sqlite:///var/propvisor.db", "sqlite+aiosqlite:///var/propvisor.db"),
        ("sqlite:////abs/propvisor.db", "sqlite+aiosqlite:////abs/propvisor.db"),
        ("var/propvisor.db", "sqlite+aiosqlite:///var/propvisor.db"),
        ("/abs/propvisor.db", "sqlite+aiosqlite:////abs/propvisor.db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_normalize_url_when_supported_then_async_driver_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://h/db", "postgresql+psycopg://h/db", "http://x"])
def test_normalize_url_when_scheme_unsupported_then_value_error_names_it(url: str) -> None:
    scheme = url.split("://")[0]
    with pytest.raises(ValueError, match=re.escape(f"'{scheme}'")):
        normalize_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+asyncpg://root:secret@127.0.0.1:5432/propvisor",
            "postgresql://root@127.0.0.1:5432/propvisor",
        ),
        (
            "postgres://root@127.0.0.1:5432/propvisor?ssl=require",
            "postgresql://root@127.0.0.1:5432/propvisor",
        ),
        ("sqlite+aiosqlite:///var/propvisor.db", "sqlite:///var/propvisor.db"),
        ("var/propvisor.db", "sqlite:///var/propvisor.db"),
        ("sqlite:////abs/propvisor.db", "sqlite:////abs/propvisor.db"),
    ],
)
def test_database_label_when_url_given_then_short_label(url: str, expected: str) -> None:
    assert database_label(url) == expected


def test_database_label_when_password_present_then_password_absent() -> None:
    label = database_label("postgresql://root:s3cr%40t@db:5432/propvisor")
    assert "s3cr" not in label
    assert "***" not in label
