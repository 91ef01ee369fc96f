"""What the worker consumes: a message and where it came from (shared by the processor and the
dead-letter log, which both name it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Incoming"]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A consumed message and where it came from."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None  # the broker's record timestamp
