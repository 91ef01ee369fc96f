"""The shadow model in the worker's runtime, against the real Redis (no broker: `send` records).

- the live alerts of a runtime with a shadow are those of one without, batch for batch; the
  shadow's go to the shadow topics only, and its cooldowns are its own keys;
- a shadow that raises while scoring is logged and counted, the live path goes on, and the
  shadow rests before it tries again;
- the shadow is hot-reloaded like the live model: a new verified bundle replaces it, a
  tampered one is refused (counted) and the old shadow keeps judging.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from events import parse_event
from export import read_manifest
from stream.keys import shadow_prefix
from stream.messages import Incoming
from stream.runtime import WorkerRuntime
from stream.settings import WorkerSettings
from tests.integration.test_shadow_worker import LOW, shadow_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

NOW_MS = 1_900_000_000_000
BATCH = 200

Sent = list[tuple[str, bytes | None, bytes, object]]


@pytest.fixture(scope="module")
def lines(tiny_world: Path) -> list[bytes]:
    """Every event of the world's attackers and of some 100 other users, in file order."""
    all_lines = tiny_world.joinpath("events.jsonl").read_bytes().splitlines()
    labels = tiny_world.joinpath("labels.jsonl").read_text().splitlines()
    users = {json.loads(x)["user_id"] for x in labels}
    users |= {parse_event(v, now_ms=NOW_MS).user_id for v in all_lines[:800]}
    return [v for v in all_lines if parse_event(v, now_ms=NOW_MS).user_id in users]


def _runtime(bundle: Path, redis_url: str, prefix: str, shadow: Path | None) -> WorkerRuntime:
    settings = WorkerSettings(
        bundle=bundle, shadow_bundle=shadow, redis_url=redis_url, redis_prefix=prefix,
        reload_poll_s=0.01, device="cpu", variant="fp32", metrics_port=0,
    )  # fmt: skip
    return WorkerRuntime(settings)


def _batches(lines: list[bytes]) -> list[list[Incoming]]:
    msgs = [
        Incoming(v, parse_event(v, now_ms=NOW_MS).user_id.encode(), "events", 0, i)
        for i, v in enumerate(lines)
    ]
    return [msgs[i : i + BATCH] for i in range(0, len(msgs), BATCH)]


def _run(runtime: WorkerRuntime, batches: list[list[Incoming]]) -> Sent:
    sent: Sent = []

    async def send(topic: str, key: bytes | None, value: bytes, headers: object) -> None:
        sent.append((topic, key, value, headers))

    async def all_batches() -> None:
        for batch in batches:
            await runtime.handle(batch, send)

    asyncio.run(all_batches())
    return sent


def _on(sent: Sent, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for t, _k, v, _h in sent if t == topic]


def _essence(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(a["alert_id"], a["event_id"], a["model_version"], a["severity"]) for a in alerts]


