"""The entity benchmark runs at a tiny size and reports sane figures (never asserts on speed)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from actors.events import RuleName
from loadtests import entity
from loadtests.__main__ import SCENARIOS
from loadtests.__main__ import main as dispatch

TINY = entity.Config(accounts=60, ticks=120, seed=7, repetitions=2)


@pytest.fixture(scope="module")
def report() -> entity.Report:
    return entity.run(TINY)


def test_plan_enables_every_rule() -> None:
    phase = entity.plan().phases[0]
    assert all(getattr(phase, rule.value) is not None for rule in RuleName)
    assert entity.plan().warning_levels
    assert len(entity.calendar()) > 0


def test_report_counts_the_work(report: entity.Report) -> None:
    assert report.scenario == "entity"
    assert report.accounts == TINY.accounts
    assert report.ticks == TINY.ticks
    assert report.repetitions == len(report.wall_s) == len(report.cpu_s) == TINY.repetitions
    assert TINY.accounts <= report.positions <= 3 * TINY.accounts
    assert 0 < report.evaluations <= TINY.ticks * TINY.accounts
    assert report.deals >= report.positions
    assert report.deterministic


def test_report_figures_are_sane(report: entity.Report) -> None:
    assert report.evaluations_per_s.best >= report.evaluations_per_s.median > 0
    assert 0 < report.ns_per_evaluation.best <= report.ns_per_evaluation.median
    assert report.cpu_evaluations_per_s > 0
    assert report.deal_evaluations_per_s > 0
    assert 0 <= report.slow_path_share <= 1
    assert report.slow_path_evaluations == sum(report.slow_path_by_reason.values())
    assert report.breaches == report.effects.get("RuleBreached", 0) >= 0
    assert sum(report.accounts_by_status.values()) == TINY.accounts
    assert report.peak_rss_mib > 0
    assert report.goal == entity.GOAL
    assert report.machine.cores >= 1
    assert report.machine.python


def test_same_seed_same_work() -> None:
    first, second = entity.run(TINY), entity.run(TINY)
    assert first.evaluations == second.evaluations
    assert first.effects == second.effects
    assert first.breaches_by_rule == second.breaches_by_rule


def test_stream_converts_cross_currency_positions() -> None:
    ticks = entity.make_ticks(500, random.Random(1))
    assert {"USDJPY", "EURJPY", "GBPUSD", "EURGBP"} <= {t.symbol for t in ticks}
    assert all(t.ts_ns > entity.TODAY_OPENS for t in ticks)


def test_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench" / "entity.json"
    args = ["entity", "--accounts", "20", "--ticks", "40", "--repetitions", "1", "--json", str(out)]
    assert dispatch(args) == 0
    assert "evaluations" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["accounts"] == 20
    assert data["evaluations"] > 0
    assert set(data["evaluations_per_s"]) == {"median", "best"}


def test_dispatcher_lists_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatch([]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in SCENARIOS)
    assert dispatch(["no-such-scenario"]) == 2
