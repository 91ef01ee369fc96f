"""Prometheus metrics and the `/metrics` + `/health` endpoint of the worker.

Own registry (not the process-global one), so tests and several workers in one process do not
collide. The HTTP server is a daemon thread of the standard library.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "Health",
    "Metrics",
    "bucket_quantile",
    "histogram_buckets",
    "histogram_quantile",
    "metric_total",
    "scrape",
    "serve",
]

# Fine around the 250 ms latency target: quantiles read from buckets are their upper bounds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
                    0.75, 1.0, 2.5, 5.0, 10.0, 30.0)  # fmt: skip


class Metrics:
    """Every metric the worker exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("events", "Messages consumed from the events topic", registry=r)
        self.duplicates = Counter(
            "events_redelivered", "Valid events whose id the window already held", registry=r
        )
        self.dlq = Counter("dlq", "Messages sent to the dead-letter topic", ["reason"], registry=r)
        self.alerts = Counter("alerts", "Alerts published", ["type", "source"], registry=r)
        self.batch_size = Histogram(
            "batch_size", "Messages per micro-batch",
            buckets=(1, 4, 16, 32, 64, 128, 256, 512, 1024, 4096), registry=r,
        )  # fmt: skip
        self.redis_seconds = Histogram(
            "redis_seconds", "Window script round trip per batch", buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "inference_seconds", "Model scoring per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.event_to_alert_seconds = Histogram(
            "event_to_alert_seconds", "Broker timestamp of the event to the alert's publication",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.event_lag_seconds = Histogram(
            "event_lag_seconds", "Broker timestamp of an event to the end of its batch",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "model_info", "The serving model (value 1)", ["version", "variant", "provider"],
            registry=r,
        )  # fmt: skip
        self.model_reloads = Counter("model_reloads", "Bundles swapped in", registry=r)
        self.model_refused = Counter("model_refused", "Bundles refused on reload", registry=r)
        self.rules_refused = Counter("rules_refused", "Rule files refused on reload", registry=r)
        self.undecodable_batches = Counter(
            "undecodable_batches", "Record batches not decoded: dead-lettered whole, skipped",
            ["codec"], registry=r,
        )  # fmt: skip
        self.retries = Counter("retries", "Batch retries after Redis or broker errors",
                               ["cause"], registry=r)  # fmt: skip

    def set_model(self, version: str, variant: str, provider: str) -> None:
        """Point `model_info` at the serving model only."""
        self.model_info.clear()
        self.model_info.labels(version, variant, provider).set(1)


@dataclass
class Health:
    """Liveness (the loop ticks) and readiness (model loaded, a batch or an idle poll succeeded)."""

    started: float = field(default_factory=time.time)
    ready: bool = False
    last_ok: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def report(self) -> tuple[int, dict[str, Any]]:
        body = {"ready": self.ready, "uptime_s": round(time.time() - self.started, 1),
                "last_ok_s_ago": round(time.time() - self.last_ok, 1) if self.last_ok else None,
                **self.detail}  # fmt: skip
        return (200 if self.ready else 503), body


def serve(metrics: Metrics, health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Serve `/metrics` and `/health` (200 when ready, else 503) on a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                code, body, ctype = 200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST
            elif self.path.startswith("/health"):
                code, data = health.report()
                body, ctype = json.dumps(data).encode(), "application/json"
            else:
                code, body, ctype = 404, b"not found\n", "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would flood the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def scrape(port: int, host: str = "127.0.0.1", timeout_s: float = 2.0) -> str:
    """The text a worker's `/metrics` serves (for tools, the demo and benchmarks)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as r:
        text: str = r.read().decode()
    return text


def metric_total(text: str, name: str) -> float:
    """The sum of a metric's samples over all its label sets (0 when absent).

    >>> metric_total('a_total{t="x"} 2.0\\na_total{t="y"} 3.0\\nb 1.0', "a_total")
    5.0
    """
    pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def histogram_buckets(text: str, name: str) -> list[tuple[float, float]]:
    """A histogram's cumulative `(upper bound, count)` pairs, in the order served.

    >>> histogram_buckets('h_bucket{le="0.1"} 3.0\\nh_bucket{le="+Inf"} 4.0', "h")
    [(0.1, 3.0), (inf, 4.0)]
    """
    pattern = rf'^{re.escape(name)}_bucket{{le="([^"]+)"}} ([0-9.e+]+)$'
    return [
        (float("inf") if le == "+Inf" else float(le), float(v))
        for le, v in re.findall(pattern, text, re.M)
    ]


def histogram_quantile(text: str, name: str, q: float) -> float | None:
    """A quantile of a histogram: the upper bound of the first bucket holding it (None when
    the histogram is empty)."""
    return bucket_quantile(histogram_buckets(text, name), q)


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the first cumulative `(bound, count)` bucket holding the q-quantile
    (None when the histogram is empty).

    >>> bucket_quantile([(0.1, 3.0), (0.25, 9.0), (float("inf"), 10.0)], 0.5)
    0.25
    """
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    return next(le for le, count in buckets if count >= target)
