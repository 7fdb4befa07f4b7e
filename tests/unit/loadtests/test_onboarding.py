"""The onboarding scenario on a tiny wave: every account opened, no 429, every freeze done."""

from __future__ import annotations

import asyncio

import pytest

from loadtests import onboarding


@pytest.fixture(scope="module")
def report(ray_session: None) -> onboarding.Report:
    options = onboarding.Options(accounts=60, limit=100.0, freezes=6, seed=1)
    return asyncio.run(onboarding.run(options))


def test_wave_when_under_the_platform_limit_then_no_request_is_refused(
    report: onboarding.Report,
) -> None:
    assert report.rate_limited == 0
    assert report.provisioned == 60


def test_wave_when_freezes_are_issued_during_it_then_each_is_carried_out_and_timed(
    report: onboarding.Report,
) -> None:
    assert report.freezes_done == 6
    assert 0 < report.freeze_ms.p50 <= report.freeze_ms.max
    # Sixty one-account requests at 100/s cannot finish in much under 0.6 s: the limit held.
    assert report.wave_s >= 0.5
