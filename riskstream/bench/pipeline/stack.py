"""The pipeline benchmark's stack: one broker, one Redis, topics per run, worker processes."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from riskstream.bench.pipeline.affinity import inherited
from riskstream.bench.pipeline.exceptions import PipelineBenchError
from riskstream.localstack import (
    RedisService,
    TansuBroker,
    create_topics,
    find_free_ports,
)
from riskstream.localstack.broker import read_log_tail
from stream.prometheus import metric_total, scrape

__all__ = ["BenchStack", "Topics", "WorkerProcess"]

_READY_TIMEOUT_S: Final = 90.0
_SESSION_TIMEOUT_S: Final = "6"  # group joins in seconds, not the 30 s default


@dataclass(frozen=True)
class Topics:
    """One run's topics and Redis prefix: runs never see each other's messages or windows."""

    events: str
    alerts: str
    dlq: str
    scores: str
    group: str
    redis_prefix: str


class WorkerProcess:
    """The worker subprocess(es) of one run and their `/metrics` ports.

    `riskstream worker --processes N` is one supervisor with N children on ports `port + i`;
    the transport-only worker is N separate processes. Figures are summed over the ports.
    """

    def __init__(self, procs: list[subprocess.Popen[bytes]], ports: list[int], log: Path) -> None:
        self.procs = procs
        self.ports = ports
        self.log = log

    @property
    def port(self) -> int:
        """The first process's port."""
        return self.ports[0]

    def metrics(self) -> str:
        """Every process's `/metrics` text, one after the other ("" for one not serving yet)."""
        texts = []
        for port in self.ports:
            try:
                texts.append(scrape(port))
            except OSError:
                texts.append("")
        return "\n".join(texts)

    def events_done(self) -> float:
        """Messages its processes have finished (their `events_total` counters)."""
        return metric_total(self.metrics(), "events_total")

    def worker_pids(self) -> list[int]:
        """The processes that do the work (a supervisor's children, not the supervisor)."""
        try:
            import psutil  # type: ignore[import-untyped]
        except ImportError:
            return [proc.pid for proc in self.procs]
        pids: list[int] = []
        for proc in self.procs:
            children = psutil.Process(proc.pid).children()
            pids += [c.pid for c in children] if children else [proc.pid]
        return pids

    def check_alive(self) -> None:
        """Raise with the log's tail if a process ended."""
        for proc in self.procs:
            if proc.poll() is not None:
                raise PipelineBenchError(
                    f"worker exited with {proc.returncode}; log {self.log}:\n"
                    f"{read_log_tail(self.log, 3000)}"
                )

    def wait_ready(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Until every process's `/health` says ready (model loaded, metrics served)."""
        deadline = time.monotonic() + timeout_s
        waiting = list(self.ports)
        while waiting and time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{waiting[0]}/health", timeout=1):
                    waiting.pop(0)
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.2)
        if waiting:
            raise PipelineBenchError(f"worker not ready after {timeout_s:.0f} s; log {self.log}")

    def wait_done(self, count: int, timeout_s: float) -> float:
        """Until `events_total` ≥ `count`; returns the monotonic time it got there."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.events_done() >= count:
                return time.monotonic()
            self.check_alive()
            time.sleep(0.1)  # each scrape costs the worker: poll gently
        raise PipelineBenchError(
            f"worker finished {self.events_done():,.0f} of {count:,} events in {timeout_s:.0f} s"
        )

    def stop(self) -> None:
        """SIGTERM (each finishes its batch), then SIGKILL if one hangs."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


