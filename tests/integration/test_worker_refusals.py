"""What nothing may do: freeze a partition while the worker looks alive.

A real `riskstream worker` on the real broker (Tansu) and Redis:

- a rules file that is valid YAML of a wrong type and a bundle whose file cannot be read are
  refused once each (counted, logged once), the old rules and model keep serving, and every
  message is committed;
- a bundle that loads (and scores the load-time probe window) but fails on real batches, an
  error the worker does not retry, ends its process with exit code 70 without committing the
  batch; the supervisor restarts it (`riskstream worker` always runs under one), and once the
  good bundle is back in place it commits every message, and the alerts are neither lost nor
  doubled (one `alert_id` per (user, type), checked against offline scoring).
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import redis

from events import CHANNELS, parse_event
from export import load_bundle, read_manifest
from export.manifest import sha256_file
from riskstream.localstack import TansuBroker
from tests.conftest import MakeTopics
from tests.integration.fault_support import (
    FAR_FUTURE_MS,
    Offsets,
    Stack,
    World,
    alerts_by_pair,
    assert_windows_equal,
    check_alerts,
    health_code,
    make_world,
    offline_scores,
    produce,
    read_all,
    say,
    wait_until,
    workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.fault]

TOPICS = {"events": 4, "alerts": 2, "dlq": 1, "scores": 1}
PARITY = 1e-5
_RULE = "rules:\n  - id: burst\n    alert: fraud\n    all:\n      - {types: %s, at_least: 3}\n"
GOOD_RULES = _RULE % "[payment_failed]"
WRONG_TYPE_RULES = _RULE % "5"  # valid YAML; `types` of a wrong type


def _put_bundle(source: Path, live: Path, version: str, model: Path | None = None) -> None:
    """`source` copied into `live` (replaced), announcing `version`; with `model`: that file as
    the FP32 graph (a symlink is kept as one), its hash in the manifest."""
    staging = live.with_name(live.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    manifest = replace(read_manifest(source), model_version=version)
    if model is not None:
        (staging / "model.onnx").unlink()
        if model.is_symlink():
            (staging / "model.onnx").symlink_to(model.readlink())
        else:
            shutil.copy(model, staging / "model.onnx")
            manifest.files["model.onnx"] = sha256_file(staging / "model.onnx")
    (staging / "manifest.json").write_text(manifest.to_json())
    shutil.rmtree(live)
    staging.rename(live)  # as `riskstream export` does: the new folder appears whole


def _fixed_batch_graph(path: Path) -> Path:
    """A graph with the bundle's inputs and outputs that was exported for one window of one
    event (a Reshape to [1]): it loads and scores one such window, and fails on any bigger
    batch. Its scores are 0."""
    import onnx
    from onnx import TensorProto, helper

    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["mask", "one"], ["single"]),  # B × L must be 1
        helper.make_node("ReduceSum", ["mask", "axes"], ["count"], keepdims=0),
        helper.make_node("Mul", ["count", "single"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "scaled"], ["fraud"]),
        helper.make_node("Identity", ["fraud"], ["abnormal_click"]),
        helper.make_node("Shape", ["features"], ["unused"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed-batch",
        [
            helper.make_tensor_value_info(
                "features", TensorProto.INT64, ["batch", "events", len(CHANNELS)]
            ),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "events"]),
        ],
        [
            helper.make_tensor_value_info("fraud", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("abnormal_click", TensorProto.FLOAT, ["batch"]),
        ],
        initializer=[one, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _log_count(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text)


@pytest.mark.timeout(300)
def test_bad_rules_and_an_unreadable_bundle_are_refused_and_every_message_committed(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path / "world", users=300, seed=51, limit=6_000)
    topics = make_topics(TOPICS)
    live = tmp_path / "live"
    shutil.copytree(tiny_bundle, live)
    old = read_manifest(tiny_bundle).model_version
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD_RULES)
    env = {"RISKSTREAM_RULES": str(rules), "RISKSTREAM_RELOAD_POLL_S": "0.1"}
    group = f"rs-refuse-{uuid.uuid4().hex[:8]}"
    stack = Stack(kafka_broker.url, redis_url, topics, key_prefix, live, group, tmp_path, env)
    offsets = Offsets(kafka_broker.bootstrap, stack.group, topics["events"], TOPICS["events"])
    try:
        with workers() as spawn:
            w = spawn(stack, "worker")
            wait_until("ready", lambda: health_code(w.metrics_port, "/ready") == 200, 120, [w])
            counts = produce(kafka_broker.bootstrap, topics["events"], world.lines[:2000],
                             world.events[:2000])  # fmt: skip
            wait_until("the first part committed", lambda: offsets.caught_up(counts), 120, [w])

            rules.write_text(WRONG_TYPE_RULES)
            # A new version whose graph cannot be read (EIO even for root, unlike chmod 000).
            unreadable = tmp_path / "unreadable.onnx"
            unreadable.symlink_to("/proc/self/mem")
            _put_bundle(tiny_bundle, live, old + "-unreadable", unreadable)
            for start in range(2000, len(world.lines), 500):  # many batches, many polls
                counts += produce(kafka_broker.bootstrap, topics["events"],
                                  world.lines[start : start + 500],
                                  world.events[start : start + 500])  # fmt: skip
            wait_until("every message committed", lambda: offsets.caught_up(counts), 120, [w])
            assert w.metric("events_total") == len(world.lines)
            assert w.metric("rules_refused_total") == 1
            assert w.metric("model_refused_total") == 1
            assert w.metric("model_reloads_total") == 0
            assert health_code(w.metrics_port, "/ready") == 200
            assert health_code(w.metrics_port) == 200
            assert w.proc.poll() is None
            log = w.log
    finally:
        offsets.close()
    assert _log_count(log, "refused, model") == 1  # not re-read every poll
    assert _log_count(log, "rules file") == 1
    alerts = [orjson.loads(r.value) for r in read_all(kafka_broker.bootstrap, topics["alerts"], 2)]
    assert alerts
    assert all(a["model_version"].startswith(old) for a in alerts)
    assert not any("unreadable" in a["model_version"] for a in alerts)
    assert_windows_equal(redis_client, key_prefix, world, load_bundle(tiny_bundle, "cpu"))


@pytest.mark.timeout(420)
def test_a_batch_that_fails_unexpectedly_ends_the_worker_and_a_restart_commits_everything(
    kafka_broker: TansuBroker,
    make_topics: MakeTopics,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    full = make_world(tmp_path / "world", users=600, seed=61, limit=24_000)
    # The second part: only users of the first, so every window there holds ≥ 2 events and
    # every batch fails on the fixed-batch graph (it runs a lone one-event window).
    first_users = {e.user_id for e in full.events[:4000]}
    lines = full.lines[:4000] + [
        v for v, e in zip(full.lines[4000:], full.events[4000:], strict=True)
        if e.user_id in first_users
    ]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    world = World(path, lines, [parse_event(v, now_ms=FAR_FUTURE_MS) for v in lines], full.labels)
    topics = make_topics(TOPICS)
    live = tmp_path / "live"
    shutil.copytree(tiny_bundle, live)
    old = read_manifest(tiny_bundle).model_version
    env = {"RISKSTREAM_VARIANT": "fp32", "RISKSTREAM_RELOAD_POLL_S": "0.1"}
    group = f"rs-crash-{uuid.uuid4().hex[:8]}"
    stack = Stack(kafka_broker.url, redis_url, topics, key_prefix, live, group, tmp_path, env)
    offsets = Offsets(kafka_broker.bootstrap, stack.group, topics["events"], TOPICS["events"])
    where: list[tuple[int, int]] = []
    try:
        with workers() as spawn:
            first = spawn(stack, "first")
            counts = produce(kafka_broker.bootstrap, topics["events"], world.lines[:4000],
                             world.events[:4000], where)  # fmt: skip
            wait_until("the first part committed", lambda: offsets.caught_up(counts), 120, [first])
            _put_bundle(tiny_bundle, live, old + "-fixed-batch",
                        _fixed_batch_graph(tmp_path / "fixed.onnx"))  # fmt: skip
            counts += produce(kafka_broker.bootstrap, topics["events"], world.lines[4000:],
                              world.events[4000:], where)  # fmt: skip
            # The worker process exits 70; its supervisor restarts it (and again, backing off,
            # while the bundle still fails).
            wait_until("the worker process exits 70",
                       lambda: "batch failed (exit 70)" in first.log.read_text(errors="replace"),
                       120, [first])  # fmt: skip
            at_exit = offsets.committed()
            text = first.log.read_text(errors="replace")
            assert "a batch of" in text
            assert f"{topics['events']}[" in text  # the failed batch's topic[partition] offsets
            assert not offsets.caught_up(counts)  # the failed batch was not committed

            _put_bundle(tiny_bundle, live, old)  # the operator rolls the bundle back
            recovered_s = wait_until("every message committed", lambda: offsets.caught_up(counts),
                                     180, [first])  # fmt: skip
            redelivered = first.metric("events_redelivered_total") or 0.0
            restarts = first.metric("worker_restarts_total") or 0.0
            assert first.proc.poll() is None  # the supervisor stayed up throughout
    finally:
        offsets.close()
    assert restarts >= 1
    assert redelivered > 0
    say(f"crash: exit 70 with {sum(at_exit.values()):,} of {len(world.lines):,} committed; "
        f"restarted by its supervisor ({restarts:.0f} restarts), the worker committed "
        f"everything {recovered_s:.1f} s after the bundle was rolled back ({redelivered:,.0f} "
        f"redelivered in its last process)")  # fmt: skip
    bundle = load_bundle(tiny_bundle, "cpu", variant="fp32")
    assert_windows_equal(redis_client, key_prefix, world, bundle)
    pairs = alerts_by_pair(read_all(kafka_broker.bootstrap, topics["alerts"], TOPICS["alerts"]))
    scores = offline_scores(bundle, world, tmp_path / "offline.jsonl")
    n = check_alerts(world, pairs, bundle, scores, where, at_exit, PARITY)
    assert n["pairs"] > 0
    say(f"crash: {n}")
