"""What every local service shares: `start()`/`stop()`, use as a context manager, and a scratch
folder of its own that `stop()` removes."""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["LocalService"]


class LocalService(ABC):
    """A local service: `with Service() as s:` starts it and stops it on the way out."""

    # The temporary folder the service made and removes at stop (None: it has none).
    _data_dir: Path | None = None

    @abstractmethod
    def start(self) -> Self:
        """Start the service and return it once it answers."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the service and remove what it made; safe to call twice."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _remove_data_dir(self) -> None:
        # ignore_errors: a half-removed scratch folder must not hide why the service stopped.
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
