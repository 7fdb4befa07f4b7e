"""`propvisor replay`: decoding, every input error named by file:line and field, the verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from api.cli import main
from api.replay import (
    BalanceLine,
    DealLine,
    LineError,
    NewsLine,
    TickLine,
    decode_line,
    format_ts,
    parse_ts,
)
from bridge.events import DealEntry, Side

PLAN = """\
id = "unit"
name = "Unit plan"

[day_rollover]
timezone = "Europe/Prague"
time = "00:00"

[[phases]]
name = "challenge"
[phases.profit_target]
pct = 10
[phases.daily_loss]
pct = 5
[phases.max_loss]
pct = 10

[[phases]]
name = "funded"
[phases.daily_loss]
pct = 5
[phases.news_trading]
minutes_before = 2
minutes_after = 2
"""
SIZED_PLAN = PLAN.replace('name = "Unit plan"', 'name = "Unit plan"\ninitial_balance = 50000')

Line = dict[str, Any]


def deposit(account: str = "A", op_id: int = 1, amount: float = 100_000.0, **kw: Any) -> Line:
    line: Line = {"type": "balance", "account": account, "op_id": op_id, "amount": amount,
                  "kind": "deposit", "ts": "2026-03-02T08:00:00Z"}  # fmt: skip
    return line | kw


def tick(bid: float, ask: float | None = None, ts: str = "2026-03-02T09:00:00Z", **kw: Any) -> Line:
    line: Line = {"type": "tick", "symbol": "EURUSD", "bid": bid, "ask": ask or bid, "ts": ts}
    return line | kw


def deal(deal_id: int, account: str = "A", **kw: Any) -> Line:
    line: Line = {"type": "deal", "account": account, "deal_id": deal_id, "position_id": 1,
                  "symbol": "EURUSD", "side": "buy", "entry": "in", "volume": 10.0,
                  "price": 1.1, "profit": 0.0, "commission": 0.0, "swap": 0.0,
                  "ts": "2026-03-02T09:00:05Z"}  # fmt: skip
    return line | kw


def news(ts: str, currency: str = "USD", impact: str = "high") -> Line:
    return {"type": "news", "currency": currency, "impact": impact, "title": "NFP", "ts": ts}


def replay(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: list[Line | str],
    *args: str,
    plan: str = PLAN,
) -> tuple[int, str, str]:
    """Write the plan and the lines (a str is written as is), run the CLI: (code, out, err)."""
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(plan)
    events = tmp_path / "events.jsonl"
    events.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    code = main(["replay", str(plan_path), str(events), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def verdicts(tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[Line | str],
             *args: str, plan: str = PLAN) -> dict[str, Any]:  # fmt: skip
    code, out, err = replay(tmp_path, capsys, lines, "--json", *args, plan=plan)
    assert (code, err) == (0, "")
    accounts: dict[str, Any] = json.loads(out)["accounts"]
    return accounts


# Decoding --------------------------------------------------------------------------------------


def test_decode_line_when_each_type_then_typed_struct() -> None:
    assert isinstance(decode_line(json.dumps(deposit())), BalanceLine)
    assert isinstance(decode_line(json.dumps(tick(1.1))), TickLine)
    assert isinstance(decode_line(json.dumps(news("2026-03-06T13:30:00Z"))), NewsLine)
    decoded = decode_line(json.dumps(deal(7, side="sell", entry="out")))
    assert isinstance(decoded, DealLine)
    assert (decoded.side, decoded.entry, decoded.deal_id) == (Side.SELL, DealEntry.OUT, 7)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (deposit() | {"note": "x"}, "note"),
        ({k: v for k, v in deposit().items() if k != "op_id"}, "op_id"),
        (deposit() | {"op_id": "7"}, "op_id"),
        (deposit(op_id=0), "op_id"),
        (deposit(kind="correction"), "kind"),
        (deal(1, side="long"), "side"),
        (tick(1.1) | {"type": "quote"}, "type"),
        ({"symbol": "EURUSD"}, "type"),
        (tick(-1.0), "bid"),
        (news("2026-03-06T13:30:00Z", impact="extreme"), "impact"),
    ],
    ids=["unknown", "missing", "type", "range", "kind", "enum", "tag", "no-tag", "bid", "impact"],
)
def test_decode_line_when_field_wrong_then_error_names_it(line: Line, field: str) -> None:
    with pytest.raises(LineError, match=rf"^`{field}`: "):
        decode_line(json.dumps(line))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T09:00:00Z", 1_772_442_000_000_000_000),
        ("2026-03-02T10:00:00+01:00", 1_772_442_000_000_000_000),
        ("2026-03-02T04:00:00-0500", 1_772_442_000_000_000_000),
        ("2026-03-02T09:00:00.000000001Z", 1_772_442_000_000_000_001),
        ("2026-03-02 09:00:00.25z", 1_772_442_000_250_000_000),
    ],
)
def test_parse_ts_when_offset_given_then_exact_utc_nanoseconds(text: str, expected: int) -> None:
    assert parse_ts(text) == expected


@pytest.mark.parametrize("text", ["2026-03-02T09:00:00", "2026-03-02", "yesterday",
                                  "2026-02-30T09:00:00Z", "2026-03-02T09:00Z"])  # fmt: skip
def test_parse_ts_when_naive_or_not_a_time_then_error_names_ts(text: str) -> None:
    with pytest.raises(LineError, match=r"^`ts`: "):
        parse_ts(text)


def test_format_ts_when_fraction_then_trimmed_and_z() -> None:
    assert format_ts(1_772_442_000_000_000_000) == "2026-03-02T09:00:00Z"
    assert format_ts(1_772_442_000_120_000_000) == "2026-03-02T09:00:00.12Z"


# Errors: exit 2, file:line and field on stderr -------------------------------------------------

SEK_SYMBOLS = """\
[[symbols]]
name = "EURSEK"
contract_size = 100000
base = "EUR"
quote = "SEK"
"""

ERROR_CASES: list[tuple[str, list[Line | str], int, str]] = [
    ("naive-ts", [deposit(ts="2026-03-02T08:00:00")], 1, "ts"),
    ("positive-withdrawal", [deposit(), deposit(op_id=2, kind="withdrawal", amount=500.0)], 2,
     "amount"),
    ("negative-deposit", [deposit(amount=-5.0)], 1, "amount"),
    ("zero-credit", [deposit(), deposit(op_id=2, kind="credit", amount=0.0)], 2, "amount"),
    ("missing-field", [deposit(), {k: v for k, v in deal(1).items() if k != "swap"}], 2, "swap"),
    ("unknown-field", [deposit(), tick(1.1) | {"volume": 3}], 2, "volume"),
    ("unknown-type", [deposit(), {"type": "order", "ts": "2026-03-02T09:00:00Z"}], 2, "type"),
    ("unknown-symbol-deal", [deposit(), deal(1, symbol="EURXYZ")], 2, "symbol"),
    ("unknown-symbol-tick", [deposit(), tick(1.1, symbol="EURXYZ")], 2, "symbol"),
    ("not-time-ordered", [deposit(), tick(1.1), tick(1.2, ts="2026-03-02T08:59:59Z")], 3, "ts"),
    ("trade-before-deposit", [tick(1.1), deal(1)], 2, "account"),
    ("credit-before-deposit", [deposit(kind="credit")], 1, "account"),
    ("news-after-window-opened",
     [deposit(), tick(1.1, ts="2026-03-06T13:28:00Z"), news("2026-03-06T13:30:00Z")], 3, "ts"),
    ("duplicate-op-id", [deposit(), tick(1.1), deposit(ts="2026-03-02T09:01:00Z")], 3, "op_id"),
    ("duplicate-deal-id", [deposit(), deal(4), deal(4, position_id=2)], 3, "deal_id"),
    ("ask-below-bid", [deposit(), tick(1.1, 1.09)], 2, "ask"),
    ("close-unknown-position", [deposit(), deal(1, entry="out", side="sell")], 2, "position_id"),
    ("over-close", [deposit(), deal(1), deal(2, entry="out", side="sell", volume=11.0)], 3,
     "volume"),
    ("wrong-side", [deposit(), deal(1), deal(2, side="sell")], 3, "side"),
    ("malformed-json", [deposit(), '{"type": "tick",'], 2, "(line)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "number", "field"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_replay_when_line_bad_then_exit_2_naming_file_line_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: list[Line | str],
    number: int,
    field: str,
) -> None:
    # the funded phase has a news rule, so a news line's window opens 2 minutes before it
    code, out, err = replay(tmp_path, capsys, lines, "--phase", "funded")

    assert (code, out) == (2, "")
    assert f"{tmp_path / 'events.jsonl'}:{number}: `{field}`: " in err
    assert err.count("\n") == 1


def test_replay_when_conversion_pair_missing_then_symbol_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    symbols = tmp_path / "sek.toml"
    symbols.write_text(SEK_SYMBOLS)
    lines: list[Line | str] = [deposit(), deal(1, symbol="EURSEK")]

    code, _, err = replay(tmp_path, capsys, lines, "--symbols", str(symbols))

    assert code == 2
    assert f"{tmp_path / 'events.jsonl'}:2: `symbol`: 'EURSEK': no symbol converts SEK" in err


def test_replay_when_plan_bad_then_exit_2_naming_plan_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = PLAN.replace("pct = 5\n[phases.max_loss]", 'pct = "5"\n[phases.max_loss]')

    code, _, err = replay(tmp_path, capsys, [deposit()], plan=plan)

    assert code == 2
    line = plan.splitlines().index('pct = "5"') + 1
    assert f"{tmp_path / 'plan.toml'}:{line}: " in err
    assert "$.phases[0].daily_loss.pct" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--phase", "verification"), "`--phase`: no phase 'verification'"),
        (("--symbols", "missing.toml"), "missing.toml"),
    ],
    ids=["phase", "symbols-file"],
)
def test_replay_when_option_bad_then_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    code, _, err = replay(tmp_path, capsys, [deposit()], *args)

    assert code == 2
    assert expected in err


def test_replay_when_events_file_missing_then_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plan.toml").write_text(PLAN)

    code = main(["replay", str(tmp_path / "plan.toml"), str(tmp_path / "none.jsonl")])

    assert code == 2
    assert "none.jsonl" in capsys.readouterr().err


# Verdicts --------------------------------------------------------------------------------------


def test_replay_json_when_daily_loss_crossed_then_contract_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Line | str] = [
        deposit(),
        tick(1.1),
        deal(1),
        tick(1.0949, ts="2026-03-02T10:00:00Z"),
    ]

    accounts = verdicts(tmp_path, capsys, lines)

    assert list(accounts) == ["A"]
    verdict = accounts["A"]
    assert verdict == {
        "status": "failed",
        "phase": "challenge",
        "initial_balance": 100_000.0,
        "balance": 100_000.0,
        "equity": 94_900.0,
        "trading_days": 1,
        "breaches": [
            {
                "rule": "daily_loss",
                "action": "fail",
                "ts": "2026-03-02T10:00:00Z",
                "event_id": "L4",
                "value": 94_900.0,
                "limit": 95_000.0,
            }
        ],
        "history": [{"type": "phase_failed", "ts": "2026-03-02T10:00:00Z", "event_id": "L4"}],
    }


def test_replay_when_ticks_then_every_account_receives_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Line | str] = [
        deposit("A"),
        deposit("B", ts="2026-03-02T08:30:00Z"),
        tick(1.1),
        deal(1, "A"),
        deal(1, "B", volume=1.0),
        tick(1.0949, ts="2026-03-02T10:00:00Z"),
    ]

    accounts = verdicts(tmp_path, capsys, lines)

    assert accounts["A"]["status"] == "failed"
    assert accounts["A"]["breaches"][0]["event_id"] == "L6"
    assert (accounts["B"]["status"], accounts["B"]["equity"]) == ("active", 99_490.0)


def test_replay_when_many_accounts_then_each_judged_on_its_own_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Line | str] = [
        deposit("A", amount=100_000.0),
        deposit("B", amount=20_000.0),  # op_id 1 again: ids are per account
        tick(1.1),
        deal(1, "B", volume=1.0, profit=0.0),
        deal(2, "B", volume=1.0, entry="out", side="sell", profit=2_000.0),
    ]

    accounts = verdicts(tmp_path, capsys, lines)

    assert list(accounts) == ["A", "B"]
    assert (accounts["A"]["status"], accounts["A"]["balance"]) == ("active", 100_000.0)
    assert accounts["B"]["initial_balance"] == 20_000.0
    assert (accounts["B"]["status"], accounts["B"]["balance"]) == ("passed", 22_000.0)
    assert accounts["B"]["history"][0]["event_id"] == "L5"


def test_replay_when_ids_not_increasing_or_shared_then_all_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Line | str] = [
        deposit(op_id=9),
        tick(1.1),
        deal(9, volume=1.0),  # deal_id equal to an op_id: separate sequences in a file
        deal(3, volume=1.0, entry="out", side="sell", profit=100.0),  # lower than the last id
        deposit(op_id=2, kind="withdrawal", amount=-50.0, ts="2026-03-02T09:10:00Z"),
        deposit(op_id=4, kind="credit", amount=500.0, ts="2026-03-02T09:11:00Z"),
    ]

    verdict = verdicts(tmp_path, capsys, lines)["A"]

    assert (verdict["balance"], verdict["equity"]) == (100_050.0, 100_550.0)


def test_replay_when_plan_sets_initial_balance_then_deposit_funds_and_deal_first_is_provisioned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Line | str] = [deposit("A", amount=50_000.0), tick(1.1), deal(1, "B", volume=1.0)]

    accounts = verdicts(tmp_path, capsys, lines, plan=SIZED_PLAN)

    assert (accounts["A"]["initial_balance"], accounts["A"]["balance"]) == (50_000.0, 50_000.0)
    assert (accounts["B"]["initial_balance"], accounts["B"]["balance"]) == (50_000.0, 50_000.0)


@pytest.mark.parametrize("where", [0, 3], ids=["top", "just-before-window"])
def test_replay_when_news_listed_before_its_window_then_deal_inside_it_breaks_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: int
) -> None:
    lines: list[Line | str] = [
        deposit(ts="2026-03-06T08:00:00Z"),
        tick(1.1, ts="2026-03-06T09:00:00Z"),
        tick(1.1, ts="2026-03-06T13:27:59Z"),
        deal(1, ts="2026-03-06T13:31:00Z"),
    ]
    lines.insert(where, news("2026-03-06T13:30:00Z"))

    verdict = verdicts(tmp_path, capsys, lines, "--phase", "funded")["A"]

    assert verdict["phase"] == "funded"
    assert verdict["status"] == "failed"
    assert verdict["breaches"][0] == {
        "rule": "news_trading", "action": "fail", "ts": "2026-03-06T13:31:00Z",
        "event_id": "L5", "value": 1.0, "limit": 2.0,
    }  # fmt: skip


def test_replay_when_news_in_the_future_then_clock_does_not_move(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Line | str] = [
        deposit(ts="2026-03-06T08:00:00Z"),
        news("2026-03-20T13:30:00Z", currency="JPY", impact="low"),
        tick(1.1, ts="2026-03-06T09:00:00Z"),
        deal(1, ts="2026-03-06T09:00:01Z"),
    ]

    verdict = verdicts(tmp_path, capsys, lines, "--phase", "funded")["A"]

    assert (verdict["status"], verdict["breaches"]) == ("active", [])


def test_replay_when_blank_lines_then_skipped_and_numbers_still_count_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Line | str] = [deposit(), "", tick(1.1), deal(1), "  ",
                               tick(1.0949, ts="2026-03-02T10:00:00Z")]  # fmt: skip

    verdict = verdicts(tmp_path, capsys, lines)["A"]

    assert verdict["breaches"][0]["event_id"] == "L6"


def test_replay_table_when_no_json_then_row_and_breach_per_account(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Line | str] = [deposit(), deposit("B"), tick(1.1), deal(1),
                               tick(1.0949, ts="2026-03-02T10:00:00Z")]  # fmt: skip

    code, out, err = replay(tmp_path, capsys, lines)

    assert (code, err) == (0, "")
    rows = out.splitlines()
    assert rows[0] == "plan unit (Unit plan), money in USD"
    assert rows[2].split() == ["account", "status", "phase", "balance", "equity", "days"]
    assert rows[3].split() == ["A", "FAILED", "challenge", "100,000.00", "94,900.00", "1"]
    assert rows[4].strip() == (
        "daily_loss (fail) at 2026-03-02T10:00:00Z (line 5): value 94,900.00, limit 95,000.00"
    )
    assert rows[5].split() == ["B", "ACTIVE", "challenge", "100,000.00", "100,000.00", "0"]
