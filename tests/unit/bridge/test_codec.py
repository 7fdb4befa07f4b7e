"""Decoding at the edge: every malformed message is rejected alone, naming what is wrong."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codec import (
    decode_command_batch,
    decode_event_batch,
    decode_messages,
    encode_batch,
)
from bridge.commands import AnyPlatformCommand, CloseAllPositions, DisableTrading
from bridge.events import (
    AnyPlatformEvent,
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    PriceTicked,
    Side,
    TradingDisabled,
)

TICK: dict[str, Any] = {
    "type": "tick",
    "event_id": "sim-1:1",
    "ts_ns": 1_772_442_000_000_000_000,
    "symbol": "EURUSD",
    "bid": 1.08499,
    "ask": 1.08501,
}
DEAL: dict[str, Any] = {
    "type": "deal",
    "event_id": "sim-1:2",
    "ts_ns": 1_772_442_000_100_000_000,
    "account_id": "acc-1",
    "deal_id": 7,
    "position_id": 7,
    "symbol": "EURUSD",
    "entry": "in",
    "side": "buy",
    "volume": 1.5,
    "price": 1.08501,
    "commission": -5.25,
}
BALANCE: dict[str, Any] = {
    "type": "balance",
    "event_id": "sim-1:3",
    "ts_ns": 1_772_442_000_200_000_000,
    "account_id": "acc-1",
    "deal_id": 8,
    "kind": "deposit",
    "amount": 2500.0,
}
DISABLED: dict[str, Any] = {
    "type": "trading_disabled",
    "event_id": "sim-1:4",
    "ts_ns": 1_772_442_000_300_000_000,
    "account_id": "acc-1",
    "command_id": "freeze:acc-1:sim-1:1",
}

EVENTS: list[AnyPlatformEvent] = [
    PriceTicked(event_id="e1", ts_ns=1, symbol="XAUUSD", bid=2650.1, ask=2650.3),
    DealExecuted(
        event_id="e2",
        ts_ns=2,
        account_id="acc-1",
        deal_id=11,
        position_id=10,
        symbol="XAUUSD",
        entry=DealEntry.OUT,
        side=Side.SELL,
        volume=0.25,
        price=2650.1,
        profit=-123.45,
        commission=-0.88,
        swap=-1.5,
    ),
    BalanceOperated(
        event_id="e3",
        ts_ns=3,
        account_id="acc-1",
        deal_id=12,
        kind=BalanceKind.WITHDRAWAL,
        amount=-1000.0,
    ),
    TradingDisabled(event_id="e4", ts_ns=4, account_id="acc-1", command_id="freeze:acc-1:e1"),
]
COMMANDS: list[AnyPlatformCommand] = [
    DisableTrading(
        command_id="freeze:acc-1:e1", account_id="acc-1", reason="daily_loss", caused_by="e1"
    ),
    CloseAllPositions(command_id="close:acc-1", account_id="acc-1", reason="max_loss"),
]


def message(template: dict[str, Any], **changes: Any) -> bytes:
    """A JSON message from a template, with fields changed (`None` removes the field)."""
    fields = {**template, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


# -- rejections ----------------------------------------------------------------------------------

MALFORMED: list[tuple[str, bytes, list[str]]] = [
    ("truncated_json", b'{"type": "tick", "event_id": ', ["truncated"]),
    ("bad_json", b'{"type": "tick" "event_id": "a"}', ["malformed", "byte 16"]),
    ("unknown_field", message(TICK, venue="LMAX"), ["unknown field", "`venue`"]),
    ("missing_field", message(TICK, ask=None), ["missing required field", "`ask`"]),
    ("missing_tag", message(TICK, type=None), ["missing required field", "`type`"]),
    ("wrong_type", message(TICK, ts_ns="now"), ["Expected `int`", "`$.ts_ns`"]),
    ("negative_volume", message(DEAL, volume=-1.0), ["> 0", "`$.volume`"]),
    ("zero_price", message(DEAL, price=0), ["> 0", "`$.price`"]),
    ("ask_below_bid", message(TICK, bid=1.1, ask=1.0), ["`ask`", "`bid`"]),
    ("unknown_tag", message(TICK, type="quote"), ["'quote'", "`$.type`"]),
    ("bad_enum", message(DEAL, entry="inout"), ["'inout'", "`$.entry`"]),
    ("non_positive_deal_id", message(BALANCE, deal_id=0), ["`$.deal_id`"]),
    ("empty_account_id", message(DISABLED, account_id=""), ["`$.account_id`"]),
    ("huge_number", message(DEAL).replace(b"-5.25", b"-1e999"), ["`$.commission`"]),
    ("not_an_object", b"[1, 2]", ["Expected `object`"]),
]


@pytest.mark.parametrize(
    ("bad", "expected"),
    [pytest.param(raw, expected, id=name) for name, raw, expected in MALFORMED],
)
def test_decode_messages_when_one_is_malformed_then_it_alone_is_rejected_naming_the_field(
    bad: bytes, expected: list[str]
) -> None:
    batch = [message(TICK), bad, message(DEAL), message(BALANCE)]

    events, rejections = decode_messages(batch)

    assert [type(e) for e in events] == [PriceTicked, DealExecuted, BalanceOperated]
    assert [e.event_id for e in events] == ["sim-1:1", "sim-1:2", "sim-1:3"]
    assert [r.index for r in rejections] == [1]
    for fragment in expected:
        assert fragment in rejections[0].error


def test_decode_messages_when_several_are_malformed_then_good_ones_keep_their_order() -> None:
    batch = [
        message(TICK, event_id="a"),
        message(TICK, ask=None),
        message(TICK, event_id="b"),
        b"garbage",
        message(DISABLED, event_id="c"),
        message(DEAL, volume=0),
    ]

    events, rejections = decode_messages(batch)

    assert [e.event_id for e in events] == ["a", "b", "c"]
    assert [r.index for r in rejections] == [1, 3, 5]


def test_decode_messages_when_batch_is_empty_then_nothing_comes_out() -> None:
    assert decode_messages([]) == ([], [])


@pytest.mark.parametrize(
    ("template", "field"),
    [
        (DEAL, "profit"),
        (DEAL, "commission"),
        (DEAL, "swap"),
        (DEAL, "volume"),
        (DEAL, "price"),
        (BALANCE, "amount"),
        (TICK, "bid"),
        (TICK, "ask"),
    ],
)
def test_msgpack_batch_when_a_number_is_nan_then_decoding_names_the_field(
    template: dict[str, Any], field: str
) -> None:
    payload = msgspec.msgpack.encode([{**template, field: math.nan}])

    with pytest.raises(msgspec.ValidationError, match=f"`{field}`|\\.{field}`"):
        decode_event_batch(payload)


@pytest.mark.parametrize(
    ("template", "field"), [(DEAL, "profit"), (DEAL, "swap"), (BALANCE, "amount")]
)
def test_msgpack_batch_when_an_amount_is_infinite_then_decoding_names_the_field(
    template: dict[str, Any], field: str
) -> None:
    payload = msgspec.msgpack.encode([{**template, field: -math.inf}])

    with pytest.raises(msgspec.ValidationError, match=f"`{field}`"):
        decode_event_batch(payload)


@pytest.mark.parametrize(
    ("template", "changes"),
    [
        (TICK, {"bid": math.inf, "ask": math.inf}),
        (TICK, {"ask": math.inf}),
        (DEAL, {"price": math.inf}),
        (DEAL, {"volume": math.inf}),
    ],
    ids=["tick-bid-and-ask", "tick-ask", "deal-price", "deal-volume"],
)
def test_msgpack_batch_when_a_price_or_volume_is_infinite_then_decoding_rejects_it(
    template: dict[str, Any], changes: dict[str, float]
) -> None:
    payload = msgspec.msgpack.encode([{**template, **changes}])

    with pytest.raises(msgspec.ValidationError):
        decode_event_batch(payload)


def test_msgpack_batch_when_an_item_has_an_unknown_field_then_decoding_names_it() -> None:
    payload = msgspec.msgpack.encode([TICK, {**DEAL, "magic": 42}])

    with pytest.raises(msgspec.ValidationError, match="`magic`"):
        decode_event_batch(payload)


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_when_encoded_as_json_then_decode_messages_returns_it_unchanged(
    event: AnyPlatformEvent,
) -> None:
    events, rejections = decode_messages([msgspec.json.encode(event)])

    assert rejections == []
    assert events == [event]
    assert type(events[0]) is type(event)


def test_events_when_encoded_as_msgpack_batch_then_decoded_unchanged_in_order() -> None:
    decoded = decode_event_batch(encode_batch(EVENTS))

    assert decoded == EVENTS
    assert [type(e) for e in decoded] == [type(e) for e in EVENTS]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_command_when_encoded_as_json_then_decoded_unchanged(command: AnyPlatformCommand) -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(command), type=AnyPlatformCommand)

    assert decoded == command
    assert type(decoded) is type(command)


def test_commands_when_encoded_as_msgpack_batch_then_decoded_unchanged_in_order() -> None:
    decoded = decode_command_batch(encode_batch(COMMANDS))

    assert decoded == COMMANDS
    assert [type(c) for c in decoded] == [type(c) for c in COMMANDS]


def test_command_batch_when_given_events_then_decoding_rejects_the_tag() -> None:
    with pytest.raises(msgspec.ValidationError, match="`\\$\\[0\\]\\.type`"):
        decode_command_batch(encode_batch(EVENTS[:1]))


finite = st.floats(allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False)


@settings(max_examples=50, deadline=None, database=None)
@given(
    volume=positive,
    price=positive,
    profit=finite,
    commission=finite,
    swap=finite,
    deal_id=st.integers(min_value=1, max_value=2**63 - 1),
)
def test_deal_with_any_finite_amounts_when_round_tripped_then_json_and_msgpack_are_exact(
    volume: float, price: float, profit: float, commission: float, swap: float, deal_id: int
) -> None:
    deal = DealExecuted(
        event_id="sim-1:9",
        ts_ns=1,
        account_id="acc-1",
        deal_id=deal_id,
        position_id=deal_id,
        symbol="US500",
        entry=DealEntry.OUT,
        side=Side.BUY,
        volume=volume,
        price=price,
        profit=profit,
        commission=commission,
        swap=swap,
    )

    from_json, rejections = decode_messages([msgspec.json.encode(deal)])

    assert rejections == []
    assert from_json == [deal]
    assert decode_event_batch(encode_batch([deal])) == [deal]
