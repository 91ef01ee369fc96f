"""Errors of the benchmarks (the pipeline benchmark has its own, in its package)."""

from events.exceptions import RiskstreamError

__all__ = ["NoCudaError"]


class NoCudaError(RiskstreamError):
    """No CUDA device that ONNX Runtime can use here."""
