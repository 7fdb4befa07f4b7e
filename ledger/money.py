"""Money at the API's edge: decimal strings in, integer minor units stored, decimal strings out,
each currency with its ISO 4217 number of decimals. Integer arithmetic only."""

from __future__ import annotations

import re

# ISO 4217 minor units where they are not 2 (the list is short and changes rarely).
_PLACES = (
    (0, "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"),
    (3, "BHD IQD JOD KWD LYD OMR TND"),
    (4, "CLF UYW"),
)
_EXPONENTS = {code: places for places, codes in _PLACES for code in codes.split()}
_AMOUNT = re.compile(r"^([0-9]{1,15})(?:\.([0-9]+))?$")


def exponent(currency: str) -> int:
    """How many decimals the currency has (2 unless ISO 4217 says otherwise)."""
    return _EXPONENTS.get(currency, 2)


def amount_text(minor: int, currency: str) -> str:
    """An amount in minor units as a decimal string in its currency: 9900 USD is "99.00",
    9900 JPY "9900", -1 KWD "-0.001"."""
    places = exponent(currency)
    whole, fraction = divmod(abs(minor), 10**places)
    sign = "-" if minor < 0 else ""
    return f"{sign}{whole}.{fraction:0{places}d}" if places else f"{sign}{whole}"


def parse_amount(text: str, currency: str) -> int:
    """A positive decimal string in minor units of `currency`; `ValueError` says what is wrong
    (not a plain decimal, more decimals than the currency has, not above zero)."""
    match = _AMOUNT.match(text)
    places = exponent(currency)
    if match is None:
        raise ValueError(f"must be a plain decimal such as '99.00', got {text!r}")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > places:
        raise ValueError(f"{currency} has {places} decimals, got {text!r}")
    minor: int = int(whole) * 10**places + int(fraction.ljust(places, "0") or "0")
    if minor <= 0:
        raise ValueError(f"must be above zero, got {text!r}")
    return minor
