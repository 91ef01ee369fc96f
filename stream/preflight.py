"""What a worker checks before Faust starts, so that each start-up mistake is one clear line.

Without these checks a bundle whose files changed after export, or a rules file that is not
YAML, ends the worker only after Faust started, with pages of tracebacks; and a Redis nobody
answers at leaves a worker that logs "ready" and retries its first batch for ever. Each check
raises `PreflightError` naming the file, the key or the address (never a password).

>>> redis_address("redis://:secret@cache.internal:6380/2")
'cache.internal:6380'
>>> redis_address("redis+cluster://10.0.0.1:7000")
'10.0.0.1:7000'
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from events import EncodingSpec
from export.exceptions import BundleError
from export.loader import read_spec_and_policy, verify_bundle
from stream.exceptions import PreflightError, RulesError
from stream.redis_connect import redis_client
from stream.rules import load_rules
from stream.settings import WorkerSettings

__all__ = [
    "check_bundle",
    "check_redis",
    "check_rules",
    "check_shadow_bundle",
    "preflight",
    "redis_address",
]


def redis_address(url: str) -> str:
    """host:port of a Redis URL, without its credentials (for messages)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def check_bundle(path: Path) -> EncodingSpec:
    """The bundle's encoding spec, after every listed file's sha256 was checked."""
    try:
        spec, _policy = read_spec_and_policy(path, verify_bundle(path))
    except BundleError as exc:
        raise PreflightError(f"bundle refused: {exc}") from None
    return spec


def check_rules(path: Path | None, spec: EncodingSpec) -> None:
    """The rules file reads and parses against the bundle's encoding (no file: no rules)."""
    if path is None:
        return
    if not path.is_file():
        raise PreflightError(f"--rules {path}: no such file")
    try:
        load_rules(path, spec)
    except RulesError as exc:
        raise PreflightError(f"rules refused: {exc}") from None


def check_redis(settings: WorkerSettings) -> None:
    """Redis answers a PING (a cluster: its slot table is read) within the client's timeout."""
    import redis
    from redis.exceptions import RedisClusterException

    url = settings.redis_url.get_secret_value()
    try:
        client = redis_client(url, cluster=settings.redis_cluster, tls_ca=settings.redis_tls_ca)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        why = str(exc).replace(url, redis_address(url)).splitlines()[0] if str(exc) else ""
        raise PreflightError(
            f"cannot reach Redis at {redis_address(url)}: {why or type(exc).__name__} "
            "(RISKSTREAM_REDIS_URL, --redis or --redis-url-file)"
        ) from None


def check_shadow_bundle(path: Path | None, spec: EncodingSpec) -> None:
    """The shadow bundle (none: no shadow) verifies and encodes events as the live one does:
    it judges the live model's windows (`stream.shadow`)."""
    if path is None:
        return
    try:
        shadow, _policy = read_spec_and_policy(path, verify_bundle(path))
    except BundleError as exc:
        raise PreflightError(f"shadow bundle refused: {exc}") from None
    if shadow.spec_hash != spec.spec_hash:
        raise PreflightError(
            f"shadow bundle refused: {path}'s encoding spec ({shadow.spec_hash[:12]}) is not the "
            f"live bundle's ({spec.spec_hash[:12]}): it cannot judge the live model's windows"
        )


def preflight(settings: WorkerSettings) -> None:
    """Bundle, shadow bundle, rules, Redis: the first mistake as a `PreflightError`."""
    spec = check_bundle(settings.bundle)
    check_shadow_bundle(settings.shadow_bundle, spec)
    check_rules(settings.rules, spec)
    check_redis(settings)
