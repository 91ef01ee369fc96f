"""Checkpoint → ONNX model bundle, and the torch-free bundle loader (see its issue)."""

from export.exceptions import ExportError

__all__ = ["ExportError"]
