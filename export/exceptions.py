"""Errors of the export side and the bundle loader: one class per way a bundle can be refused."""

from events.exceptions import RiskstreamError

__all__ = [
    "BundleError",
    "CorruptBundleError",
    "ExportError",
    "HashMismatchError",
    "IncompatibleBundleError",
    "MissingFileError",
    "ParityError",
    "UnsafePathError",
]


class ExportError(RiskstreamError):
    """Root of export and bundle-loading errors."""


class ParityError(ExportError):
    """The exported FP32 graph does not reproduce the torch model."""


class BundleError(ExportError):
    """A bundle was refused; the message names the file and why."""


class MissingFileError(BundleError):
    """A file the manifest lists (or the manifest itself) is not there."""


class HashMismatchError(BundleError):
    """A file's sha256 differs from the manifest's: changed or damaged after export."""


class IncompatibleBundleError(BundleError):
    """Written for another bundle format or encoding than this code reads."""


class CorruptBundleError(BundleError):
    """Unreadable manifest, or a graph ONNX Runtime cannot load or that has the wrong I/O."""


class UnsafePathError(BundleError):
    """The manifest names a file outside its bundle folder (a `/`, `..`, an absolute path, a
    symlink leading out): refused before anything is read."""
