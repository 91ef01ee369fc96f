"""The errors of `riskstream dev`."""

from __future__ import annotations

from riskstream.localstack.exceptions import LocalStackError

__all__ = ["DevStackError"]


class DevStackError(LocalStackError):
    """`riskstream dev` could not start, find or stop a part of the local stack."""
