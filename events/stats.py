"""Counting what parsing saw: accepted events, unknown types kept as `other`, refusals by field."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from events.contract import OTHER_TYPE, Event
from events.exceptions import InvalidEvent

__all__ = ["ParseStats"]

#: Distinct unknown type names remembered; past this a flood of junk types cannot grow memory.
MAX_DISTINCT_UNKNOWN_TYPES: Final = 100
_OVERFLOW: Final = "<other names>"


@dataclass
class ParseStats:
    """Counters for a stream of parse results (the worker's metrics and the trainer's report).

    >>> from events import parse_event
    >>> stats = ParseStats()
    >>> stats.accepted(parse_event(b'{"event_id":"e","user_id":"u","ts":1793577600000,'
    ...                            b'"type":"wishlist_add"}', now_ms=1793577600000))
    >>> stats.events, stats.unknown_types["wishlist_add"]
    (1, 1)
    """

    events: int = 0
    unknown_types: Counter[str] = field(default_factory=Counter)
    refused_by_field: Counter[str] = field(default_factory=Counter)

    @property
    def refused(self) -> int:
        """Messages refused (they went to the dead-letter topic)."""
        return sum(self.refused_by_field.values())

    @property
    def other_type_events(self) -> int:
        """Events kept with type `other`."""
        return sum(self.unknown_types.values())

    def accepted(self, event: Event) -> None:
        """Count an accepted event (and its type name if it was unknown)."""
        self.events += 1
        if event.type == OTHER_TYPE:
            name = event.raw_type or ""
            known = name in self.unknown_types
            if not known and len(self.unknown_types) >= MAX_DISTINCT_UNKNOWN_TYPES:
                name = _OVERFLOW
            self.unknown_types[name] += 1

    def refused_event(self, error: InvalidEvent) -> None:
        """Count a refusal under the field it named."""
        self.refused_by_field[error.field] += 1
