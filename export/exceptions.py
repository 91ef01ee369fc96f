"""Errors of the export side and the bundle loader."""

from events.exceptions import RiskstreamError

__all__ = ["ExportError"]


class ExportError(RiskstreamError):
    """Root of export and bundle-loading errors."""
