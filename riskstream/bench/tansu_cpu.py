"""The broker's CPU on the benchmark host: Tansu's cost per fetch and per produce request.

    riskstream bench tansu-cpu [--out docs/bench/tansu]

`riskstream bench pipeline` shows Tansu at 0.04-0.07 cores while a worker drains a backlog and
0.5-0.9 cores under open-loop load on the same 2 cores. This separates what it pays for: one
consumer with nothing to fetch, by fetch wait (Tansu holds a fetch for its whole wait, so the
wait sets the request rate), and a producer at a fixed rate, by linger (the batching). Tansu's
CPU is read from /proc (psutil) over each span. Prints a table; writes tansu_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from riskstream.bench.core import machine_info
from riskstream.localstack.broker import TansuBroker
from riskstream.tools.replay import TokenBucket
from stream.kafka_clients import kafka_config, plaintext

PARTITIONS = 8  # as the bench's events topic


def _cores(proc: Any, work: Callable[[], None]) -> float:
    began_cpu, began = sum(proc.cpu_times()[:2]), time.monotonic()
    work()
    return float((sum(proc.cpu_times()[:2]) - began_cpu) / (time.monotonic() - began))


def _idle_consumer(bootstrap: str, topic: str, wait_ms: int, proc: Any) -> float:
    consumer = KafkaConsumer(**kafka_config(bootstrap, plaintext(), fetch_max_wait_ms=wait_ms,
                                            enable_auto_commit=False))  # fmt: skip
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            consumer.poll(timeout_ms=50)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(1.5)  # connected, fetching
    cores = _cores(proc, lambda: time.sleep(6))
    stop.set()
    thread.join()
    consumer.close()
    return cores


def _producer(bootstrap: str, topic: str, rate: int, linger_ms: int, proc: Any) -> float:
    producer = Producer(kafka_config(bootstrap, plaintext(), "confluent",
                                     **{"acks": "all", "linger.ms": linger_ms,
                                        "partitioner": "murmur2_random"}))  # fmt: skip
    value = b"x" * 300  # about a simulated event's size

    def offer() -> None:
        bucket = TokenBucket(rate)
        for i in range(rate * 6):
            bucket.acquire()
            producer.produce(topic, key=b"u%d" % (i % 5000), value=value)
            producer.poll(0)
        producer.flush()

    return _cores(proc, offer)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="riskstream bench tansu-cpu", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("out/bench/tansu"))
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with TansuBroker(port=0) as broker:
        if broker.pid is None:
            raise SystemExit("tansu_cpu: the broker did not start")
        proc = psutil.Process(broker.pid)
        admin = KafkaAdminClient(**kafka_config(broker.bootstrap, plaintext()))
        admin.create_topics([NewTopic("events", PARTITIONS, 1)])
        admin.close()
        for wait in (20, 100, 500):
            cores = _idle_consumer(broker.bootstrap, "events", wait, proc)
            rows.append({"case": f"one idle consumer, fetch wait {wait} ms", "cores": cores})
        for linger in (5, 20):
            cores = _producer(broker.bootstrap, "events", 2000, linger, proc)
            rows.append({"case": f"producer 2,000 events/s, linger {linger} ms", "cores": cores})
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(), "partitions": PARTITIONS, "rows": rows}
    (args.out / "tansu_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| case | Tansu cores |\n|---|---:|")
    for row in rows:
        print(f"| {row['case']} | {row['cores']:.3f} |")


if __name__ == "__main__":
    main()
