"""The transport-only worker: the real app with a runtime that does no work.

Same Faust app, transport, micro-batching and acknowledgements as `riskstream worker`, but each
batch is only counted and answered with one small record on the alerts topic (consume →
produce): no parsing, no Redis, no model. Its drain rate is the transport's ceiling.

    python -m riskstream.bench.pipeline.null_worker worker --without-web
"""

from __future__ import annotations

import time

import orjson

from stream.messages import Incoming
from stream.prometheus import Health, Metrics
from stream.publish import Send
from stream.settings import WorkerSettings

__all__ = ["NullRuntime"]


class NullRuntime:
    """Counts each batch and publishes one record per batch."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = Health(redis_required=False, model_version="none")

    def describe(self) -> str:
        return "transport only (no parsing, Redis or model)"

    async def handle(self, batch: list[Incoming], send: Send) -> object:
        await send(self.settings.alerts_topic, None, orjson.dumps({"batch": len(batch)}), None)
        self.metrics.events.inc(len(batch))
        self.metrics.batch_size.observe(len(batch))
        now_ms = time.time() * 1000
        for msg in batch:
            if msg.timestamp_ms is not None:
                self.metrics.event_lag_seconds.observe(max(0.0, now_ms - msg.timestamp_ms) / 1000)
        return None


def main() -> None:
    from stream.app import create_app

    create_app(WorkerSettings(), runtime_factory=NullRuntime).main()


if __name__ == "__main__":
    main()
