"""Progress for every long step of the trainer: a tqdm bar on a terminal, log lines elsewhere.

tqdm redraws its bar with carriage returns, which a log file or CI keeps as one frame per
update. So a bar is drawn only when asked for *and* stderr is a terminal; otherwise (a log, a
pipe, `--quiet`) the step logs one line when it ends — what it did, how many samples, the
running loss and the wall time — and the training loops log one line per epoch.

    with Progress("fine-tune", total=steps, enabled=progress) as bar:
        for batch in batches:
            ...
            bar.update(samples=len(batch), loss=loss.item())
"""

from __future__ import annotations

import logging
import time
from collections import deque
from types import TracebackType
from typing import Any, Final

from tqdm import tqdm

from events.terminal import bars_wanted

__all__ = ["Progress", "bars_wanted"]

log = logging.getLogger(__name__)

_LOSS_WINDOW: Final = 50  # the running loss is the mean of the last 50 steps


class Progress:
    """One long step: a bar on a terminal (`transient`: removed when done), else one log line
    at the end (when `summary`).

    `unit` counts what `update(n)` advances (batches, bytes, chunks); `samples` and `loss`
    given to `update` feed the summary and the bar's postfix.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        *,
        unit: str = "batch",
        enabled: bool = True,
        transient: bool = False,
        summary: bool = True,
        unit_scale: bool = False,
    ) -> None:
        self.desc = desc
        self.unit = unit
        self.summary = summary
        self.n = 0
        self.samples = 0
        self.losses: deque[float] = deque(maxlen=_LOSS_WINDOW)
        self.began = time.perf_counter()
        self._bar: tqdm[Any] | None = None
        if bars_wanted(enabled):
            self._bar = tqdm(
                total=total, desc=desc, unit=unit, leave=not transient, unit_scale=unit_scale
            )

    @property
    def running_loss(self) -> float | None:
        """Mean loss of the last steps, or None before the first."""
        return sum(self.losses) / len(self.losses) if self.losses else None

    def update(
        self, n: int = 1, *, samples: int = 0, loss: float | None = None, **post: Any
    ) -> None:
        """Advance by `n` units; `samples` and `loss` of the step, extra postfix fields."""
        self.n += n
        self.samples += samples
        if loss is not None:
            self.losses.append(loss)
        if self._bar is None:
            return
        if loss is not None or post:
            shown = {"loss": f"{self.running_loss:.4f}"} if self.losses else {}
            self._bar.set_postfix(shown | post, refresh=False)
        self._bar.update(n)

    def finish_early(self) -> None:
        """Fill the bar (early stopping ended the step before its planned total)."""
        if self._bar is not None and self._bar.total is not None:
            self._bar.update(self._bar.total - self._bar.n)

    def close(self) -> None:
        """Close the bar; without one, log the step's summary line."""
        wall = time.perf_counter() - self.began
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        if not self.summary:
            return
        parts = [f"{self.n:,} {self.unit}"]
        if self.samples:
            parts.append(f"{self.samples:,} samples")
        if self.losses:
            parts.append(f"loss {self.running_loss:.4f}")
        log.info("%s: %s, %.1f s", self.desc, ", ".join(parts), wall)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif self._bar is not None:
            self._bar.close()
