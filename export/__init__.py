"""Checkpoint → ONNX model bundle (`export.build`, needs torch), and the torch-free loader.

Importing this package never imports torch: the stream worker loads bundles through it.
"""

from export.exceptions import (
    BundleError,
    CorruptBundleError,
    ExportError,
    HashMismatchError,
    IncompatibleBundleError,
    MissingFileError,
    ParityError,
    UnsafePathError,
)
from export.loader import Bundle, load_bundle, verify_bundle
from export.manifest import BUNDLE_FORMAT_VERSION, Manifest, Variant, read_manifest

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "CorruptBundleError",
    "ExportError",
    "HashMismatchError",
    "IncompatibleBundleError",
    "Manifest",
    "MissingFileError",
    "ParityError",
    "UnsafePathError",
    "Variant",
    "load_bundle",
    "read_manifest",
    "verify_bundle",
]
