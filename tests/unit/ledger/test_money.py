"""Amounts at the API's edge: each currency's ISO 4217 decimals, integer arithmetic only."""

from __future__ import annotations

import pytest

from ledger.money import amount_text, parse_amount


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("99.00", "USD", 9900), ("99.5", "USD", 9950), ("1000", "JPY", 1000),
     ("1.234", "KWD", 1234), ("0.01", "EUR", 1), ("123456789012345.99", "USD", 12345678901234599)],
)  # fmt: skip
def test_parse_when_within_the_currency_decimals_then_exact_minor_units(
    text: str, currency: str, minor: int
) -> None:
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "says"),
    [("99.505", "USD", "USD has 2 decimals"), ("10.5", "JPY", "JPY has 0 decimals"),
     ("0.00", "USD", "above zero"), ("-5", "USD", "plain decimal"), ("1e3", "USD", "plain decimal"),
     ("٩٩", "USD", "plain decimal"), (" 9", "USD", "plain decimal")],
)  # fmt: skip
def test_parse_when_not_an_amount_of_the_currency_then_error_says_why(
    text: str, currency: str, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        parse_amount(text, currency)


def test_text_when_formatted_then_each_currency_shows_its_own_decimals() -> None:
    assert [amount_text(9900, "USD"), amount_text(9900, "JPY"), amount_text(-1, "KWD")] == [
        "99.00", "9900", "-0.001"
    ]  # fmt: skip