def _metric(runtime: WorkerRuntime, name: str, **labels: str) -> float:
    value = runtime.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_live_alerts_are_unchanged_and_the_shadow_keeps_its_own(
    tiny_bundle: Path,
    lines: list[bytes],
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    shadow = shadow_copy(tiny_bundle, tmp_path / "shadow", "shadow-v1")
    batches = _batches(lines)
    plain = _run(_runtime(tiny_bundle, redis_url, key_prefix + "a:", None), batches)
    runtime = _runtime(tiny_bundle, redis_url, key_prefix + "b:", shadow)
    shadowed = _run(runtime, batches)

    s = runtime.settings
    live_a, live_b = _on(plain, s.alerts_topic), _on(shadowed, s.alerts_topic)
    assert live_a, "no live alert"
    assert _essence(live_b) == _essence(live_a)
    assert {t for t, *_ in plain} <= {s.alerts_topic, s.dlq_topic, s.scores_topic}
    shadow_alerts = _on(shadowed, s.shadow_alerts_topic)
    live_pairs = {(a["user_id"], a["type"]) for a in live_b}
    shadow_pairs = {(a["user_id"], a["type"]) for a in shadow_alerts}
    assert live_pairs < shadow_pairs  # far lower thresholds: every live pair, and more
    assert {a["model_version"].split("+")[0] for a in shadow_alerts} == {"shadow-v1"}
    assert len(_on(shadowed, s.shadow_scores_topic)) == len(lines)  # every window, once
    assert _metric(runtime, "shadow_alerts_total", type="fraud", source="model") + _metric(
        runtime, "shadow_alerts_total", type="abnormal_click", source="model"
    ) == sum(not any(r["code"] == "rule" for r in a["reasons"]) for a in shadow_alerts)
    # The shadow's cooldowns are its own keys; the live ones are the plain runtime's.
    shadow_keys = list(redis_client.scan_iter(match=f"{shadow_prefix(key_prefix + 'b:')}cd:*"))
    live_keys = list(redis_client.scan_iter(match=f"{key_prefix}b:cd:*"))
    assert len(shadow_keys) == len({(a["user_id"], a["type"]) for a in shadow_alerts})
    assert len(live_keys) == len({(a["user_id"], a["type"]) for a in live_b})


def test_a_failing_shadow_never_stops_the_live_path(
    tiny_bundle: Path,
    lines: list[bytes],
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shadow = shadow_copy(tiny_bundle, tmp_path / "shadow", "shadow-v1")
    batches = _batches(lines)
    plain = _run(_runtime(tiny_bundle, redis_url, key_prefix + "a:", None), batches)
    runtime = _runtime(tiny_bundle, redis_url, key_prefix + "b:", shadow)
    assert runtime.shadow is not None

    def broken(*_args: object) -> None:
        raise RuntimeError("the shadow's graph blew up")

    runtime.shadow.processor.judge = broken  # type: ignore[method-assign]
    sent = _run(runtime, batches)
    s = runtime.settings
    assert _essence(_on(sent, s.alerts_topic)) == _essence(_on(plain, s.alerts_topic))
    assert not _on(sent, s.shadow_alerts_topic)
    assert _metric(runtime, "shadow_failures_total", stage="score") >= 1
    # After a failure it rests (1 s, doubling): batches within that are skipped, not tried.
    assert _metric(runtime, "shadow_skipped_total", why="resting") >= 1
    tried = _metric(runtime, "shadow_failures_total", stage="score")
    skipped = _metric(runtime, "shadow_skipped_total", why="resting")
    assert tried + skipped == len(batches)
    assert "shadow shadow-v1 failed at score (RuntimeError" in caplog.text
    assert _metric(runtime, "events_total") == len(lines)


def test_the_shadow_is_hot_reloaded_and_a_bad_one_refused(
    tiny_bundle: Path,
    lines: list[bytes],
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    shadow = shadow_copy(tiny_bundle, tmp_path / "shadow", "shadow-v1")
    runtime = _runtime(tiny_bundle, redis_url, key_prefix, shadow)
    s = runtime.settings
    batches = _batches(lines)
    live_version = read_manifest(tiny_bundle).model_version

    def versions(sent: Sent) -> set[str]:
        return {x["model_version"] for x in _on(sent, s.shadow_scores_topic)}

    assert versions(_run(runtime, batches[:1])) == {"shadow-v1"}
    # A tampered bundle announcing another version: refused, the old shadow judges on.
    staging = shadow_copy(tiny_bundle, tmp_path / "staging", "shadow-evil")
    with (staging / "model.onnx").open("ab") as f:
        f.write(b"\0")
    shutil.rmtree(shadow)
    staging.rename(shadow)
    time.sleep(0.02)
    assert versions(_run(runtime, batches[1:2])) == {"shadow-v1"}
    assert _metric(runtime, "shadow_refused_total") == 1
    # A good one: swapped in between batches.
    shutil.rmtree(shadow)
    shadow_copy(tiny_bundle, shadow, "shadow-v2")
    time.sleep(0.02)
    sent = _run(runtime, batches[2:3])
    assert versions(sent) == {"shadow-v2"}
    assert {a["model_version"].split("+")[0] for a in _on(sent, s.alerts_topic)} <= {live_version}
    assert runtime.serving.model_version == live_version  # the live model never moved
    assert _metric(runtime, "shadow_model_info", version="shadow-v2", variant="fp32",
                   provider="CPUExecutionProvider") == 1  # fmt: skip


def test_promote_makes_the_shadow_live_through_the_verified_reload(
    tiny_bundle: Path,
    lines: list[bytes],
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from riskstream.cli import main

    live = tmp_path / "live"
    shutil.copytree(tiny_bundle, live)
    shadow = shadow_copy(tiny_bundle, tmp_path / "shadow", "shadow-v1")
    runtime = _runtime(live, redis_url, key_prefix, shadow)
    batches = _batches(lines)
    old = runtime.serving.model_version
    sent = _run(runtime, batches[:1])
    assert {x["model_version"] for x in _on(sent, runtime.settings.scores_topic)} <= {old}

    # A tampered shadow is refused by promote, in one line; the live folder is untouched.
    bad = shadow_copy(tiny_bundle, tmp_path / "bad", "shadow-bad", None)
    with (bad / "model.onnx").open("ab") as f:
        f.write(b"\0")
    assert main(["shadow", "promote", "--shadow-bundle", str(bad), "--bundle", str(live)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --shadow-bundle {bad}: refused: ")
    assert read_manifest(live).model_version == old

    assert main(["shadow", "promote", "--shadow-bundle", str(shadow), "--bundle", str(live)]) == 0
    assert "is now model shadow-v1" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    time.sleep(0.02)
    out = asyncio.run(runtime.handle(batches[1], _discard))
    assert out.model_version == "shadow-v1"  # the live model, reloaded
    assert runtime.metrics.model_reloads._value.get() == 1
    # Its thresholds came with it.
    assert runtime.serving.bundle.thresholds == {"fraud": LOW, "abnormal_click": LOW}


async def _discard(topic: str, key: bytes | None, value: bytes, headers: object) -> None:
    return None
