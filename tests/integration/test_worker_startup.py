"""Start-up mistakes: the real `riskstream worker` (a real broker answering) refuses each in one
line on stderr and exit code 1, before any worker process starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from riskstream.localstack import TansuBroker, find_free_port

pytestmark = pytest.mark.integration

GOOD_RULES = (
    "rules:\n  - id: burst\n    alert: fraud\n    all:\n"
    "      - {types: [login_failed], at_least: 3}\n"
)


def _worker(
    broker: TansuBroker, bundle: Path, redis_url: str, rules: Path | None
) -> subprocess.CompletedProcess[str]:
    args = ["--processes", "1", "--bundle", str(bundle), "--broker", f"kafka://{broker.bootstrap}"]
    if rules is not None:
        args += ["--rules", str(rules)]
    return subprocess.run(
        [sys.executable, "-m", "riskstream", "worker", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "RISKSTREAM_REDIS_URL": redis_url},
    )


def _one_line(proc: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    for part in parts:
        assert part in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_redis_nobody_answers_at_is_one_line_naming_the_address_not_the_password(
    kafka_broker: TansuBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    port = find_free_port()
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD_RULES)
    proc = _worker(kafka_broker, tiny_bundle, f"redis://:hunter2@127.0.0.1:{port}/0", rules)
    _one_line(proc, f"cannot reach Redis at 127.0.0.1:{port}")
    assert "hunter2" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("edit", ["manifest", "graph"])
def test_a_bundle_edited_after_export_is_refused_naming_the_file(
    kafka_broker: TansuBroker, tiny_bundle: Path, redis_url: str, tmp_path: Path, edit: str
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    if edit == "manifest":  # a hash edited by hand: the manifest's own hash no longer matches
        manifest = orjson.loads((bundle / "manifest.json").read_bytes())
        manifest["files"]["model.onnx"] = "0" * 64
        (bundle / "manifest.json").write_bytes(orjson.dumps(manifest))
        named, why = bundle / "manifest.json", "manifest_sha256 does not match"
    else:  # a graph changed after export
        with (bundle / "model.onnx").open("ab") as f:
            f.write(b"\0")
        named, why = bundle / "model.onnx", "sha256 differs from the manifest"
    _one_line(_worker(kafka_broker, bundle, redis_url, None), "bundle refused", str(named), why)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("rules: [\n  - id: x\n", "not valid YAML at line 2", id="yaml-syntax"),
        pytest.param(None, "no such file", id="missing"),
        pytest.param(
            "rules:\n  - id: x\n    alert: nope\n", "rule x.alert: must be one of", id="bad-key"
        ),
    ],
)
def test_a_bad_or_missing_rules_file_is_one_line_naming_it(
    kafka_broker: TansuBroker,
    tiny_bundle: Path,
    redis_url: str,
    tmp_path: Path,
    text: str | None,
    expected: str,
) -> None:
    rules = tmp_path / "rules.yaml"
    if text is not None:
        rules.write_text(text)
    _one_line(_worker(kafka_broker, tiny_bundle, redis_url, rules), str(rules), expected)
