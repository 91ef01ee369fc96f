"""Where each worker process spends its time: py-spy, sampled while a load runs.

`Sampler.start()` runs one `py-spy record` per worker process (raw folded stacks of every
thread, idle samples included, `--nonblocking` so the worker is never paused); `stop()` ends
them (SIGINT: py-spy writes its file) and reads each file (`summarize`) into how busy each kind
of thread was and what the busy samples were doing (`part_of`: the innermost frame that
belongs to a known part decides). Wall-clock shares: a thread that waits for a core or for the
interpreter lock is sampled in the frame it waits in, so busy threads beside the process's CPU
(the `CpuMeter` figures) tell waiting for a core or the lock apart from work. py-spy's own CPU
is measured too (it shares the cores it watches).

py-spy is a dev dependency; it needs to read the worker's memory (root, or ptrace allowed).
"""

from __future__ import annotations

import gzip
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from riskstream.bench.pipeline.exceptions import PipelineBenchError

__all__ = ["PARTS", "ROLES", "Sampler", "part_of", "summarize"]

#: The parts a sample is charged to, in the order reports show them.
PARTS: Final = (
    "idle", "transport", "asyncio", "processing", "events/", "redis", "model", "other",
)  # fmt: skip
#: A worker's threads by role: its event loop (Faust's stream path), Faust's consumer thread
#: (aiokafka's fetches, on a loop of its own), the batch threads (`asyncio.to_thread`: parse,
#: Redis, the model) and the rest (the metrics server).
ROLES: Final = ("event loop", "consumer", "batch", "other")

# Top-level module → part; what is not here is looked up in the caller's frame, and so on out.
_MODULES: Final = {
    "onnxruntime": "model",
    "redis": "redis",
    "events": "events/",  # parsing, encoding, window aggregates, model inputs
    "stream": "processing",
    "export": "processing",
    "faust": "transport",
    "mode": "transport",
    "aiokafka": "transport",
    "kafka": "transport",
    "asyncio": "asyncio",
}
# The innermost frame of a thread that waits: for I/O or a timer, or for work in a pool's queue
# (a pool thread at work is deeper, in its work item's frames).
_WAITING: Final = re.compile(
    r"^\S*select \(selectors\.py|^_worker \(concurrent/futures/thread\.py:"
    r"|\((threading|queue)\.py:"
)
_FRAME: Final = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")
_LIB: Final = re.compile(r"^.*/lib/python3\.\d+/")
_ROOT: Final = str(Path(__file__).resolve().parents[3]) + "/"
_RATE_HZ: Final = 50  # ~1,000 samples a 20 s level: shares to ±2 %, at a few % of a core
_MIN_SPAN_S: Final = 1.0  # py-spy needs a moment to attach before its first sample


def _module(frame: str) -> str:
    """The top-level module of a py-spy frame `func (path:line)`.

    >>> _module("Consumer.getmany (aiokafka/consumer/consumer.py:1169)")
    'aiokafka'
    >>> _module("EpollSelector.select (selectors.py:468)")
    'selectors'
    >>> _module("f (/x/.venv/lib/python3.11/site-packages/redis/asyncio/client.py:9)")
    'redis'
    """
    match = _FRAME.match(frame)
    path = match["path"] if match else frame
    for marker in ("site-packages/", "dist-packages/"):
        path = path.rsplit(marker, 1)[-1]
    path = path.removeprefix(_ROOT)
    path = _LIB.sub("", path)
    return path.split("/", 1)[0].removesuffix(".py")


def part_of(frames: list[str]) -> str:
    """The part one sample (its frames, outermost first) is charged to.

    >>> part_of(["run (asyncio/base_events.py:1)", "EpollSelector.select (selectors.py:468)"])
    'idle'
    >>> part_of(["run (threading.py:982)", "_worker (concurrent/futures/thread.py:81)"])
    'idle'
    >>> part_of(["a (faust/streams.py:1)", "p (stream/processor.py:2)", "loads (json/x.py:3)"])
    'processing'
    >>> part_of(["p (stream/processor.py:2)", "run (onnxruntime/capi/session.py:9)"])
    'model'
    >>> part_of(["<module> (spin.py:1)"])
    'other'
    """
    if frames and _WAITING.search(frames[-1]):
        return "idle"
    for frame in reversed(frames):
        part = _MODULES.get(_module(frame))
        if part is not None:
            return part
    return "other"


