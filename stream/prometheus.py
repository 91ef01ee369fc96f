"""Prometheus metrics and the `/metrics`, `/health` and `/ready` endpoints of the worker.

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
        self.short_windows = Counter(
            "short_window_suppressed", "Model scores over the threshold on windows shorter than "
            "the bundle's calibration lets alert (no alert raised)", ["type"], registry=r,
        )  # fmt: skip
        self.allow_suppressed = Counter(
            "allow_list_suppressed", "Model or rule alerts not raised: the event is on the allow "
            "list (once per user, type and batch)", ["type"], registry=r,
        )  # fmt: skip
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
        self.rules_refused = Counter(
            "rules_refused", "Rules or lists files refused on reload", registry=r
        )
        self.undecodable_batches = Counter(
            "undecodable_batches", "Record batches not decoded: dead-lettered whole, skipped",
            ["codec"], registry=r,
        )  # fmt: skip
        self.retries = Counter("retries", "Batch retries after Redis or broker errors",
                               ["cause"], registry=r)  # fmt: skip
        # The shadow model (stream/shadow.py): what it would have alerted, how it failed.
        self.shadow_model_info = Gauge(
            "shadow_model_info", "The shadow model (value 1)", ["version", "variant", "provider"],
            registry=r,
        )  # fmt: skip
        self.shadow_alerts = Counter(
            "shadow_alerts", "Would-be alerts of the shadow model (alerts.shadow)",
            ["type", "source"], registry=r,
        )  # fmt: skip
        self.shadow_failures = Counter(
            "shadow_failures", "Batches the shadow failed on (the live path went on)", ["stage"],
            registry=r,
        )  # fmt: skip
        self.shadow_skipped = Counter(
            "shadow_skipped", "Batches the shadow did not judge (resting after a failure, or "
            "built on another encoding than the live model)", ["why"], registry=r,
        )  # fmt: skip
        self.shadow_refused = Counter(
            "shadow_refused", "Shadow bundles refused on reload", registry=r
        )
        self.shadow_inference_seconds = Histogram(
            "shadow_inference_seconds", "Shadow model scoring per batch",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.restarts = Counter(
            "worker_restarts", "Processes the supervisor started in this worker's place before it "
            "(a crash, a stall: see worker_last_exit_info)", registry=r,
        )  # fmt: skip
        self.last_exit = Gauge(
            "worker_last_exit_info", "How the process before this one ended (value 1)",
            ["reason"], registry=r,
        )  # fmt: skip

    def set_restarts(self, restarts: int, reason: str) -> None:
        """The supervisor's count of restarts before this process, and the latest reason."""
        if restarts:
            self.restarts.inc(restarts)
            self.last_exit.labels(reason or "unknown").set(1)

    def set_model(self, version: str, variant: str, provider: str) -> None:
        """Point `model_info` at the serving model only."""
        self.model_info.clear()
        self.model_info.labels(version, variant, provider).set(1)


@dataclass
class Health:
    """What `/health` (liveness) and `/ready` (readiness) answer, kept up to date by the worker.

    Ready: a model is loaded, Redis answered (at least once, and its latest call succeeded),
    and, where a consumer is watched (`watched`, set by the app's health timer), the broker
    answered the latest check, partitions are assigned and none has stalled.

    Alive: unless a partition with lag has not committed for `stall_timeout_s` while Redis and
    the broker both answer (a fault of the worker itself, which a restart clears), or the
    watched checks stopped running for as long (the event loop is stuck). Redis or the broker
    being down makes the worker unready, not dead: a restart would not bring them back.
    """

    started: float = field(default_factory=time.time)
    redis_required: bool = True
    stall_timeout_s: float = 60.0
    model_version: str | None = None
    redis: bool | None = None  # None: no call answered yet
    redis_error: str = ""
    watched: bool = False
    broker: bool | None = None
    broker_error: str = ""
    assigned: int = 0
    stalled: list[str] = field(default_factory=list)
    last_check: float = 0.0  # monotonic, of the latest consumer check
    last_ok: float = 0.0  # wall clock, of the latest batch done
    restarts: int = 0  # processes the supervisor started before this one, and why the last ended
    restart_reason: str = ""

    def redis_ok(self) -> None:
        """A Redis call succeeded."""
        self.redis, self.redis_error = True, ""

    def redis_failed(self, why: str) -> None:
        """A Redis call failed."""
        self.redis, self.redis_error = False, why

    def batch_ok(self) -> None:
        """A batch was processed and published."""
        self.last_ok = time.time()

    def consumer_checked(
        self, *, broker: bool | None, broker_error: str, assigned: int, stalled: list[str]
    ) -> None:
        """The app's health timer looked at the consumer."""
        self.watched = True
        self.broker, self.broker_error = broker, broker_error
        self.assigned, self.stalled = assigned, stalled
        self.last_check = time.monotonic()

    def not_ready(self) -> list[str]:
        """Why the worker should get no work now (empty: ready)."""
        why = []
        if self.model_version is None:
            why.append("no model loaded")
        if self.redis_required and self.redis is not True:
            why.append(f"Redis: {self.redis_error or 'no call answered yet'}")
        if self.watched:
            if self.broker is False:
                why.append(f"broker: {self.broker_error}")
            if not self.assigned:
                why.append("no partition assigned")
            if self.stalled:
                why.append(f"commits stalled with lag on {', '.join(self.stalled)}")
        return why

    def not_alive(self) -> list[str]:
        """Why the worker should be restarted (empty: alive)."""
        why = []
        if self.watched:
            since = time.monotonic() - self.last_check
            if since > self.stall_timeout_s:
                why.append(f"no consumer check for {since:.0f} s (event loop stuck)")
            elif self.stalled and self.broker and self.redis is not False:
                why.append(f"commits stalled with lag on {', '.join(self.stalled)} while Redis "
                           "and the broker answer")  # fmt: skip
        return why

    def report(self, live: bool = False) -> tuple[int, dict[str, Any]]:
        """(status, body) of `/health` (`live=True`) or `/ready`."""
        not_ready, not_alive = self.not_ready(), self.not_alive()
        now = time.time()
        body = {
            "alive": not not_alive,
            "ready": not not_ready,
            "reasons": not_alive if live else not_ready,
            "model_version": self.model_version,
            "redis": self.redis,
            "broker": self.broker,
            "assigned_partitions": self.assigned,
            "stalled_partitions": self.stalled,
            "uptime_s": round(now - self.started, 1),
            "last_ok_s_ago": round(now - self.last_ok, 1) if self.last_ok else None,
            "restarts": self.restarts,
            "last_restart_reason": self.restart_reason or None,
        }
        ok = not (not_alive if live else not_ready)
        return (200 if ok else 503), body


def serve(metrics: Metrics, health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Serve `/metrics`, `/health` (liveness) and `/ready` (readiness) on a daemon thread;
    each answers 200 or 503 with a JSON body that gives the reasons (see `Health`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                code, body, ctype = 200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST
            elif self.path.startswith(("/health", "/ready")):
                code, data = health.report(live=self.path.startswith("/health"))
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
