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

from riskstream.bench.pipeline.exceptions import PipelineBenchError
from riskstream.localstack import RedisService, TansuBroker, create_topics, find_free_port
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
    """A worker subprocess and its `/metrics` port."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    def metrics(self) -> str:
        """Its `/metrics` text ("" while it is not serving yet)."""
        try:
            return scrape(self.port)
        except OSError:
            return ""

    def events_done(self) -> float:
        """Messages it has finished (the `events_total` counter)."""
        return metric_total(self.metrics(), "events_total")

    def check_alive(self) -> None:
        """Raise with the log's tail if the process ended."""
        if self.proc.poll() is not None:
            raise PipelineBenchError(
                f"worker exited with {self.proc.returncode}; log {self.log}:\n"
                f"{read_log_tail(self.log, 3000)}"
            )

    def wait_ready(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Until `/health` says ready (model loaded, metrics served)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.2)
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
        """SIGTERM (it finishes its batch), then SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


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
        self, bundle: Path, topics: Topics, *, transport_only: bool = False, **settings: Any
    ) -> WorkerProcess:
        """A worker on `topics`; `settings` are WorkerSettings fields (e.g. batch_max=256)."""
        port = find_free_port()
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
            "RISKSTREAM_METRICS_PORT": str(port),
            "RISKSTREAM_BROKER_SESSION_TIMEOUT_S": _SESSION_TIMEOUT_S,
            "RISKSTREAM_FAUST_DATADIR": str(self.workdir / f"faust-{topics.group}"),
            **{f"RISKSTREAM_{k.upper()}": str(v) for k, v in settings.items() if v is not None},
        }
        if transport_only:
            module = "riskstream.bench.pipeline.null_worker"
            argv = [sys.executable, "-m", module, "worker", "--without-web", "-l", "warn"]
        else:
            argv = [
                sys.executable,
                "-m",
                "riskstream",
                "worker",
                "--processes",
                "1",
                "--log-level",
                "warn",
            ]
        log = self.workdir / f"worker-{topics.group}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(proc, port, log)
        self._workers.append(worker)
        worker.wait_ready()
        return worker
