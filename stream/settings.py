"""The worker's settings: one frozen, typed object; every environment variable named here.

Each field reads `RISKSTREAM_<FIELD>` (e.g. `RISKSTREAM_BROKER_URL`); CLI flags override.
`KafkaSecurity`, the broker's SSL/SASL part, is what `riskstream replay` and `alerts tail`
read too: the same variables reach the same broker from every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.exceptions import SettingsError

__all__ = ["ENV_PREFIX", "KafkaSecurity", "WorkerSettings", "read_secret_file"]

ENV_PREFIX = "RISKSTREAM_"


def read_secret_file(path: Path, field: str) -> str:
    """The first line of a secret file, stripped; `SettingsError` (naming the setting and the
    file, never the content) when it is missing, unreadable or empty."""
    flag = f"--{field.replace('_', '-')}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{flag} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{flag} {path}: not UTF-8 text") from None
    value = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise SettingsError(f"{flag} {path}: the file is empty")
    return value


class KafkaSecurity(BaseSettings):
    """How to reach the broker securely: SSL and SASL (`RISKSTREAM_SECURITY_PROTOCOL`, ...).
    Every Kafka client gets them through `stream.kafka_clients` (the one factory).

    Secrets come from the environment or from files (`*_file`), never from the command line.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None  # a file holding the password (wins over it)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    #: `(file setting, the secret setting it fills)`.
    _SECRET_FILES: ClassVar = (("sasl_password_file", "sasl_password"),
                               ("redis_url_file", "redis_url"))  # fmt: skip

    def with_secret_files(self) -> Self:
        """These settings with each secret read from its file, when one is given;
        `SettingsError` naming the setting and the file when it cannot be read."""
        update: dict[str, SecretStr] = {}
        for field, target in self._SECRET_FILES:
            path = getattr(self, field, None)
            if path is not None:
                update[target] = SecretStr(read_secret_file(path, field))
        return self.model_copy(update=update) if update else self


