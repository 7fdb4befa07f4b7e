"""Decoding at the edge: raw platform messages in, typed events or named rejections out.

Each message is decoded on its own, so a malformed one is rejected alone and never takes its
batch down with it. Inside the system events travel as msgpack batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from bridge.commands import AnyPlatformCommand
from bridge.events import AnyPlatformEvent


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """A message that could not be accepted: its position in the batch and why."""

    index: int
    error: str


_json_event = msgspec.json.Decoder(AnyPlatformEvent)
_msgpack_events = msgspec.msgpack.Decoder(list[AnyPlatformEvent])
_msgpack_commands = msgspec.msgpack.Decoder(list[AnyPlatformCommand])
_msgpack = msgspec.msgpack.Encoder()


def decode_messages(raw: Sequence[bytes]) -> tuple[list[AnyPlatformEvent], list[Rejection]]:
    """Decode JSON platform messages one by one; bad ones become rejections naming the field."""
    events: list[AnyPlatformEvent] = []
    rejections: list[Rejection] = []
    for index, message in enumerate(raw):
        try:
            events.append(_json_event.decode(message))
        except msgspec.DecodeError as exc:
            rejections.append(Rejection(index=index, error=str(exc)))
    return events, rejections


def encode_batch(items: Sequence[AnyPlatformEvent] | Sequence[AnyPlatformCommand]) -> bytes:
    """Encode events or commands for a hop across a Ray boundary."""
    return _msgpack.encode(items)


def decode_event_batch(payload: bytes) -> list[AnyPlatformEvent]:
    """Decode a batch produced by `encode_batch` (trusted: it was validated at the edge)."""
    return _msgpack_events.decode(payload)


def decode_command_batch(payload: bytes) -> list[AnyPlatformCommand]:
    """Decode a batch of platform commands produced by `encode_batch`."""
    return _msgpack_commands.decode(payload)
