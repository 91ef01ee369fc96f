"""Processes that outlive the command that started them, and how to recognise them later.

`riskstream.localstack` runs its services as children that die with their owner (a test
session). Here they must keep running after the CLI exits, so each binary is started through
a short-lived launcher process in a session (and process group) of its own: it is not our
child, a Ctrl-C in the terminal does not reach it, and the launcher's exit reparents it to
init.

A pid alone is not an identity (pids are reused): a recorded process counts as ours only while
its executable is the binary we started and, on Linux, its start time (`/proc/<pid>/stat`) is
the one recorded. Anything else is treated as gone and is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Final

from riskstream.dev.exceptions import DevStackError
from riskstream.localstack.broker import port_is_bindable
from riskstream.stackstate import ServiceRecord, proc_stat, process_matches

__all__ = [
    "HOST",
    "accepts_tcp",
    "pick_port",
    "proc_stat",
    "process_matches",
    "spawn_detached",
    "stop_process",
]

log = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
_PORT_SCAN: Final = 100  # ports tried upward from the wanted one

# Runs `argv` in a new session with output appended to a log file, prints its pid and exits:
# the service is then nobody's child (reparented to init), so neither the CLI's exit, nor a
# Ctrl-C in its terminal, nor the interpreter-exit reapers of subprocess users touch it.
_LAUNCHER: Final = """\
import subprocess, sys
log, cwd, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(log, "ab") as out:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
print(proc.pid)
"""


def spawn_detached(argv: list[str], log_path: Path, cwd: Path, env: Mapping[str, str]) -> int:
    """Start `argv` detached (own session), output appended to `log_path`; its pid."""
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(log_path), str(cwd), *argv],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevStackError(f"could not launch {argv[0]}: {exc}") from None
    out = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or not out.isdigit():
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise DevStackError(f"could not run {argv[0]}: {lines[-1] if lines else out}")
    return int(out)


def stop_process(
    record: ServiceRecord, timeout_s: float, sig: signal.Signals = signal.SIGTERM
) -> str:
    """`sig` (SIGTERM), then SIGKILL after `timeout_s`; only when the pid is still the one we
    started.

    Returns what happened: "stopped", "killed" or "not running".
    """
    if record.pid is None or not process_matches(record):
        return "not running"
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, sig)
    if _wait_gone(record, timeout_s):
        return "stopped"
    log.warning("%s pid %d ignored SIGTERM for %.1f s; killing", record.kind, record.pid, timeout_s)
    if process_matches(record):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
    if not _wait_gone(record, 5.0):
        raise DevStackError(f"{record.kind} pid {record.pid} survived SIGKILL")
    return "killed"


def _wait_gone(record: ServiceRecord, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_matches(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def pick_port(start: int, avoid: Collection[int] = ()) -> int:
    """The first port from `start` up that nothing listens on."""
    for port in range(start, min(start + _PORT_SCAN, 65536)):
        if port not in avoid and port_is_bindable(HOST, port):
            return port
    raise DevStackError(f"no free port on {HOST} in {start}..{start + _PORT_SCAN - 1}")


def accepts_tcp(host: str | None, port: int | None, timeout_s: float = 0.5) -> bool:
    """True when a TCP connection to `host:port` succeeds within `timeout_s`."""
    if host is None or port is None:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