class WorkerSettings(KafkaSecurity):
    """Everything `riskstream worker` can be told."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # Kafka
    broker_url: str = "kafka://127.0.0.1:9092"  # Faust form; several: comma-separated
    events_topic: str = "events"
    alerts_topic: str = "alerts"
    dlq_topic: str = "events.dlq"
    scores_topic: str = "scores"
    # The shadow bundle's scores and would-be alerts (stream/shadow.py): never `alerts_topic`.
    shadow_alerts_topic: str = "alerts.shadow"
    shadow_scores_topic: str = "scores.shadow"
    control_topic: str = "riskstream.control"
    consumer_group: str = "riskstream-worker"
    # Group membership (docs/operations.md, "Hand-over"): a worker that stops sends LeaveGroup
    # and the others rebalance at their next heartbeat; one that dies without leaving holds its
    # partitions until its session times out. 6 s is the least Apache Kafka accepts by default
    # (group.min.session.timeout.ms); Tansu also waits half the session in every rebalance
    # (measured: hand-over after LeaveGroup 4 s at 6 s, 6 s at 10 s). The rebalance timeout
    # bounds how long a rebalance waits for a member still finishing a batch.
    broker_session_timeout_s: float = Field(default=6.0, gt=0, le=90)
    broker_heartbeat_interval_s: float = Field(default=1.0, gt=0)  # below session / 3
    broker_rebalance_timeout_s: float = Field(default=20.0, gt=0)
    fetch_max_wait_ms: int = Field(default=20, ge=1, le=10_000)  # see stream/transport.py
    # (security_protocol, sasl_*, ssl_*: see KafkaSecurity)

    # Redis
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")  # may carry a password
    # A file holding the URL (a mounted secret): nothing secret on the command line or in `ps`.
    redis_url_file: Path | None = None
    # Redis Cluster (also chosen by a redis+cluster:// or rediss+cluster:// URL).
    redis_cluster: bool = False
    redis_prefix: str = "rs:"
    redis_tls_ca: Path | None = None

    # Model, rules and windows
    bundle: Path = Path("out/demo/bundle")
    # A second bundle judging the same windows beside the live one (hot-reloaded, verified like
    # it): its scores and alerts go to the shadow topics only. None: no shadow.
    shadow_bundle: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    variant: Literal["fp32", "int8", "fp16"] | None = None  # default: the loader's choice
    rules: Path | None = None
    window_max_events: int | None = Field(default=None, ge=1, le=4096)  # default: the bundle's
    window_max_age_s: int | None = Field(default=None, gt=0)
    reload_poll_s: float = Field(default=2.0, gt=0)
    # ONNX Runtime's threads busy-wait between operators unless told not to; off: the worker
    # shares its cores (measured: +30 % events/s on 2 cores shared with the broker and Redis).
    inference_spin: bool = False
    # ONNX Runtime's intra-op threads per process (None: one per core). `riskstream worker
    # --processes N` gives each process cores // N: N processes × all cores oversubscribe the
    # host (2 cores, two processes at once: 11,286 windows/s per host with one thread each,
    # 10,265 with two; docs/bench/pipeline and pipeline-d6eab27).
    inference_threads: int | None = Field(default=None, ge=1, le=1024)

    # Processing
    # A batch is cut after batch_wait_ms anyway: the cap matters only under load, where bigger
    # batches spread the per-batch costs (measured: 6,113 events/s at 1,024, 4,770 at 256, and
    # p99 event→alert 206 ms instead of 489 ms at 3,578 events/s).
    batch_max: int = Field(default=1024, ge=1, le=65536)
    batch_wait_ms: int = Field(default=20, ge=1)
    # Batches are sized so that an event's wait + processing stays within this budget, growing
    # to batch_max only under backlog (stream/latency.py); 0: always cut at batch_max.
    latency_budget_ms: int = Field(default=200, ge=0, le=600_000)
    # Stage batch k+1 (parse, Redis, model inputs) while batch k is scored and published
    # (stream/pipeline.py). Off by default: on a 2-core host shared with other jobs it did not
    # pay (drained 2,828 → 2,675 events/s, one process; docs/bench/pipeline-overlap); a host
    # where the worker has a core to spare is still to be measured.
    pipeline_stages: bool = False
    cooldown_s: int = Field(default=600, ge=0)
    # An event older than its user's newest by more than this is dead-lettered (`late`), not
    # written into the past of the window; within it, it is placed by its time. 0: no bound.
    allowed_lateness_s: float = Field(default=3600.0, ge=0)
    # Events keyed by anything but their user_id (or not keyed) are dead-lettered: a window
    # is only in order when all of a user's events share one partition.
    require_user_key: bool = True
    occlusion_top: int = Field(default=3, ge=0, le=16)
    debug_scores: bool = False
    retry_max_backoff_s: float = Field(default=5.0, gt=0)
    # A dead letter keeps at most this much of the refused value (a longer one: its prefix, with
    # headers truncated=1, original_bytes, sha256; see stream/dlq.py). Default: the contract's
    # own 64 KiB limit. At most 900 kB: it must fit Faust's 1,000,000-byte producer requests.
    dlq_max_bytes: int = Field(default=64 * 1024, ge=0, le=900_000)

    # Operations
    metrics_port: int = Field(default=9464, ge=0, le=65535)  # 0: no HTTP endpoint
    metrics_host: str = "127.0.0.1"
    # How often the consumer (assignment, committed offsets, the broker's end offsets) and Redis
    # are checked for /health and /ready, and how long a partition with lag may go without a
    # commit before the worker counts as stalled (not ready; not alive if Redis and the broker
    # answer). Longer than the slowest batch, retries of a broker publish included.
    health_check_s: float = Field(default=2.0, gt=0)
    stall_timeout_s: float = Field(default=60.0, gt=0)
    # A partition with lag and no commit for this long, counted only while Redis and the broker
    # answer, ends the worker with exit code 76 (`stream.app.EXIT_STALLED`), and its supervisor
    # restarts it: faust-streaming's consumer can stop fetching for good after a rebalance
    # (faust-streaming #175, #640, #523) and only a new consumer resumes it. 0: never.
    stall_exit_s: float = Field(default=60.0, ge=0)
    # Tests only: while this file exists, the worker stops fetching (it pauses its partitions)
    # and deletes the file, a stall as the faust-streaming reports describe it.
    fault_stall_file: Path | None = None
    # Set by the supervisor for the process it starts: that slot's restarts so far and why the
    # previous process ended, exported as `worker_restarts_total` and on /health.
    restarts: int = Field(default=0, ge=0)
    restart_reason: str = ""
    # Faust's data folder; default: a private folder per user (see stream.app).
    faust_datadir: Path | None = None

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> Self:
        if self.broker_heartbeat_interval_s * 3 > self.broker_session_timeout_s:
            raise ValueError(
                f"{ENV_PREFIX}BROKER_HEARTBEAT_INTERVAL_S ({self.broker_heartbeat_interval_s:g} s) "
                f"must be at most a third of {ENV_PREFIX}BROKER_SESSION_TIMEOUT_S "
                f"({self.broker_session_timeout_s:g} s)"
            )
        return self

    @field_validator("redis_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if not value or any(c in value for c in "{}*?[] \n"):
            raise ValueError("must be non-empty, without braces, globs or spaces")
        return value
