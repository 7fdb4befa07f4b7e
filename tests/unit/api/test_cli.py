"""The `propvisor` command line: arguments are checked before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cli import build_parser, main


@pytest.mark.parametrize("accounts", ["0", "-5"])
def test_demo_when_accounts_below_one_then_argparse_error_names_the_option(
    accounts: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--accounts", accounts])

    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--accounts" in error
    assert "must be at least 1" in error


def test_demo_when_accounts_not_a_number_then_argparse_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["demo", "--accounts", "many"])

    assert exit_info.value.code == 2
    assert "--accounts" in capsys.readouterr().err


def test_demo_when_arguments_valid_then_parsed_with_defaults() -> None:
    args = build_parser().parse_args(["--config", "p.toml", "demo", "--accounts", "1"])

    assert args.command == "demo"
    assert args.accounts == 1
    assert args.config == Path("p.toml")
    assert (args.duration, args.shards, args.database_url) == (None, None, None)


def test_demo_when_accounts_omitted_then_two_thousand() -> None:
    assert build_parser().parse_args(["demo"]).accounts == 2000


@pytest.mark.parametrize("argv", [[], ["db"], ["launch"]], ids=["none", "db-alone", "unknown"])
def test_cli_when_command_missing_or_unknown_then_argparse_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)

    assert exit_info.value.code == 2
