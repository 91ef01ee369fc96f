"""The worker's consumer waits at most `fetch_max_wait_ms` per fetch, not Faust's fixed 1,500.

Run in a subprocess: building Faust's consumer thread outside a worker leaves an event loop and
sockets for the garbage collector, whose ResourceWarnings would fail this process's tests.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import asyncio
from stream.app import create_app
from stream.settings import WorkerSettings

async def main():
    app = create_app(WorkerSettings(fetch_max_wait_ms=7))
    consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    print(type(consumer).__name__, consumer._fetch_max_wait_ms, flush=True)
    await consumer.stop()

asyncio.run(main())
"""


def test_worker_consumer_takes_the_fetch_wait_setting() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", PROBE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["AIOKafkaConsumer", "7"]
