"""`riskstream dev`: a local broker and Redis in the background, for trying the worker by hand.

`dev_addresses()` gives other commands the stack's addresses when they are given none.
"""

from __future__ import annotations

from riskstream.dev.exceptions import DevStackError
from riskstream.dev.stack import (
    DEV_STATE_ENV,
    DevState,
    ServiceRecord,
    dev_addresses,
    dev_down,
    dev_status,
    dev_up,
    load_state,
    resolve_state_path,
)

__all__ = [
    "DEV_STATE_ENV",
    "DevStackError",
    "DevState",
    "ServiceRecord",
    "dev_addresses",
    "dev_down",
    "dev_status",
    "dev_up",
    "load_state",
    "resolve_state_path",
]
