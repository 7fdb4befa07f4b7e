"""The purchases scenario on a tiny wave: every purchase answered with its account open on the
platform, one account per request within the platform's limit. No assertion on speed beyond
what the limit itself forces."""

from __future__ import annotations

import asyncio

import pytest

from loadtests import purchases


@pytest.fixture(scope="module")
def report(ray_session: None) -> purchases.Report:
    return asyncio.run(purchases.run(purchases.Options(purchases=12, limit=20.0, callers=4)))


def test_wave_when_small_then_every_account_is_active_and_none_refused(
    report: purchases.Report,
) -> None:
    assert (report.active, report.failed, report.rate_limited) == (12, 0, 0)
    assert 0 < report.purchase_ms.p50 <= report.purchase_ms.max
    # Twelve one-account requests at 20/s cannot finish in under ~0.55 s: the limit held.
    assert report.wave_s >= 0.5
    assert "12 of 12" in purchases.render(report)
