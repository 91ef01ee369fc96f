"""Rough events/s of one `riskstream worker` process, end to end on the embedded stack.

    .venv/bin/python benchmarks/worker_throughput.py --bundle out/demo/bundle \
        --events out/demo/world/events.jsonl [--batch-max 256]

Starts Tansu and Redis (`REDIS_URL` or embedded Valkey), creates the topics, produces every
event (keyed by user) before the worker starts, then starts the worker and reads its `/metrics`
until `events_total` reaches the count: the rate is events over the time from its first to its
last batch, i.e. a backlog drained at full speed (issue 7 measures open-loop load). Prints a
markdown table of the rate and where a batch's time went.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from riskstream.localstack import RedisService, TansuBroker, create_topics, find_free_port
from stream.metrics import metric_total, scrape

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--batch-max", type=int, default=256)
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    lines = args.events.read_bytes().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        broker = TansuBroker(log_path=Path(tmp) / "tansu.log").start()
        redis_service = RedisService().start()
        worker = None
        try:
            create_topics(
                broker.bootstrap, {"events": 8, "alerts": 4, "events.dlq": 1, "scores": 8}
            )
            from kafka import KafkaProducer

            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                     linger_ms=20, batch_size=256 * 1024)  # fmt: skip
            began = time.perf_counter()
            for value in lines:
                producer.send("events", key=orjson.loads(value)["user_id"].encode(), value=value)
            producer.flush()
            produce_s = time.perf_counter() - began
            producer.close()
            port = find_free_port()
            env = {**os.environ, "RISKSTREAM_FAUST_DATADIR": f"{tmp}/faust",
                   "RISKSTREAM_BROKER_SESSION_TIMEOUT_S": "6"}  # fmt: skip
            log = Path(tmp, "worker.log").open("wb")  # noqa: SIM115 - open while the worker runs
            worker = subprocess.Popen(
                [sys.executable, "-m", "riskstream", "worker", "--bundle", str(args.bundle),
                 "--broker", broker.url, "--redis", redis_service.url, "--metrics-port",
                 str(port), "--batch-max", str(args.batch_max), "--log-level", "warn"],
                cwd=ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            first = last = None
            text = ""
            deadline = time.monotonic() + args.timeout_s
            while time.monotonic() < deadline:
                time.sleep(0.2)
                try:
                    text = scrape(port)
                except OSError:
                    continue
                done = metric_total(text, "events_total")
                if done and first is None:
                    first = time.perf_counter()
                if done >= len(lines):
                    last = time.perf_counter()
                    break
            if first is None or last is None:
                sys.exit(f"worker did not finish; log: {tmp}/worker.log")
            wall = last - first
            batches = metric_total(text, "batch_size_count")
            print("| measure | value |\n|---|---:|")
            print(f"| events | {len(lines):,} |")
            print(f"| produce (kafka-python, acks=all) | {len(lines) / produce_s:,.0f} events/s |")
            print(f"| worker: backlog drained at | **{len(lines) / wall:,.0f} events/s** |")
            print(f"| batches (mean size) | {batches:,.0f} ({len(lines) / max(batches, 1):.0f}) |")
            for name in ("redis_seconds", "inference_seconds"):
                total = metric_total(text, f"{name}_sum")
                print(f"| {name} per batch (mean) | {total / max(batches, 1) * 1000:.1f} ms |")
            alerts = metric_total(text, "alerts_total")
            print(f"| alerts | {alerts:,.0f} |")
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=30)
            redis_service.stop()
            broker.stop()


if __name__ == "__main__":
    main()
