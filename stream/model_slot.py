"""The model the worker serves, swapped between batches when a new bundle appears.

`ModelSlot.poll()` returns the `Serving` snapshot a batch is to use: the bundle, its window
policy (N, T, with the worker's overrides) and the window store for that policy, frozen
together, so one batch sees one model whatever is reloaded meanwhile.

Polling is cheap: a stat of the bundle folder's files. When they changed and the manifest
announces another `model_version`, the new bundle is loaded, fully verified
(`export.load_bundle`) and made to score a probe window before it replaces the old one. A bundle
that fails in any way (a refusal of the loader, an unreadable file, ONNX Runtime failing to
build or run its session) is refused with one log line and counted; the old model keeps
serving, and the refused files are not read again until they change.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from events import WindowPolicy
from events.encoding import RECORD_DTYPE
from events.window import AppendResult
from export import Bundle, load_bundle
from export.loader import Device
from export.manifest import MANIFEST_FILE

__all__ = ["BatchWindowStore", "ModelSlot", "Serving", "StoreFactory"]

log = logging.getLogger(__name__)


class BatchWindowStore(Protocol):
    """What a batch needs of its window store: `stream.redis_windows.RedisWindowStore` in the
    worker, an in-memory one in the backtest (`riskstream.tools.backtest`)."""

    @property
    def policy(self) -> WindowPolicy:
        """The N and T the store keeps."""
        ...

    def append_batch(self, items: Sequence[tuple[str, bytes]]) -> list[AppendResult]:
        """Append every `(user_id, record)` in order; one result per item."""
        ...

    def get(self, user_id: str) -> bytes:
        """The user's stored records (empty when none)."""
        ...


#: Builds the window store for a policy (the store keeps N and T).
StoreFactory = Callable[[WindowPolicy], BatchWindowStore]

_Stamp = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class Serving:
    """What one batch is processed with: never changed, replaced whole on a reload."""

    bundle: Bundle
    policy: WindowPolicy  # the bundle's, with the worker's N/T overrides
    store: BatchWindowStore  # keeps `policy`

    @property
    def model_version(self) -> str:
        """What alerts carry."""
        return self.bundle.model_version


def _probe(bundle: Bundle) -> None:
    """Score one window of one record: a graph that cannot run at all is refused at load."""
    probs = bundle.score_windows([np.zeros(1, dtype=RECORD_DTYPE)])
    if probs.shape != (1, 2) or not np.isfinite(probs).all():
        raise ValueError(f"the probe window scored {probs!r}, expected two finite numbers")


class ModelSlot:
    """Holds the serving `Serving`; `poll()` hot-swaps a new verified bundle in."""

    def __init__(
        self,
        path: Path,
        stores: StoreFactory,
        device: Device = "auto",
        *,
        variant: str | None = None,
        max_events: int | None = None,
        max_age_s: int | None = None,
        spin: bool = True,
        threads: int | None = None,
    ) -> None:
        self.path = path
        self.threads = threads
        self.device: Device = device
        self.variant = variant
        self.spin = spin
        self._stores = stores
        self._overrides = {
            k: v for k, v in (("max_events", max_events), ("max_age_s", max_age_s)) if v
        }
        self._stamp = self._files_stamp()
        self.current = self._serving(self._load())  # bad at start-up: an error
        self.reloads = 0
        self.refused = 0
        self._refused_stamp: _Stamp | None = None

    def _load(self) -> Bundle:
        bundle = load_bundle(
            self.path, self.device, variant=self.variant, threads=self.threads, spin=self.spin
        )
        _probe(bundle)
        return bundle

    def _serving(self, bundle: Bundle) -> Serving:
        policy = replace(bundle.policy, **self._overrides) if self._overrides else bundle.policy
        return Serving(bundle, policy, self._stores(policy))

    def _files_stamp(self) -> _Stamp:
        """(name, inode, mtime, size) of every entry of the bundle folder: a re-export, a
        rename of a new folder into place or any edit of a file changes it."""
        entries = []
        with os.scandir(self.path) as it:
            for entry in it:
                st = entry.stat()
                entries.append((entry.name, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(sorted(entries))

    def _announced_version(self) -> str | None:
        try:
            data = json.loads((self.path / MANIFEST_FILE).read_bytes())
        except (OSError, ValueError):
            return None
        version = data.get("model_version") if isinstance(data, dict) else None
        return version if isinstance(version, str) else None

    def poll(self, force: bool = False) -> Serving:
        """The snapshot to use now: a new one when the bundle at `path` changed and loads."""
        try:
            stamp = self._files_stamp()
        except FileNotFoundError:
            return self.current  # between an old folder's removal and the new one's rename
        except OSError as exc:
            self._refuse(None, f"cannot list {self.path}: {exc}")
            return self.current
        if not force and stamp == self._stamp:
            return self.current
        self._stamp = stamp
        if self._announced_version() == self.current.model_version:
            return self.current
        try:
            bundle = self._load()
        except Exception as exc:  # any bad bundle is refused, not fatal
            self._refuse(stamp, f"{type(exc).__name__}: {exc}")
            return self.current
        old = self.current.model_version
        self.current = self._serving(bundle)
        self.reloads += 1
        log.info("model reloaded: %s → %s (%s on %s)", old, bundle.model_version,
                 bundle.variant, bundle.provider)  # fmt: skip
        return self.current

    def _refuse(self, stamp: _Stamp | None, why: str) -> None:
        """Count and log a refusal once per state of the files (not once per poll)."""
        if stamp is not None and stamp == self._refused_stamp:
            return
        if stamp is None and self._refused_stamp == ():
            return
        self._refused_stamp = stamp if stamp is not None else ()
        self.refused += 1
        log.error("bundle at %s refused, model %s keeps serving: %s", self.path,
                  self.current.model_version, why)  # fmt: skip
