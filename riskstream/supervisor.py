"""`riskstream worker`: worker processes in one consumer group on one host, kept running.

One Python worker is bound by its interpreter lock at about one core; N processes use N. Each
child is the plain worker, with its own metrics port (`metrics_port + i`, or none when the port
is 0). The supervisor runs with one process too: it is what restarts a worker that ended itself
(a stalled partition, exit 76; a failed batch, exit 70) or died. It forwards SIGTERM/SIGINT to
every child and waits for them (each commits and leaves the group cleanly), restarts a child
that ends (backing off, 1 s doubling to 30 s, while it keeps ending; a child that ran a minute
starts over at 1 s), tells each new child its slot's restarts and why the previous one ended
(`worker_restarts_total`, `worker_last_exit_info` and /health), and gives up, with the child's
exit code, when a child fails at start-up before it ever ran (a bad setting would fail the same
way forever). A child dies with SIGTERM when the supervisor dies (Linux).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

from stream.app import EXIT_REASONS
from stream.settings import ENV_PREFIX

__all__ = ["Child", "Supervisor", "default_processes", "describe_exit"]

log = logging.getLogger(__name__)

#: A child that exits within this many seconds of its first start never ran: do not restart it.
STARTUP_FAILURE_S: Final = 5.0
_FIRST_BACKOFF_S: Final = 1.0
_MAX_BACKOFF_S: Final = 30.0
_STOP_GRACE_S: Final = 30.0


def describe_exit(code: int) -> str:
    """Why a child ended, from its exit code (the worker's own codes by name).

    >>> describe_exit(76), describe_exit(-9), describe_exit(1)
    ('stalled (exit 76)', 'killed by SIGKILL', 'exit 1')
    """
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    name = EXIT_REASONS.get(code)
    return f"{name} (exit {code})" if name else f"exit {code}"


def _die_with_parent() -> Callable[[], None] | None:
    """What a child runs before it starts (Linux): SIGTERM when the supervisor dies, so that a
    supervisor killed outright leaves no worker behind (the child commits and leaves the group).
    Built here, in the parent: nothing is imported between fork and exec."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
    last_reason: str = ""  # why the previous process ended (`describe_exit`)


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
        self._preexec = _die_with_parent()
        self.restarts = 0

    def _start(self, child: Child) -> None:
        env = self._env(child.index)
        if child.starts:  # what the new process reports: this slot's restarts and the last why
            env = {**env, f"{ENV_PREFIX}RESTARTS": str(child.starts),
                   f"{ENV_PREFIX}RESTART_REASON": child.last_reason}  # fmt: skip
        child.process = subprocess.Popen(
            list(self._command(child.index)), env=env, preexec_fn=self._preexec
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
                    child.last_reason = describe_exit(code)
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
                    log.warning("worker %d ended after %.1f s: %s; restarting it in %.1f s",
                                child.index, ran_s, child.last_reason,
                                child.backoff_s)  # fmt: skip
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
