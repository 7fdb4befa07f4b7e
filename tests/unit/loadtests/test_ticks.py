"""The tick benchmark runs at a small size: both designs agree and the report has its figures
(never asserts on speed)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from loadtests import ticks

SMALL = ticks.Config(accounts=300, symbols=10, ticks=400, seed=3, repetitions=2)


@pytest.fixture(scope="module")
def report() -> ticks.Report:
    return ticks.run(SMALL)


def test_report_when_small_run_then_both_designs_agree(report: ticks.Report) -> None:
    assert report.agree
    assert report.disagreements == []
    assert report.breaches == report.effects.get("RuleBreached", 0)
    assert sum(report.effects.values()) > 0  # the agreement is not between two silent runs


def test_report_when_small_run_then_bands_evaluate_fewer_accounts(report: ticks.Report) -> None:
    assert report.plain.evaluations_per_tick > 0
    assert report.bands.evaluations_per_tick < report.plain.evaluations_per_tick / 5
    assert report.plain.quiet_tick_share == 0.0
    assert report.bands.quiet_tick_share > 0.0


def test_report_when_small_run_then_it_counts_the_work(report: ticks.Report) -> None:
    assert (report.accounts, report.ticks, report.repetitions) == (300, 400, 2)
    assert len(report.symbols) == 10
    assert report.accounts <= report.positions <= 2 * report.accounts
    for design in (report.plain, report.bands):
        assert len(design.wall_s) == SMALL.repetitions
        assert 0 < design.us_per_tick.best <= design.us_per_tick.median
        assert design.ticks_per_s > 0
    assert report.index_build_ms > 0
    assert report.machine.cores >= 1
    assert report.numpy


def test_stream_when_generated_then_it_stays_inside_one_trading_day() -> None:
    plan = ticks.plan()
    stream = ticks.make_ticks(ticks.WALKS, 500, random.Random(1))
    day_end = plan.day_rollover.boundary_after(ticks.HISTORY)
    assert all(ticks.OPENS < t.ts_ns < day_end for t in stream)


def test_cli_when_json_path_given_then_it_writes_the_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench" / "ticks.json"
    argv = ["--accounts", "200", "--symbols", "4", "--ticks", "150", "--repetitions", "1"]

    assert ticks.main([*argv, "--json", str(out)]) == 0

    assert "µs/tick" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["scenario"] == "ticks"
    assert data["agree"] is True
    for design in ("plain", "bands"):
        assert set(data[design]["us_per_tick"]) == {"median", "best"}
        assert data[design]["ticks_per_s"] > 0
        assert data[design]["evaluations_per_tick"] >= 0
    assert data["symbols"] == ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"]
