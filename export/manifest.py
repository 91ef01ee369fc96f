"""The bundle's manifest: what a bundle holds, how it was verified, and its integrity hashes.

Torch-free. The manifest lists every file with its sha256, and carries the sha256 of its own
canonical content (`manifest_sha256`), so an edit to any file, manifest included, is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from events.calibration import parse_calibration
from export.exceptions import CorruptBundleError, IncompatibleBundleError, MissingFileError

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "CPU_SPEED_KEY",
    "CPU_VARIANTS",
    "FILES",
    "INPUT_NAMES",
    "MANIFEST_FILE",
    "OUTPUT_NAMES",
    "VARIANT_FILES",
    "Manifest",
    "Variant",
    "read_manifest",
    "sha256_file",
]

BUNDLE_FORMAT_VERSION: Final = 1
MANIFEST_FILE: Final = "manifest.json"
VARIANT_FILES: Final = {
    "fp32": "model.onnx",
    "int8": "model.int8.onnx",
    "fp16": "model.fp16.onnx",
}
#: The graphs a CPU serves, and the figure export records for each: windows/s at batch 256 on
#: the export host's CPU (bundles written before it have none: the loader then prefers INT8).
CPU_VARIANTS: Final = ("int8", "fp32")
CPU_SPEED_KEY: Final = "cpu_windows_per_s"
FILES: Final = {"spec": "encoding_spec.json", "policy": "window_policy.json"}
INPUT_NAMES: Final = ("features", "attention_mask")
OUTPUT_NAMES: Final = ("fraud", "abnormal_click")  # probabilities, in events.LABELS order
#: An ensemble bundle's trees: window aggregates in, log-odds per head out.
GBDT_FILE: Final = "gbdt.onnx"
GBDT_INPUT: Final = "aggregates"
GBDT_OUTPUT: Final = "gbdt_log_odds"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Variant:
    """One graph of the bundle and the outcome of its verification at export."""

    file: str
    verified: bool
    check: str  # what was checked, with the figures, or why it is unusable
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """Everything `manifest.json` records."""

    model_version: str  # <UTC creation time>-<sha256 of model.onnx, 12 hex>
    created_at: str
    encoding_version: int
    encoding_spec_hash: str
    window: dict[str, int]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    thresholds: dict[str, float]
    files: dict[str, str]  # file name -> sha256
    opset: int
    variants: dict[str, Variant]
    source: dict[str, Any]  # checkpoint, its training step and data
    evaluation: dict[str, Any]  # the checkpoint's test-split summary
    session_gap_s: int = 1800
    optimization: dict[str, Any] = field(default_factory=dict)
    # A stacked ensemble: {"gbdt": file, "blend": {head: [a, b, c]}} (events.trees.Blend);
    # empty when the sequence model alone is served.
    ensemble: dict[str, Any] = field(default_factory=dict)
    # What a score means, measured on validation at training: per head, severity cuts and the
    # shortest window that may alert (events.calibration). Empty in bundles exported before it.
    calibration: dict[str, Any] = field(default_factory=dict)
    format_version: int = BUNDLE_FORMAT_VERSION

    def content(self) -> dict[str, Any]:
        """Plain JSON-able form, without the self hash."""
        return asdict(self)

    def to_json(self) -> str:
        """Indented JSON with `manifest_sha256` over the canonical content."""
        body = self.content()
        return json.dumps({**body, "manifest_sha256": _canonical_hash(body)}, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_FILE) -> Manifest:
        """Check the format version and the self hash, then load."""
        version = data.get("format_version")
        if version != BUNDLE_FORMAT_VERSION:
            raise IncompatibleBundleError(
                f"{where}: format_version {version!r}, this code reads {BUNDLE_FORMAT_VERSION}"
            )
        body = {k: v for k, v in data.items() if k != "manifest_sha256"}
        if data.get("manifest_sha256") != _canonical_hash(body):
            raise CorruptBundleError(
                f"{where}: manifest_sha256 does not match (edited after export?)"
            )
        try:
            variants = {k: Variant(**v) for k, v in body.pop("variants").items()}
            parse_calibration(body.get("calibration", {}))
            return cls(**body, variants=variants)
        except (KeyError, TypeError, AttributeError) as exc:
            raise CorruptBundleError(f"{where}: unexpected layout ({exc})") from exc
        except ValueError as exc:  # a calibration the stream could not apply
            raise CorruptBundleError(f"{where}: {exc}") from exc


def _canonical_hash(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(bundle: Path) -> Manifest:
    """Read and check `manifest.json` of a bundle folder (not the files it lists)."""
    path = bundle / MANIFEST_FILE
    if not bundle.is_dir():
        raise MissingFileError(f"{bundle}: not a bundle folder")
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise MissingFileError(f"{path}: missing; not a riskstream bundle") from None
    except (OSError, ValueError) as exc:
        raise CorruptBundleError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise CorruptBundleError(f"{path}: must be a JSON object")
    return Manifest.from_dict(data, str(path))
