"""The transport-only ceiling on Faust's confluent-kafka driver vs its aiokafka one, on Tansu.

    riskstream bench confluent-transport --events E.jsonl [--limit N]

Starts a Tansu broker and a Valkey, fills an 8-partition topic with N events, then runs the
benchmark's transport-only worker (`riskstream.bench.pipeline.null_worker`: the real app,
batching and acks, a runtime that does nothing) once per driver and reports the drain rate, or
the failure with the tail of the worker's log. The confluent run swaps the app's transport for
`faust.transport.drivers.confluent` (the worker itself always uses aiokafka: stream/transport.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from riskstream.bench.pipeline import load
from riskstream.bench.pipeline.ceilings import BenchEvents
from riskstream.bench.pipeline.exceptions import PipelineBenchError
from riskstream.bench.pipeline.stack import BenchStack, WorkerProcess
from riskstream.localstack import find_free_port

_CONFLUENT_WORKER = """
import stream.transport as st
from faust.transport.drivers import confluent
st.worker_transport = lambda app, _ms: confluent.Transport(app.conf.broker_consumer, app)
from riskstream.bench.pipeline.null_worker import main
main()
"""


def _run(stack: BenchStack, data: BenchEvents, driver: str, tmp: Path, wait_s: float) -> str:
    topics = stack.topics(8)
    load.produce(stack.broker.bootstrap, topics.events, data.lines, data.keys)
    port = find_free_port()
    scheme = "confluent" if driver == "confluent" else "kafka"
    env = {**os.environ, "RISKSTREAM_BROKER_URL": stack.broker.url.replace("kafka", scheme, 1),
           "RISKSTREAM_REDIS_URL": stack.redis.url, "RISKSTREAM_EVENTS_TOPIC": topics.events,
           "RISKSTREAM_ALERTS_TOPIC": topics.alerts, "RISKSTREAM_DLQ_TOPIC": topics.dlq,
           "RISKSTREAM_SCORES_TOPIC": topics.scores, "RISKSTREAM_CONSUMER_GROUP": topics.group,
           "RISKSTREAM_METRICS_PORT": str(port), "RISKSTREAM_BROKER_SESSION_TIMEOUT_S": "6",
           "RISKSTREAM_FAUST_DATADIR": str(tmp / f"faust-{driver}")}  # fmt: skip
    head = ["-c", _CONFLUENT_WORKER] if driver == "confluent" else [
        "-m", "riskstream.bench.pipeline.null_worker"]  # fmt: skip
    argv = [sys.executable, *head, "worker", "--without-web", "-l", "info"]
    log = tmp / f"{driver}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    worker = WorkerProcess([proc], [port], log)
    try:
        worker.wait_ready(60)
        drained = load.drain_backlog(worker, len(data.lines), timeout_s=wait_s)
        return f"{drained.events_per_s:,.0f} events/s (mean batch {drained.mean_batch:.0f})"
    except PipelineBenchError as exc:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return f"failed: {exc}; last log lines: " + " | ".join(tail[-3:])
    finally:
        worker.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="riskstream bench confluent-transport", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=30_000)
    parser.add_argument("--wait-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    data = BenchEvents.load(args.events, limit=args.limit)
    with tempfile.TemporaryDirectory() as tmp, BenchStack(Path(tmp)) as stack:
        for driver in ("aiokafka", "confluent"):
            print(f"| {driver} | {_run(stack, data, driver, Path(tmp), args.wait_s)} |")


if __name__ == "__main__":
    main()
