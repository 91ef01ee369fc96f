"""Secrets from the environment or a file, never only from the command line: `--redis-url-file`
and `RISKSTREAM_SASL_PASSWORD_FILE` are read, a missing one is a one-line error naming it, and
the tools (`replay`, `alerts tail`) read the same broker SSL/SASL settings as the worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskstream.cli import main
from riskstream.tools.common import kafka_security
from riskstream.tools.exceptions import ToolError
from stream.cli import load_settings
from stream.kafka_clients import kafka_config


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "manifest.json").write_text(
        "{}", encoding="utf-8"
    )  # load_settings checks it is there
    return folder


def _use_url_file(
    text: str, bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point the worker's settings at `bundle_dir` and a Redis URL file holding `text`."""
    secret = tmp_path / "url"
    secret.write_text(text, encoding="utf-8")
    monkeypatch.setenv("RISKSTREAM_BUNDLE", str(bundle_dir))
    monkeypatch.setenv("RISKSTREAM_REDIS_URL_FILE", str(secret))


def test_redis_url_file_is_read(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKSTREAM_REDIS_URL", "redis://other:6379/0")  # the file wins over it
    _use_url_file("redis+cluster://:hunter2@10.0.0.7:7000/0\n", bundle_dir, tmp_path, monkeypatch)
    settings = load_settings()
    assert settings.redis_url.get_secret_value() == "redis+cluster://:hunter2@10.0.0.7:7000/0"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


@pytest.mark.parametrize("flag", ["--redis-url-file"])
def test_missing_url_file_is_one_line_naming_it(
    flag: str,
    bundle_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `worker` writes its flags into os.environ: monkeypatch restores these afterwards.
    for name in ("REDIS_URL_FILE", "BUNDLE", "BROKER_URL", "REDIS_URL"):
        monkeypatch.setenv(f"RISKSTREAM_{name}", "unset")
    missing = tmp_path / "nope" / "url"
    code = main(["worker", "--processes", "1", "--bundle", str(bundle_dir), flag, str(missing)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert err == f"error: --redis-url-file {missing}: No such file or directory"


def test_empty_url_file_is_refused(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream.exceptions import SettingsError

    _use_url_file("\n", bundle_dir, tmp_path, monkeypatch)
    with pytest.raises(SettingsError, match=r"^--redis-url-file .*: the file is empty$"):
        load_settings()


def test_worker_help_says_where_secrets_go(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--redis-url-file" in out
    assert "RISKSTREAM_REDIS_URL" in out
    assert "--redis-cluster" in out


def test_tools_read_the_workers_sasl_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = tmp_path / "sasl"
    password.write_text("s3cret\n", encoding="utf-8")

    def security_args() -> dict[str, object]:
        config = kafka_config("kafka://h:1", kafka_security(), "kafka-python")
        assert config.pop("bootstrap_servers") == ["h:1"]
        return config

    assert security_args() == {}  # plaintext by default
    monkeypatch.setenv("RISKSTREAM_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RISKSTREAM_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("RISKSTREAM_SASL_USERNAME", "svc")
    monkeypatch.setenv("RISKSTREAM_SASL_PASSWORD_FILE", str(password))
    assert security_args() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
    }
    monkeypatch.setenv("RISKSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    assert security_args()["ssl_context"] is not None


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (
            {"RISKSTREAM_SASL_PASSWORD_FILE": "/nonexistent/sasl"},
            "--sasl-password-file /nonexistent/sasl",
        ),
        ({"RISKSTREAM_SECURITY_PROTOCOL": "TLS"}, "RISKSTREAM_SECURITY_PROTOCOL"),
    ],
)
def test_bad_tool_security_settings_are_one_line(
    env: dict[str, str],
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ToolError, match=needle):
        kafka_security()
    events = tmp_path / "e.jsonl"
    events.write_text("{}\n", encoding="utf-8")
    code = main(["replay", "--events", str(events), "--broker", "kafka://127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert needle in err