def _role(name: str, frames: list[str]) -> str:
    if name == "MainThread":
        return "event loop"
    if name.startswith("asyncio_"):
        return "batch"
    if any("(mode/threads.py" in f for f in frames):
        return "consumer"
    return "other"


def summarize(folded: str) -> dict[str, Any]:
    """One process's py-spy raw output (`--idle --threads`) as shares of wall time: how busy
    each role's threads were (`busy`), the busy samples by part (`parts`), and the innermost
    frames with the most busy samples (`top`). Every tick samples the main thread, so its
    samples count the ticks; a share of 1.0 is one thread busy for the whole span.

    >>> text = '''thread (1): MainThread;a (faust/streams.py:1);E.select (selectors.py:4) 30
    ... thread (1): MainThread;a (faust/streams.py:1);b (faust/events.py:2) 70
    ... thread (2): asyncio_0;p (stream/processor.py:1);s (onnxruntime/x.py:3) 40
    ... thread (2): asyncio_0;_worker (concurrent/futures/thread.py:81) 60'''
    >>> s = summarize(text)
    >>> s["ticks"], s["busy"]["event loop"], s["busy"]["batch"]
    (100, 0.7, 0.4)
    >>> s["parts"]["transport"], s["parts"]["model"]
    (0.7, 0.4)
    >>> s["top"][0]
    ['b (faust/events.py:2)', 'transport', 0.7]
    """
    busy: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    leaves: Counter[tuple[str, str]] = Counter()
    ticks = 0
    for line in folded.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, _, rest = stack.partition(";")
        name = head.partition(": ")[2]
        frames = rest.split(";") if rest else []
        n = int(count)
        if name == "MainThread":
            ticks += n
        part = part_of(frames)
        if part == "idle":
            continue
        busy[_role(name, frames)] += n
        parts[part] += n
        if frames:
            leaves[(frames[-1], part)] += n
    scale = 1 / ticks if ticks else 0.0
    return {
        "ticks": ticks,
        "busy": {r: round(busy[r] * scale, 4) for r in ROLES},
        "parts": {p: round(parts[p] * scale, 4) for p in PARTS if p != "idle"},
        "top": [[f, p, round(n * scale, 4)] for (f, p), n in leaves.most_common(8)],
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Sampler:
    """py-spy on each of `pids` ({name: pid}) from `start()` to `stop()`; files under `out`,
    named `{label}-{name}.folded.gz` (py-spy's raw folded stacks, gzipped)."""

    def __init__(self, pids: dict[str, int], out: Path, label: str, rate_hz: int = _RATE_HZ):
        self.pids = pids
        self.out = out
        self.label = label
        self.rate_hz = rate_hz
        self._procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self._began = (0.0, 0.0)  # monotonic time, children's CPU seconds

    def start(self) -> Sampler:
        beside = Path(sys.executable).parent / "py-spy"  # the venv's, when not on PATH
        binary = str(beside) if beside.exists() else shutil.which("py-spy")
        if binary is None:
            raise PipelineBenchError("--profile needs py-spy: pip install -e '.[dev]'")
        self.out.mkdir(parents=True, exist_ok=True)
        self._began = (time.monotonic(), _children_cpu_s())
        for name, pid in self.pids.items():
            path = self.out / f"{self.label}-{name.replace(' ', '')}.folded"
            cmd = [binary, "record", "--pid", str(pid), "--rate", str(self.rate_hz),
                   "--format", "raw", "--idle", "--threads", "--nonblocking",
                   "--output", str(path)]  # fmt: skip
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self._procs[name] = (proc, path)
        return self

    def stop(self) -> dict[str, Any]:
        """Each process's summary (`summarize`), its file, and py-spy's own cores."""
        result: dict[str, Any] = {"processes": {}}
        time.sleep(max(0.0, self._began[0] + _MIN_SPAN_S - time.monotonic()))
        for name, (proc, path) in self._procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if not path.exists():
                raise PipelineBenchError(
                    f"py-spy wrote no profile of {name} ({path.name}): "
                    f"{err.decode(errors='replace').strip()[-300:]}"
                )
            text = path.read_text(encoding="utf-8")
            kept = path.with_name(path.name + ".gz")  # ~10× smaller; `zcat` it for a flame graph
            kept.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
            path.unlink()
            result["processes"][name] = {**summarize(text), "file": kept.name}
        wall = max(time.monotonic() - self._began[0], 1e-6)
        result["py_spy_cores"] = round((_children_cpu_s() - self._began[1]) / wall, 3)
        self._procs.clear()
        return result
