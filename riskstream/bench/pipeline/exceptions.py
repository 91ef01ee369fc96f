"""Errors of the pipeline benchmark."""

from events.exceptions import RiskstreamError

__all__ = ["PipelineBenchError"]


class PipelineBenchError(RiskstreamError):
    """The benchmark could not run a part (a worker died or stalled, a bundle is unusable)."""
