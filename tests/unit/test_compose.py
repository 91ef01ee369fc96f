"""The production compose stack (docker-compose.yml, docker/), checked without Docker.

Docker does not run where these tests run, so they check what can break without it: the compose
file's shape, that its commands parse with the real CLI, that its variables are real settings,
that the topic and trainer scripts do what they should (run by bash against fake tools), and that
the images copy what the package needs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.core import TyperGroup

from riskstream.command import app
from riskstream.dev.stack import dev_topics
from riskstream.review.settings import ReviewSettings
from stream.settings import ENV_PREFIX, WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
WORKER_DOCKERFILE = "docker/worker.Dockerfile"
TRAINER_DOCKERFILE = "docker/trainer.Dockerfile"
REVIEW_DOCKERFILE = "docker/review.Dockerfile"
ENTRYPOINT_SCRIPT = ROOT / "docker" / "trainer-entrypoint.sh"
PROMETHEUS = ROOT / "docker" / "prometheus.yml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

#: Top-level keys of the compose specification this file may use (plus `x-*` extensions).
TOP_LEVEL = {"services", "volumes", "networks", "configs", "secrets", "name"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
WORKER_FIELDS = {f"{ENV_PREFIX}{name.upper()}" for name in WorkerSettings.model_fields}
#: Trainer variables: defined by docker/trainer-entrypoint.sh, documented in docs/deploy.md.
TRAINER_VAR = re.compile(r"\bRISKSTREAM_TRAIN_[A-Z0-9_]+\b")


# --- compose: loading and `${VAR:-default}` interpolation -------------------------------------

_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def interpolate(value: str) -> str:
    """Compose interpolation with every variable unset: `${VAR:-default}` gives the default.

    A variable without a default (`$VAR`, `${VAR}`, `${VAR:?error}`) fails: the stack must start
    without a `.env`. `$$` is compose's escape for a literal `$`.
    """

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        if match.group("op") not in (":-", "-"):
            raise ValueError(f"{match.group(0)!r}: ${name} has no default")
        return match.group("arg")

    return _INTERPOLATION.sub(one, value)


def interpolate_all(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node)
    if isinstance(node, dict):
        return {key: interpolate_all(value) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_all(value) for value in node]
    return node


@cache
def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@cache
def compose() -> dict[str, Any]:
    return dict(interpolate_all(raw_compose()))


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """The `environment` of a service (map or list form); None: passed through from the shell."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def set_env(service: dict[str, Any]) -> dict[str, str]:
    """The variables the service sets to a value (pass-through ones are unset by default)."""
    return {key: value for key, value in environment(service).items() if value is not None}


def build_of(service: dict[str, Any]) -> tuple[Path, str] | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return ROOT / build, "Dockerfile"
    return ROOT / build.get("context", "."), build.get("dockerfile", "Dockerfile")


def dockerfile_of(service: dict[str, Any]) -> str | None:
    """The Dockerfile's path relative to the repository root (None: a pulled image)."""
    build = build_of(service)
    if build is None:
        return None
    context, dockerfile = build
    return (context / dockerfile).resolve().relative_to(ROOT).as_posix()


def services_built_from(dockerfile: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if dockerfile_of(s) == dockerfile}


def worker_services() -> dict[str, dict[str, Any]]:
    """The stream workers (the worker image also serves `decide`)."""
    return {n: s for n, s in services_built_from(WORKER_DOCKERFILE).items()
            if s["command"][0] == "worker"}  # fmt: skip


def mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume entry, short or long syntax."""
    result = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            source, target = entry.get("source", ""), entry["target"]
            read_only = bool(entry.get("read_only", False))
        result.append((source, target, read_only))
    return result


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def profiles(service: dict[str, Any]) -> list[str]:
    return list(service.get("profiles", []))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No RISKSTREAM_* variable of the machine running the tests leaks into a check."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    return monkeypatch


# --- Dockerfiles and .dockerignore ------------------------------------------------------------


def dockerfile(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / path).read_text().splitlines():
        text = line.strip()
        if text.startswith("#") or (not text and not pending):
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        full = pending + text
        pending = ""
        word, _, rest = full.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    assert not pending, f"{path}: ends inside a continuation line"
    return instructions


def final_stage(path: str) -> list[tuple[str, str]]:
    instructions = dockerfile(path)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def exec_form(path: str, word: str) -> list[str]:
    values = [rest for w, rest in final_stage(path) if w == word]
    assert values, f"{path}: no {word} in the final stage"
    parsed = json.loads(values[-1])
    assert isinstance(parsed, list), f"{path}: {word} must be in exec (JSON) form"
    return [str(item) for item in parsed]


def copies(path: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not `--from` a stage)."""
    result = []
    for word, rest in dockerfile(path):
        if word not in ("COPY", "ADD"):
            continue
        args = shlex.split(rest)
        if any(arg.startswith("--from") for arg in args):
            continue
        paths = [arg for arg in args if not arg.startswith("--")]
        result.append((paths[:-1], paths[-1]))
    return result