class BenchStack:
    """A Tansu broker and a Redis (`redis_url`, else an embedded Valkey) under `workdir`."""

    def __init__(self, workdir: Path, redis_url: str | None = None) -> None:
        self.workdir = workdir
        self.broker = TansuBroker(log_path=workdir / "tansu.log")
        self.redis = RedisService(redis_url, use_env=redis_url is not None)
        self._runs = itertools.count(1)
        self._workers: list[WorkerProcess] = []

    def __enter__(self) -> BenchStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker.start(timeout_s=30.0)
        self.redis.start(timeout_s=15.0)
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self._workers:
            worker.stop()
        self.redis.stop()
        self.broker.stop()

    def topics(self, partitions: int) -> Topics:
        """Fresh topics (events with `partitions`), group and Redis prefix for one run."""
        run = f"bench{next(self._runs)}x{os.getpid()}"
        made = Topics(f"{run}.events", f"{run}.alerts", f"{run}.dlq", f"{run}.scores",
                      f"{run}-group", f"rsb:{run}:")  # fmt: skip
        create_topics(
            self.broker.bootstrap,
            {made.events: partitions, made.alerts: 4, made.dlq: 1, made.scores: 4},
            timeout_s=30.0,
        )
        return made

    def start_worker(
        self,
        bundle: Path,
        topics: Topics,
        *,
        transport_only: bool = False,
        processes: int = 1,
        cpus: tuple[int, ...] | None = None,
        **settings: Any,
    ) -> WorkerProcess:
        """A worker of `processes` processes on `topics`; `settings` are WorkerSettings fields
        (e.g. batch_max=256). `cpus`: the cores its processes start on (isolated mode), so the
        supervisor and ONNX Runtime size their threads to them."""
        ports = find_free_ports(processes)
        env = {
            **os.environ,
            "RISKSTREAM_BROKER_URL": self.broker.url,
            "RISKSTREAM_REDIS_URL": self.redis.url,
            "RISKSTREAM_EVENTS_TOPIC": topics.events,
            "RISKSTREAM_ALERTS_TOPIC": topics.alerts,
            "RISKSTREAM_DLQ_TOPIC": topics.dlq,
            "RISKSTREAM_SCORES_TOPIC": topics.scores,
            "RISKSTREAM_CONSUMER_GROUP": topics.group,
            "RISKSTREAM_REDIS_PREFIX": topics.redis_prefix,
            "RISKSTREAM_BUNDLE": str(bundle),
            "RISKSTREAM_METRICS_PORT": str(ports[0]),
            "RISKSTREAM_BROKER_SESSION_TIMEOUT_S": _SESSION_TIMEOUT_S,
            "RISKSTREAM_FAUST_DATADIR": str(self.workdir / f"faust-{topics.group}"),
            **{f"RISKSTREAM_{k.upper()}": str(v) for k, v in settings.items() if v is not None},
        }
        log = self.workdir / f"worker-{topics.group}.log"
        procs: list[subprocess.Popen[bytes]] = []
        with log.open("wb") as sink, inherited(cpus):
            if transport_only:  # N plain processes, one port each
                module = "riskstream.bench.pipeline.null_worker"
                argv = [sys.executable, "-m", module, "worker", "--without-web", "-l", "warn"]
                datadir = env["RISKSTREAM_FAUST_DATADIR"]
                for i, port in enumerate(ports):
                    own = {**env, "RISKSTREAM_METRICS_PORT": str(port),
                           "RISKSTREAM_FAUST_DATADIR": f"{datadir}-{i}"}  # fmt: skip
                    procs.append(subprocess.Popen(argv, env=own, stdin=subprocess.DEVNULL,
                                                  stdout=sink,
                                                  stderr=subprocess.STDOUT))  # fmt: skip
            else:  # the real command: a supervisor with N children on ports[0] + i
                argv = [sys.executable, "-m", "riskstream", "worker", "--processes",
                        str(processes), "--log-level", "warn"]  # fmt: skip
                procs.append(subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                              stdout=sink, stderr=subprocess.STDOUT))  # fmt: skip
        worker = WorkerProcess(procs, ports, log)
        self._workers.append(worker)
        worker.wait_ready()
        return worker

    def service_pids(self) -> dict[str, int]:
        """The broker's and Redis's processes (Redis: as it reports itself; only when local)."""
        pids: dict[str, int] = {}
        if self.broker.pid is not None:
            pids["broker"] = self.broker.pid
        try:
            client = self.redis.client()
            pid = int(client.info("server")["process_id"])
            client.close()
        except Exception:  # an external Redis may refuse INFO: not counted then
            return pids
        if self.redis.is_embedded or _is_local(pid):
            pids["redis"] = pid
        return pids


def _is_local(pid: int) -> bool:
    try:
        import psutil
    except ImportError:
        return False
    try:
        return "redis" in psutil.Process(pid).name() or "valkey" in psutil.Process(pid).name()
    except psutil.Error:
        return False
