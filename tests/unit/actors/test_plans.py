"""Plan files: decoded strictly, and every error names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.plans import DayRollover, PlanError, load_plan

GOOD = """\
id = "two-step"
name = "Two-step"
initial_balance = 100000

[day_rollover]
timezone = "America/New_York"
time = "17:00"

[[phases]]
name = "challenge"
[phases.daily_loss]
pct = 5
[phases.profit_target]
pct = 10

[[phases]]
name = "verification"
[phases.daily_loss]
pct = 5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def test_load_when_plan_is_valid_then_phases_and_rules_are_read(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, GOOD))

    assert [p.name for p in plan.phases] == ["challenge", "verification"]
    assert plan.phases[1].daily_loss is not None
    assert plan.phases[1].profit_target is None
    assert plan.day_rollover == DayRollover(timezone="America/New_York", time="17:00")
    assert plan.phase_index("verification") == 1


@pytest.mark.parametrize(
    ("broken", "line", "fragment"),
    [
        (GOOD.replace("pct = 5\n[phases.profit", 'pct = "5"\n[phases.profit'), 12, "pct"),
        (GOOD.replace("pct = 10", "pct = 10\npcts = 3"), 15, "unknown field `pcts`"),
        (GOOD.replace('time = "17:00"', 'time = "5pm"'), 7, "HH:MM"),
        (GOOD.replace('"America/New_York"', '"America/Gotham"'), 6, "America/Gotham"),
        (GOOD.replace("pct = 10", "pct = 150"), 14, "<= 100"),
        (GOOD.replace('name = "verification"', 'name = "challenge"'), None, "unique"),
    ],
    ids=["wrong-type", "unknown-key", "bad-time", "bad-zone", "out-of-range", "duplicate-phase"],
)
def test_load_when_plan_is_wrong_then_error_names_file_line_and_field(
    tmp_path: Path, broken: str, line: int | None, fragment: str
) -> None:
    path = write(tmp_path, broken)

    with pytest.raises(PlanError) as caught:
        load_plan(path)

    message = str(caught.value)
    assert message.startswith(f"{path}:{line}:" if line else f"{path}")
    assert fragment in message


def test_load_when_toml_is_malformed_then_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "id = \n")

    with pytest.raises(PlanError, match="not valid TOML"):
        load_plan(path)


def test_phase_index_when_phase_is_unknown_then_error_names_it(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, GOOD))

    with pytest.raises(PlanError, match="funded"):
        plan.phase_index("funded")