def pip_installs(path: str) -> list[str]:
    """Every `pip install ...` command of the Dockerfile's RUN instructions."""
    commands = []
    for word, rest in dockerfile(path):
        if word == "RUN":
            commands += [
                part.strip()
                for part in re.split(r"&&|;|\|\|", rest)
                if re.match(r"\s*(python -m )?pip install\b", part)
            ]
    return commands


def env_keys(path: str) -> set[str]:
    keys: set[str] = set()
    for word, rest in dockerfile(path):
        if word == "ENV":
            keys |= {item.split("=", 1)[0] for item in shlex.split(rest) if "=" in item}
    return keys


def user_of(path: str) -> str:
    users = [rest for word, rest in final_stage(path) if word == "USER"]
    assert users, f"{path}: the final stage sets no USER (it would run as root)"
    return users[-1].split(":")[0]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@cache
def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        negated = text.startswith("!")
        pattern = os.path.normpath(text.lstrip("!").strip().lstrip("/"))
        rules.append((negated, _glob_regex(pattern)))
    return rules


def ignored(path: str) -> bool:
    """Whether the build context leaves `path` out (a pattern on a parent folder counts)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negated, regex in dockerignore():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


def package_dirs() -> list[str]:
    """Top-level packages of the distribution (pyproject's `packages.find.include`)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(pattern.rstrip("*").rstrip(".") for pattern in include)


def files_under(folder: str) -> Iterator[str]:
    for path in sorted((ROOT / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path.relative_to(ROOT).as_posix()


# --- the CLI ----------------------------------------------------------------------------------


def check_cli(argv: list[str]) -> Any:
    """Parse argv as `riskstream ARGV` would, strictly: unknown commands and options, bad values
    and missing required options raise `typer.TyperException` (typer ships its own click)."""
    command: Any = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="riskstream")
    args, name = list(argv), "riskstream"
    while isinstance(command, TyperGroup):
        if command.invoke_without_command and (not args or args[0].startswith("-")):
            break  # a group that runs itself (`riskstream review --port ...`): its own options
        if not args:
            raise typer.BadParameter(f"{name}: no subcommand")
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        if sub is None:
            raise typer.BadParameter(f"no such command {name!r}")
        command = sub
        ctx = typer.Context(command, info_name=name, parent=ctx)
    command.make_context(name, args, resilient_parsing=False)
    return command


def option_value(argv: list[str], option: str) -> str:
    assert option in argv, f"{option} missing from {argv}"
    return argv[argv.index(option) + 1]


def test_the_cli_checker_refuses_what_the_cli_refuses() -> None:
    assert check_cli(["review", "--port", "8470"]).name == "review"
    assert check_cli(["review", "add-user", "alice"]).name == "add-user"
    with pytest.raises(typer.TyperException):
        check_cli(["review", "--no-such-flag"])
    assert check_cli(["worker", "--log-level", "info"]).name == "worker"
    assert check_cli(["alerts", "tail", "--follow"]).name == "tail"
    with pytest.raises(typer.TyperException, match="No such option"):
        check_cli(["worker", "--no-such-flag"])
    with pytest.raises(typer.TyperException, match="no such command"):
        check_cli(["wroker"])
    with pytest.raises(typer.TyperException, match="no subcommand"):
        check_cli(["alerts"])
    with pytest.raises(typer.BadParameter):
        check_cli(["worker", "--metrics-port", "nine"])
    with pytest.raises(typer.TyperException, match="Missing parameter"):
        check_cli(["train", "--preset", "tiny"])  # --events and --out are required
    with pytest.raises(typer.BadParameter):
        check_cli(["train", "--events", "x", "--out", "y", "--preset", "huge"])


def test_interpolation_needs_a_default() -> None:
    assert interpolate("${A:-kafka://kafka:19092}") == "kafka://kafka:19092"
    assert interpolate("${A-x} $${B} $$") == "x ${B} $"
    for bad in ("${A}", "$A", "${A:?set A}"):
        with pytest.raises(ValueError, match="no default"):
            interpolate(bad)


# --- the compose file -------------------------------------------------------------------------


def test_compose_parses_with_compose_top_level_keys_only() -> None:
    data = raw_compose()
    extra = {key for key in data if key not in TOP_LEVEL and not key.startswith("x-")}
    assert not extra, f"not compose top-level keys: {sorted(extra)}"
    assert "version" not in data
    compose()  # every ${VAR} has a default: starts without a .env


def test_the_default_stack_and_its_profiles() -> None:
    default = {name for name, s in services().items() if not profiles(s)}
    assert default == {
        "kafka", "kafka-init", "redis", "trainer", "worker", "postgres", "review", "decide"
    }  # fmt: skip
    assert profiles(services()["worker-gpu"]) == ["gpu"]
    assert profiles(services()["prometheus"]) == ["monitoring"]
    # Nothing the default stack needs may hide behind a profile.
    for name in default:
        for target in services()[name].get("depends_on") or {}:
            assert target in default, f"{name} depends on {target}, which is in a profile"


def test_every_service_has_an_image_or_a_dockerfile_that_exists() -> None:
    for name, service in services().items():
        build = build_of(service)
        assert service.get("image") or build, f"{name}: neither image nor build"
        if build is not None:
            context, file = build
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert (context / file).is_file(), f"{name}: {context / file} missing"
    built = {dockerfile_of(s) for s in services().values()} - {None}
    assert built == {WORKER_DOCKERFILE, TRAINER_DOCKERFILE, REVIEW_DOCKERFILE}


def test_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for source, target, _ in mounts(service):
            assert target.startswith("/"), f"{name}: {target} is not an absolute path"
            if source and not is_bind(source):
                assert source in declared, f"{name}: volume {source} is not declared"
            elif source:
                assert (ROOT / source).exists(), f"{name}: bind source {source} missing"


def entrypoint_of(service: dict[str, Any]) -> list[str]:
    if "entrypoint" in service:
        entry = service["entrypoint"]
        return shlex.split(entry) if isinstance(entry, str) else list(entry)
    file = dockerfile_of(service)
    assert file is not None
    return exec_form(file, "ENTRYPOINT")


def command_of(service: dict[str, Any]) -> list[str]:
    if "command" in service:
        cmd = service["command"]
        return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
    file = dockerfile_of(service)
    assert file is not None
    return exec_form(file, "CMD")


def test_commands_of_our_images_are_real_cli_commands() -> None:
    checked = []
    for name, service in services().items():
        file = dockerfile_of(service)
        if file is None:
            continue
        entry = entrypoint_of(service)
        if entry == ["riskstream"]:
            argv = command_of(service)
            try:
                command = check_cli(argv)
            except typer.TyperException as exc:
                pytest.fail(f"{name}: `riskstream {shlex.join(argv)}`: {exc.format_message()}")
            checked.append((name, command.name))
        elif entry == exec_form(TRAINER_DOCKERFILE, "ENTRYPOINT"):
            assert "command" not in service, f"{name}: the trainer script takes no arguments"
            checked.append((name, "trainer-entrypoint"))  # its riskstream calls: tests below
        else:
            pytest.fail(f"{name}: runs {entry}, neither riskstream nor the trainer script")
    assert ("review", "review") in checked
    assert ("worker", "worker") in checked
    assert ("worker-gpu", "worker") in checked
    assert ("trainer", "trainer-entrypoint") in checked
    # The image's own default command is a real command too.
    check_cli(exec_form(WORKER_DOCKERFILE, "CMD"))


def test_worker_variables_are_worker_settings(clean_env: pytest.MonkeyPatch) -> None:
    workers = worker_services()
    assert set(workers) == {"worker", "worker-gpu"}
    image_env = {key for key in env_keys(WORKER_DOCKERFILE) if key.startswith(ENV_PREFIX)}
    assert image_env <= WORKER_FIELDS, f"not WorkerSettings fields: {image_env - WORKER_FIELDS}"
    for name, service in workers.items():
        keys = {key for key in environment(service) if key.startswith(ENV_PREFIX)}
        assert keys <= WORKER_FIELDS, f"{name}: not WorkerSettings fields: {keys - WORKER_FIELDS}"
        # ...and the values are valid settings (types, ranges, literals).
        with clean_env.context() as patch:
            for key, value in set_env(service).items():
                patch.setenv(key, value)
            settings = WorkerSettings()
        assert settings.metrics_port > 0, f"{name}: /metrics is off"
        assert settings.metrics_host == "0.0.0.0", f"{name}: /metrics unreachable from Prometheus"


def test_depends_on_conditions_are_valid() -> None:
    all_services = services()
    graph: dict[str, set[str]] = {}
    for name, service in all_services.items():
        deps = service.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {target: {"condition": "service_started"} for target in deps}
        graph[name] = set(deps)
        for target, spec in deps.items():
            assert target in all_services, f"{name}: depends on unknown service {target}"
            condition = spec.get("condition", "service_started")
            assert condition in CONDITIONS, f"{name} → {target}: bad condition {condition!r}"
            dep = all_services[target]
            if condition == "service_healthy":
                assert "healthcheck" in dep, f"{target}: no healthcheck"
                assert not dep["healthcheck"].get("disable"), f"{target}: healthcheck disabled"
            if condition == "service_completed_successfully":
                # A restarting container never completes; `restart: "no"` is what runs once.
                assert str(dep.get("restart", "no")) == "no", f"{target} restarts"
    for worker in ("worker", "worker-gpu"):
        conditions = {
            target: spec["condition"] for target, spec in all_services[worker]["depends_on"].items()
        }
        assert conditions == {
            "kafka-init": "service_completed_successfully",
            "redis": "service_healthy",
            "trainer": "service_completed_successfully",
        }
    assert all_services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert all_services["trainer"]["restart"] == "no"

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' → '.join((*path, name))}"
        for target in graph[name]:
            visit(target, (*path, name))

    for name in graph:
        visit(name, ())


def test_workers_scale_in_one_consumer_group() -> None:
    worker = services()["worker"]
    assert worker["deploy"]["replicas"] == 2
    partitions = dev_topics()["events"]
    assert worker["deploy"]["replicas"] <= partitions
    groups = {set_env(s)[f"{ENV_PREFIX}CONSUMER_GROUP"] for s in worker_services().values()}
    assert len(groups) == 1, f"workers in several consumer groups: {groups}"
    for name, service in worker_services().items():
        # `--scale` fails with a fixed container name or a published host port.
        assert "container_name" not in service, name
        assert not service.get("ports"), f"{name}: a host port blocks --scale"


def test_workers_read_the_bundle_the_trainer_writes_and_the_repo_rules() -> None:
    trainer = services()["trainer"]
    bundle = set_env(trainer)[f"{ENV_PREFIX}BUNDLE"]
    trainer_volume = [
        (src, target) for src, target, ro in mounts(trainer) if bundle.startswith(target + "/")
    ]
    assert len(trainer_volume) == 1, "the trainer's bundle folder is not on one volume"
    assert not is_bind(trainer_volume[0][0])
    assert all(not ro for src, _, ro in mounts(trainer) if src == trainer_volume[0][0])
    for name, service in worker_services().items():
        env = set_env(service)
        assert env[f"{ENV_PREFIX}BUNDLE"] == bundle, f"{name} serves another bundle path"
        mine = [(s, t, ro) for s, t, ro in mounts(service) if bundle.startswith(t + "/")]
        assert mine == [(trainer_volume[0][0], trainer_volume[0][1], True)], name
        rules = env[f"{ENV_PREFIX}RULES"]
        binds = [(s, t) for s, t, ro in mounts(service) if ro and rules.startswith(t + "/")]
        assert binds, f"{name}: {rules} is on no read-only mount"
        source, target = binds[0]
        on_host = ROOT / source / rules[len(target) + 1 :]
        assert on_host.is_file(), f"{name}: {rules} is {on_host}, missing"
        assert yaml.safe_load(on_host.read_text())["rules"]


def test_gpu_profile_reserves_an_nvidia_gpu(clean_env: pytest.MonkeyPatch) -> None:
    gpu = {name: s for name, s in services().items() if "gpu" in profiles(s)}
    assert set(gpu) == {"worker-gpu"}
    for name, service in services().items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
        devices = devices.get("devices", [])
        if name in gpu:
            assert any(
                d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices
            ), f"{name}: reserves no NVIDIA GPU"
            assert set_env(service)[f"{ENV_PREFIX}DEVICE"] == "cuda"
            args = service["build"].get("args", {})
            assert re.fullmatch(r"onnxruntime-gpu\[cuda,cudnn\].*", args.get("CUDA_DEPS", ""))
        else:
            assert not devices, f"{name}: reserves a device outside the gpu profile"
    assert set_env(services()["worker"])[f"{ENV_PREFIX}DEVICE"] == "cpu"
    # The Dockerfile takes CUDA_DEPS (empty by default: a CPU image) and installs it.
    args = [rest for word, rest in dockerfile(WORKER_DOCKERFILE) if word == "ARG"]
    assert 'CUDA_DEPS=""' in args
    assert any("${CUDA_DEPS}" in cmd for cmd in pip_installs(WORKER_DOCKERFILE))


def test_prometheus_scrapes_every_worker_on_its_metrics_port() -> None:
    prometheus = services()["prometheus"]
    config_mounts = [
        (s, t) for s, t, ro in mounts(prometheus) if t == "/etc/prometheus/prometheus.yml"
    ]
    assert config_mounts, "prometheus.yml is not mounted"
    assert (ROOT / config_mounts[0][0]).resolve() == PROMETHEUS
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        (name, sd["port"])
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    for name, service in worker_services().items():
        port = int(set_env(service)[f"{ENV_PREFIX}METRICS_PORT"])
        names = {name}
        for net in (service.get("networks") or {}).values():
            names |= set((net or {}).get("aliases", []))
        assert ("worker", port) in targets, f"Prometheus does not scrape worker:{port}"
        assert "worker" in names, f"{name} is not reachable as `worker`"
        assert str(port) in [str(p) for p in service.get("expose", [])]
        assert f":{port}/health" in " ".join(service["healthcheck"]["test"])


def advertised(kafka: dict[str, Any]) -> set[str]:
    listeners = set_env(kafka)["KAFKA_ADVERTISED_LISTENERS"].split(",")
    return {listener.split("://", 1)[1] for listener in listeners}


def write_fake(path: Path, body: str) -> Path:
    """An executable `path` that runs the Python `body` (a bash wrapper: no long shebang)."""
    script = path.with_name(path.name + ".py")
    script.write_text(body)
    path.write_text(
        f'#!/usr/bin/env bash\nexec {shlex.quote(sys.executable)} {shlex.quote(str(script))} "$@"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


RECORDER = """import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def test_kafka_init_creates_the_workers_topics(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    init = services()["kafka-init"]
    assert init["image"] == services()["kafka"]["image"]
    assert entrypoint_of(init) == ["/bin/bash", "-c"]
    script = command_of(init)[0]
    tool = "/opt/kafka/bin/kafka-topics.sh"
    assert tool in script
    fake = write_fake(tmp_path / "kafka-topics.sh", RECORDER)
    log = tmp_path / "calls.jsonl"
    env = {**set_env(init), "PATH": os.environ["PATH"], "FAKE_LOG": str(log)}
    proc = subprocess.run(
        ["bash", "-c", script.replace(tool, str(fake))],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    created = {}
    for argv in calls:
        assert "--create" in argv
        assert "--if-not-exists" in argv
        assert option_value(argv, "--replication-factor") == "1"
        assert option_value(argv, "--bootstrap-server") in advertised(services()["kafka"])
        created[option_value(argv, "--topic")] = int(option_value(argv, "--partitions"))
    # The names the workers use (their RISKSTREAM_* settings), with `riskstream dev up`'s counts.
    for key, value in set_env(services()["worker"]).items():
        clean_env.setenv(key, value)
    assert created == dev_topics()


def test_workers_reach_this_stacks_kafka_and_redis() -> None:
    kafka_hosts = advertised(services()["kafka"])
    for name, service in worker_services().items():
        env = set_env(service)
        broker = env[f"{ENV_PREFIX}BROKER_URL"]
        assert broker.startswith("kafka://")
        assert set(broker.removeprefix("kafka://").split(",")) <= kafka_hosts, name
        redis_url = env[f"{ENV_PREFIX}REDIS_URL"]
        match = re.fullmatch(r"redis://([^:/]+):(\d+)/\d+", redis_url)
        assert match, f"{name}: {redis_url}"
        assert match.group(1) in services(), name
        assert match.group(2) == "6379", name


# --- the trainer --------------------------------------------------------------------------------

FAKE_RISKSTREAM = """import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] in os.environ.get("FAKE_FAIL", "").split(","):
    sys.exit(3)
def opt(name):
    return Path(args[args.index(name) + 1])
if args[0] == "simulate":
    opt("--out").mkdir(parents=True, exist_ok=True)
    for name in ("events", "labels", "feedback"):
        (opt("--out") / f"{name}.jsonl").write_text("{}\\n")
elif args[0] == "train":
    opt("--out").mkdir(parents=True, exist_ok=True)
elif args[0] == "export":
    opt("--out").mkdir(parents=True, exist_ok=True)
    (opt("--out") / "manifest.json").write_text("{}")
"""


def run_trainer(
    tmp_path: Path, **overrides: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """docker/trainer-entrypoint.sh with the trainer's compose environment, paths in tmp_path
    and a fake `riskstream` that records its arguments and writes what each step would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    write_fake(bin_dir / "riskstream", FAKE_RISKSTREAM)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    env = {
        **set_env(services()["trainer"]),
        "RISKSTREAM_BUNDLE": str(tmp_path / "bundles" / "current"),
        "RISKSTREAM_TRAIN_DATA": str(tmp_path / "data"),
        "RISKSTREAM_TRAIN_WORKDIR": str(tmp_path / "work"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(log),
        **overrides,
    }
    proc = subprocess.run(
        ["bash", str(ENTRYPOINT_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    for argv in calls:
        try:
            check_cli(argv)
        except typer.TyperException as exc:
            pytest.fail(f"trainer runs `riskstream {shlex.join(argv)}`: {exc.format_message()}")
    return proc, calls


def test_trainer_simulates_trains_and_exports_into_the_bundle(tmp_path: Path) -> None:
    proc, calls = run_trainer(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [argv[0] for argv in calls] == ["simulate", "train", "export"]
    simulate, train, export = calls
    env = set_env(services()["trainer"])
    assert option_value(simulate, "--users") == env["RISKSTREAM_TRAIN_USERS"]
    assert option_value(simulate, "--days") == env["RISKSTREAM_TRAIN_DAYS"]
    world = Path(option_value(simulate, "--out"))
    assert option_value(train, "--events") == str(world / "events.jsonl")
    assert option_value(train, "--labels") == str(world / "labels.jsonl")
    assert option_value(train, "--feedback") == str(world / "feedback.jsonl")
    assert option_value(train, "--preset") == env["RISKSTREAM_TRAIN_PRESET"]
    assert option_value(export, "--model") == option_value(train, "--out")
    assert option_value(export, "--out") == str(tmp_path / "bundles" / "current")
    assert {"--int8", "--force", "--fp16"} <= set(export)
    assert (tmp_path / "bundles" / "current" / "manifest.json").is_file()


def test_trainer_keeps_an_existing_bundle_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "bundles" / "current").mkdir(parents=True)
    (tmp_path / "bundles" / "current" / "manifest.json").write_text("{}")
    proc, calls = run_trainer(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert calls == []
    proc, calls = run_trainer(tmp_path, RISKSTREAM_TRAIN_FORCE="1", RISKSTREAM_TRAIN_FP16="0")
    assert proc.returncode == 0, proc.stderr
    assert [argv[0] for argv in calls] == ["simulate", "train", "export"]
    assert "--fp16" not in calls[-1]


def test_trainer_trains_on_mounted_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.jsonl").write_text("{}\n")
    (data / "feedback.jsonl").write_text("{}\n")
    proc, calls = run_trainer(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [argv[0] for argv in calls] == ["train", "export"]
    train = calls[0]
    assert option_value(train, "--events") == str(data / "events.jsonl")
    assert option_value(train, "--feedback") == str(data / "feedback.jsonl")
    assert "--labels" not in train  # not there: not passed


def test_trainer_stops_at_a_failed_step(tmp_path: Path) -> None:
    proc, calls = run_trainer(tmp_path, FAKE_FAIL="train")
    assert proc.returncode != 0
    assert [argv[0] for argv in calls] == ["simulate", "train"]
    assert not (tmp_path / "bundles" / "current").exists()


def test_trainer_variables_are_the_entrypoint_s_and_documented() -> None:
    script = ENTRYPOINT_SCRIPT.read_text()
    docs = DEPLOY_DOC.read_text()
    trainer_env = set(environment(services()["trainer"]))
    trainer_env |= env_keys(TRAINER_DOCKERFILE)
    for key in sorted(k for k in trainer_env if k.startswith(ENV_PREFIX)):
        assert "${" + key + ":-" in script, (
            f"{key} is set for the trainer but the script ignores it"
        )
    used = set(TRAINER_VAR.findall(script))
    assert used, "the script defines no RISKSTREAM_TRAIN_* variable"
    for key in sorted(used):
        assert key in docs, f"{key}: not documented in docs/deploy.md"
        assert key in trainer_env, f"{key}: the compose file does not set it"


# --- the images ---------------------------------------------------------------------------------


def test_worker_image_is_slim_torch_free_non_root_and_runs_riskstream() -> None:
    froms = [rest.split()[0] for word, rest in dockerfile(WORKER_DOCKERFILE) if word == "FROM"]
    assert froms
    assert all(image == "python:3.11-slim" for image in froms), froms
    installs = pip_installs(WORKER_DOCKERFILE)
    assert any(re.search(r"pip install \.(\s|$)", cmd) for cmd in installs), installs
    for cmd in installs:
        assert "torch" not in cmd, f"the worker image installs {cmd!r}"
        assert "[train" not in cmd, f"the worker image installs {cmd!r}"
    assert exec_form(WORKER_DOCKERFILE, "ENTRYPOINT") == ["riskstream"]
    assert user_of(WORKER_DOCKERFILE) not in ("", "root", "0")


def torch_pin(text: str) -> str:
    pins = set(re.findall(r"torch==([0-9][0-9.]*)", text))
    assert len(pins) == 1, pins
    return pins.pop()


def test_trainer_image_installs_the_train_extra_and_the_cpu_torch_pin() -> None:
    installs = pip_installs(TRAINER_DOCKERFILE)
    torch = [cmd for cmd in installs if "torch==" in cmd]
    assert len(torch) == 1
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch[0]
    pin = torch_pin((ROOT / "scripts" / "setup.sh").read_text())
    assert torch_pin(torch[0]) == pin
    assert torch_pin((ROOT / TRAINER_DOCKERFILE).read_text()) == pin  # comments included
    assert installs.index(torch[0]) < next(
        i for i, cmd in enumerate(installs) if '".[train]"' in cmd or "'.[train]'" in cmd
    ), "torch must be installed before .[train], or pip picks the CUDA build"
    text = (ROOT / TRAINER_DOCKERFILE).read_text()
    assert re.search(r"build time only", text, re.IGNORECASE)
    assert user_of(TRAINER_DOCKERFILE) not in ("", "root", "0")
    # The entrypoint is the script, copied from the repository.
    [entry] = exec_form(TRAINER_DOCKERFILE, "ENTRYPOINT")
    assert (["docker/trainer-entrypoint.sh"], entry) in copies(TRAINER_DOCKERFILE)


def test_trainer_and_workers_share_the_uid() -> None:
    # One owner for the shared bundles volume: the trainer writes (and replaces) bundles in
    # it, the workers read them; a uid mismatch is the usual way such volumes break.
    uid = user_of(WORKER_DOCKERFILE)
    assert uid.isdigit()
    assert user_of(TRAINER_DOCKERFILE) == uid
    for name, service in services().items():
        if dockerfile_of(service) is not None:
            assert str(service.get("user", uid)).split(":")[0] == uid, name


def test_images_copy_the_package_and_the_context_keeps_it() -> None:
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    needed = ["pyproject.toml", readme, *package_dirs()]
    for file in (WORKER_DOCKERFILE, TRAINER_DOCKERFILE, REVIEW_DOCKERFILE):
        sources = [src.rstrip("/") for srcs, _ in copies(file) for src in srcs]
        for path in needed:
            assert path in sources, f"{file} does not copy {path}"
        for src in sources:
            assert (ROOT / src).exists(), f"{file}: COPY {src}: no such path"
            assert not ignored(src), f"{file}: COPY {src}, which .dockerignore excludes"
    for folder in package_dirs():
        for path in files_under(folder):
            assert not ignored(path), f".dockerignore excludes {path}, part of the package"
    for path in ("pyproject.toml", readme, "config/rules.yaml", "docker/trainer-entrypoint.sh"):
        assert not ignored(path), path


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "out/demo/bundle/model.onnx",
        "runs/x/log.txt",
        "tests/unit/test_compose.py",
        "tests/data/events.jsonl",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache",
        "stream/__pycache__/app.cpython-311.pyc",
        "riskstream.egg-info/PKG-INFO",
        "data/world/events.jsonl",
        ".env",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert ignored(path)


# --- the review service and its database --------------------------------------------------------


def test_review_service_reads_this_stacks_kafka_and_postgres() -> None:
    """The review service: our image with the review extra, the stack's broker and PostgreSQL
    (the password from one variable, never on its command line), its console on the host's
    loopback only, started after the topics and a healthy database."""
    review, postgres = services()["review"], services()["postgres"]
    assert dockerfile_of(review) == REVIEW_DOCKERFILE
    installs = pip_installs(REVIEW_DOCKERFILE)
    assert any('".[review]"' in cmd for cmd in installs), installs
    assert not any("train" in cmd or "torch" in cmd for cmd in installs), installs
    assert exec_form(REVIEW_DOCKERFILE, "ENTRYPOINT") == ["riskstream"]
    assert user_of(REVIEW_DOCKERFILE) == user_of(WORKER_DOCKERFILE)
    check_cli(exec_form(REVIEW_DOCKERFILE, "CMD"))
    argv = command_of(review)
    assert option_value(argv, "--broker") == "kafka://kafka:19092"
    assert "kafka:19092" in advertised(services()["kafka"])
    assert not any("postgres" in arg or "password" in arg.lower() for arg in argv)
    env = set_env(review)
    pg_env = set_env(postgres)
    url = env["RISKSTREAM_DATABASE_URL"]
    assert url == (
        f"postgresql://{pg_env['POSTGRES_USER']}:{pg_env['POSTGRES_PASSWORD']}@postgres:5432/"
        f"{pg_env['POSTGRES_DB']}"
    )
    raw = raw_compose()
    assert (
        "${POSTGRES_PASSWORD:-"
        in raw["services"]["review"]["environment"]["RISKSTREAM_DATABASE_URL"]
    )
    assert (
        "${POSTGRES_PASSWORD:-" in raw["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    )
    assert review["ports"] == ["127.0.0.1:8470:8470"]
    assert option_value(argv, "--host") == "0.0.0.0"  # inside the container; published on loopback
    conditions = {t: spec["condition"] for t, spec in review["depends_on"].items()}
    assert conditions == {
        "kafka-init": "service_completed_successfully",
        "postgres": "service_healthy",
    }
    assert "healthcheck" in postgres
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    # The users file: mounted read-only where the command reads it.
    users = option_value(argv, "--users-file")
    assert any(v.endswith(f":{users.rsplit('/', 1)[0]}:ro") for v in review["volumes"])


def test_kafka_init_creates_the_review_topics() -> None:
    topics = dict(spec.split(":") for spec in set_env(services()["kafka-init"])["TOPICS"].split())
    settings = ReviewSettings(database_url="", bootstrap="")
    assert topics[settings.decisions_topic] == "4"
    assert topics[settings.dlq_topic] == "1"
    assert topics[settings.alerts_topic] == "4"


def test_the_decision_api_serves_the_workers_bundle_rules_and_redis() -> None:
    """`decide`: the same image, settings, bundle and rules as the workers (their windows), its
    keys from a read-only mount, published on the host's loopback only."""
    decide, worker = services()["decide"], services()["worker"]
    assert dockerfile_of(decide) == WORKER_DOCKERFILE
    assert decide["command"][:2] == ["decide", "serve"]
    check_cli(decide["command"])
    assert set_env(decide) == set_env(worker)
    mounts = [str(v) for v in decide["volumes"]]
    assert "bundles:/bundles:ro" in mounts
    assert "./config:/etc/riskstream:ro" in mounts
    keys = decide["command"][decide["command"].index("--keys-file") + 1]
    assert any(m.endswith(f":{Path(keys).parent}:ro") for m in mounts)
    assert decide["ports"] == ["127.0.0.1:8480:8480"]
