"""The model the worker serves, swapped between batches when a new bundle appears.

`ModelSlot.poll()` looks at the bundle path's manifest (cheap: a stat, then the manifest's
`model_version`); a new version is loaded and fully verified (`export.load_bundle`) before it
replaces the old one. A bundle that fails verification is refused with a log line and counted;
the old model keeps serving. Window overrides (N, T) apply to every bundle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from events import WindowPolicy
from export import Bundle, BundleError, load_bundle
from export.loader import Device
from export.manifest import MANIFEST_FILE

__all__ = ["ModelSlot"]

log = logging.getLogger(__name__)


class ModelSlot:
    """Holds the serving `Bundle`; `poll()` hot-swaps a new verified one."""

    def __init__(
        self,
        path: Path,
        device: Device = "auto",
        *,
        variant: str | None = None,
        max_events: int | None = None,
        max_age_s: int | None = None,
        spin: bool = True,
    ) -> None:
        self.path = path
        self.device: Device = device
        self.variant = variant
        self.spin = spin
        self._overrides = {
            k: v for k, v in (("max_events", max_events), ("max_age_s", max_age_s)) if v
        }
        self.bundle = load_bundle(path, device, variant=variant, spin=spin)  # bad: an error
        self.policy = self._policy(self.bundle)
        self.reloads = 0
        self.refused = 0
        self._stamp = self._manifest_stamp()
        self._refused_version: str | None = None

    def _policy(self, bundle: Bundle) -> WindowPolicy:
        return replace(bundle.policy, **self._overrides) if self._overrides else bundle.policy

    def _manifest_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.path / MANIFEST_FILE).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _announced_version(self) -> str | None:
        try:
            data = json.loads((self.path / MANIFEST_FILE).read_bytes())
        except (OSError, ValueError):
            return None
        version = data.get("model_version") if isinstance(data, dict) else None
        return version if isinstance(version, str) else None

    def poll(self, force: bool = False) -> bool:
        """Load the bundle at `path` if it changed; True when a new model now serves."""
        stamp = self._manifest_stamp()
        if stamp is None or (not force and stamp == self._stamp):
            return False
        self._stamp = stamp
        version = self._announced_version()
        if version == self.bundle.model_version:
            return False
        try:
            bundle = load_bundle(self.path, self.device, variant=self.variant, spin=self.spin)
        except BundleError as exc:
            self._stamp = None  # retry on the next poll: a copy may still be under way
            if version != self._refused_version:
                self.refused += 1
                self._refused_version = version
                log.error(
                    "bundle refused, model %s keeps serving: %s", self.bundle.model_version, exc
                )
            return False
        old = self.bundle.model_version
        self.bundle, self.policy = bundle, self._policy(bundle)
        self.reloads += 1
        log.info("model reloaded: %s → %s (%s on %s)", old, bundle.model_version,
                 bundle.variant, bundle.provider)  # fmt: skip
        return True
