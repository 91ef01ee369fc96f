"""Timestamps on the wire: RFC 3339 with an offset, or integer epoch milliseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["MIN_TS_MS", "format_ts_ms", "parse_ts_ms"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
#: 2000-01-01T00:00:00Z: anything earlier is almost surely epoch *seconds* sent as milliseconds.
MIN_TS_MS: Final = 946_684_800_000
_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


def parse_ts_ms(value: object) -> int:
    """Epoch milliseconds UTC from an RFC 3339 string with offset or an integer of milliseconds.

    Raises ValueError with the rule that was broken.

    >>> parse_ts_ms("2026-11-02T09:00:00.250+09:00")
    1793577600250
    >>> parse_ts_ms(1793577600250)
    1793577600250
    >>> parse_ts_ms("2026-11-02T09:00:00")
    Traceback (most recent call last):
    ...
    ValueError: must be RFC 3339 with an offset (e.g. 2026-11-02T09:00:00Z) or epoch milliseconds
    """
    if type(value) is int:
        ms = value
    elif type(value) is float and value.is_integer():  # JSON Schema counts 1.7e12 as an integer
        ms = int(value)
    elif type(value) is str:
        if _RFC3339.fullmatch(value) is None:
            raise ValueError(
                "must be RFC 3339 with an offset (e.g. 2026-11-02T09:00:00Z) or epoch milliseconds"
            )
        try:
            dt = datetime.fromisoformat(value.upper())
        except ValueError as exc:
            raise ValueError(f"is not a valid date-time ({exc})") from None
        ms = (dt - _EPOCH) // _MS
    else:
        raise ValueError("must be an RFC 3339 string or an integer of epoch milliseconds")
    if ms < MIN_TS_MS:
        raise ValueError("must be on or after 2000-01-01 (epoch milliseconds, not seconds)")
    return ms


def format_ts_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds.

    >>> format_ts_ms(1793577600250)
    '2026-11-02T00:00:00.250Z'
    """
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
