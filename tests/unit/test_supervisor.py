"""`riskstream worker --processes N`'s supervisor, with real child processes (small Python
scripts standing in for workers: the worker itself is tested on the real broker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from riskstream.supervisor import (
    STARTUP_FAILURE_S,
    Supervisor,
    default_processes,
    describe_exit,
)

# A stand-in worker: writes its pid and index, exits 0 on SIGTERM; dies when told to by a file.
_CHILD = """
import os, signal, sys, time
from pathlib import Path
here, index = Path(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
(here / f"pid-{index}-{os.getpid()}").write_text(os.environ.get("RISKSTREAM_METRICS_PORT", ""))
(here / f"env-{index}-{os.getpid()}").write_text(
    os.environ.get("RISKSTREAM_RESTARTS", "-") + "|"
    + os.environ.get("RISKSTREAM_RESTART_REASON", "-")
)
while True:
    if (here / f"die-{index}").exists():
        (here / f"die-{index}").unlink()
        sys.exit(3)
    time.sleep(0.05)
"""


def _pids(folder: Path, index: int) -> list[int]:
    return sorted(int(p.name.split("-")[2]) for p in folder.glob(f"pid-{index}-*"))


def _wait(cond: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes: its parent has not reaped it yet
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def _supervisor(tmp_path: Path, processes: int) -> Supervisor:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    return Supervisor(
        processes,
        lambda i: [sys.executable, str(script), str(tmp_path), str(i)],
        lambda i: {**os.environ, "RISKSTREAM_METRICS_PORT": str(9000 + i)},
        poll_s=0.05,
    )


def test_children_run_restart_when_they_die_and_stop_on_sigterm(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path, 2)
    result: list[int] = []

    # run() installs signal handlers, which only the main thread may: it runs here, and a
    # helper thread plays the operator.
    def drive() -> None:
        _wait(lambda: _pids(tmp_path, 0) and _pids(tmp_path, 1))
        first = _pids(tmp_path, 1)[0]
        time.sleep(STARTUP_FAILURE_S + 0.5)  # past start-up: a death now is a crash, restarted
        (tmp_path / "die-1").write_text("")
        _wait(lambda: len(_pids(tmp_path, 1)) == 2)
        assert not _alive(first)
        os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=drive)
    t.start()
    result.append(sup.run())
    t.join()
    assert result == [0]
    assert sup.restarts == 1
    assert sup.children[1].exit_codes[0] == 3
    # the restarted child was told its slot's restarts and why the one before it ended
    first, second = _pids(tmp_path, 1)
    assert (tmp_path / f"env-1-{first}").read_text() == "-|-"
    assert (tmp_path / f"env-1-{second}").read_text() == "1|exit 3"
    # each child had its own metrics port, and none is left running
    ports = {p.read_text() for p in tmp_path.glob("pid-*")}
    assert ports == {"9000", "9001"}
    assert not any(_alive(int(p.name.split("-")[2])) for p in tmp_path.glob("pid-*"))


def test_a_child_failing_at_start_up_ends_the_supervisor_with_its_code(tmp_path: Path) -> None:
    sup = Supervisor(
        2,
        lambda i: [sys.executable, "-c", f"import sys, time; time.sleep({i}); sys.exit(2)"],
        lambda _i: dict(os.environ),
        poll_s=0.05,
    )
    assert sup.run() == 2
    assert sup.restarts == 0
    assert all(c.process is None for c in sup.children)


def test_processes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="processes"):
        Supervisor(0, lambda _i: ["true"], lambda _i: {})
    assert default_processes() >= 1


def test_the_worker_command_refuses_a_bad_setting_once_with_several_processes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "riskstream", "worker", "--processes", "2", "--batch-max", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RISKSTREAM_BUNDLE": "/nonexistent"},
    )
    assert proc.returncode == 1
    assert proc.stderr.count("error:") == 1
    assert "RISKSTREAM_BATCH_MAX" in proc.stderr


def test_exit_codes_are_named() -> None:
    assert describe_exit(76) == "stalled (exit 76)"
    assert describe_exit(70) == "batch failed (exit 70)"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def test_children_die_with_a_supervisor_killed_outright(tmp_path: Path) -> None:
    """SIGKILL to the supervisor (no forwarding possible): its children get SIGTERM from the
    kernel (PR_SET_PDEATHSIG) instead of staying in the group."""
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    runner = tmp_path / "run.py"
    runner.write_text(
        "import os, sys\n"
        "from riskstream.supervisor import Supervisor\n"
        f"Supervisor(2, lambda i: [sys.executable, {str(script)!r}, {str(tmp_path)!r}, str(i)],"
        " lambda i: dict(os.environ), poll_s=0.05).run()\n"
    )
    sup = subprocess.Popen([sys.executable, str(runner)], cwd=Path(__file__).parents[2])
    try:
        _wait(lambda: _pids(tmp_path, 0) and _pids(tmp_path, 1))
        children = _pids(tmp_path, 0) + _pids(tmp_path, 1)
        sup.kill()
        sup.wait(timeout=10)
        _wait(lambda: not any(_alive(pid) for pid in children), timeout_s=10)
    finally:
        if sup.poll() is None:
            sup.kill()


@pytest.mark.parametrize(
    ("args", "env", "code", "named"),
    [
        (["--stall-exit-s", "-1"], {}, 2, "--stall-exit-s"),
        ([], {"RISKSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "5"}, 1, "HEARTBEAT_INTERVAL_S"),
    ],
    ids=["negative-stall-exit", "heartbeat-over-a-third-of-the-session"],
)
def test_bad_watchdog_and_group_settings_get_one_line(
    args: list[str], env: dict[str, str], code: int, named: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "riskstream", "worker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RISKSTREAM_BUNDLE": "/nonexistent", **env},
    )
    assert proc.returncode == code
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: ")
    assert named in proc.stderr
