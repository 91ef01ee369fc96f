"""`riskstream worker --processes N`: N worker processes in one consumer group on one host.

One Python worker is bound by its interpreter lock at about one core; N processes use N. Each
child is the ordinary single-process worker (`--processes 1`), with its own metrics port
(`metrics_port + i`, or none when the port is 0). The supervisor forwards SIGTERM/SIGINT to
every child and waits for them (each commits and leaves the group cleanly), restarts a child
that dies (backing off while it keeps dying), and gives up, with the child's exit code, when a
child fails at start-up before it ever ran (a bad setting would fail the same way forever).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

__all__ = ["Child", "Supervisor", "default_processes"]

log = logging.getLogger(__name__)

#: A child that exits within this many seconds of its first start never ran: do not restart it.
STARTUP_FAILURE_S: Final = 5.0
_FIRST_BACKOFF_S: Final = 1.0
_MAX_BACKOFF_S: Final = 30.0
_STOP_GRACE_S: Final = 30.0


def default_processes() -> int:
    """The host's usable cores (the process's CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class Child:
    """One worker process slot: its number, the running process, and its restart history."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    backoff_s: float = _FIRST_BACKOFF_S
    restart_at: float | None = None
    exit_codes: list[int] = field(default_factory=list)


class Supervisor:
    """Starts `processes` children with `command(i)` and `env(i)`, keeps them running."""

    def __init__(
        self,
        processes: int,
        command: Callable[[int], Sequence[str]],
        env: Callable[[int], dict[str, str]],
        *,
        poll_s: float = 0.2,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes: {processes}; at least 1")
        self.children = [Child(i) for i in range(processes)]
        self._command = command
        self._env = env
        self._poll_s = poll_s
        self._stopping = False
        self.restarts = 0

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            list(self._command(child.index)), env=self._env(child.index)
        )
        child.started_at = time.monotonic()
        child.starts += 1
        child.restart_at = None
        log.info("worker %d started (pid %d)", child.index, child.process.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.children))
        self._stopping = True

    def run(self) -> int:
        """Run until a stop signal (then 0, or the first non-zero code a child stopped with),
        or until a child fails at start-up (then its exit code)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._start(child)
            failed = self._watch()
            return self._stop_all() if failed is None else failed
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _watch(self) -> int | None:
        while not self._stopping:
            now = time.monotonic()
            for child in self.children:
                code = None if child.process is None else child.process.poll()
                if child.process is not None and code is not None:
                    child.exit_codes.append(code)
                    child.process = None
                    ran_s = now - child.started_at
                    if child.starts == 1 and ran_s < STARTUP_FAILURE_S and code != 0:
                        log.error("worker %d failed at start-up (exit %d): not restarting it",
                                  child.index, code)  # fmt: skip
                        self._stopping = True
                        self._stop_all()
                        return code
                    if ran_s > 2 * _MAX_BACKOFF_S:  # it had been running well: start over
                        child.backoff_s = _FIRST_BACKOFF_S
                    child.restart_at = now + child.backoff_s
                    log.warning("worker %d exited with %d after %.1f s; restarting in %.1f s",
                                child.index, code, ran_s, child.backoff_s)  # fmt: skip
                    child.backoff_s = min(child.backoff_s * 2, _MAX_BACKOFF_S)
                if (
                    child.process is None
                    and child.restart_at is not None
                    and now >= child.restart_at
                ):
                    self._start(child)
                    self.restarts += 1
            time.sleep(self._poll_s)
        return None

    def _stop_all(self) -> int:
        running = [c for c in self.children if c.process is not None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        codes = []
        for child in running:
            assert child.process is not None
            try:
                codes.append(child.process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop within %.0f s: killing it", child.index,
                          _STOP_GRACE_S)  # fmt: skip
                child.process.kill()
                codes.append(child.process.wait())
            child.process = None
        bad = [c for c in codes if c not in (0, -signal.SIGTERM)]
        return bad[0] if bad else 0


def worker_command(args: Sequence[str]) -> Callable[[int], list[str]]:
    """The child's command line: this interpreter, the same worker options, one process."""
    return lambda _i: [sys.executable, "-m", "riskstream", "worker", *args, "--processes", "1"]
