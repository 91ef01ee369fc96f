"""The `riskstream` command: subcommands listed, bad arguments get one line, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from riskstream.command import main


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("simulate", "demo", "bench", "serve"):
        assert command in out


def test_serve_is_the_decision_api(capsys: pytest.CaptureFixture[str]) -> None:
    """`riskstream serve` is `riskstream decide serve`: the same options, the same checks."""
    assert main(["serve", "--help"]) == 0
    assert "--keys-file" in capsys.readouterr().out
    assert main(["serve", "--http", "h3"]) == 1
    err = capsys.readouterr().err
    assert "--http" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["simulate", "--users", "0", "--out", "x"], 2, "--users"),
        (["simulate", "--days", "two", "--out", "x"], 2, "--days"),
        (["simulate", "--out", "x", "--attack-share", "0.9"], 2, "--attack-share"),
        (["simulate"], 2, "--out"),
        (["simulate", "--out", "x", "--no-attack", "bogus"], 1, "bogus"),
        (["frobnicate"], 2, "frobnicate"),
    ],
)
def test_bad_arguments_give_one_line(
    argv: list[str],
    code: int,
    needle: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert len(err.splitlines()) == 1, err
    assert needle in err
    assert not (tmp_path / "x").exists(), "a refused command must not write anything"


def test_console_script_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "riskstream", "simulate", "--users", "-3", "--out", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")


@pytest.mark.parametrize("where", ["missing_parent", "unwritable", "existing_file"])
def test_bad_output_paths_give_one_line_naming_the_path(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = {
        "missing_parent": Path("/proc/riskstream-nope/world"),  # /proc refuses new folders
        "unwritable": Path("/proc/version/world"),  # a file's child: never creatable
        "existing_file": afile,
    }[where]
    argv = ["simulate", "--users", "40", "--days", "0.05", "--quiet", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: ")
    assert "Traceback" not in err
    assert err.count("\n") == 1


def _writers(tmp: Path) -> dict[str, list[str]]:
    """Every writing command, with inputs that would fail in their own way had the command
    started work: refusing `--out` first is what shows the check comes before any reading."""
    junk = tmp / "junk.jsonl"
    junk.write_text("not json\n")
    folder = tmp / "not-a-model"
    folder.mkdir()
    return {
        "simulate": ["simulate", "--users", "40", "--days", "0.05", "--quiet"],
        "train": ["train", "--events", str(junk), "--labels", str(junk), "--quiet"],
        "pretrain": ["pretrain", "--events", str(junk), "--quiet"],
        "evaluate": ["evaluate", "--model", str(folder), "--events", str(junk),
                     "--labels", str(junk), "--quiet"],
        "export": ["export", "--model", str(folder), "--quiet"],
        "score": ["score", "--bundle", str(folder), "--events", str(junk), "--quiet"],
        "labels export": ["labels", "export", "--from-topic", "--broker", "127.0.0.1:1"],
        "demo": ["demo", "--users", "40"],
        "bench parse": ["bench", "parse", "--events", str(junk)],
    }  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [
        *["simulate", "train", "pretrain", "evaluate", "export", "score"],
        "labels export",
        "demo",
        "bench parse",
    ],
)
def test_every_writing_command_checks_its_output_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = "/proc/riskstream-nope/out.jsonl"
    assert main([*_writers(tmp_path)[command], "--out", out]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {out}: cannot write in /proc (No such file or directory)\n"


def test_noisy_libraries_log_warnings_only_unless_verbose() -> None:
    import logging

    from riskstream.cli import NOISY_LOGGERS

    assert main(["--help"]) == 0
    assert all(logging.getLogger(n).getEffectiveLevel() == logging.WARNING for n in NOISY_LOGGERS)
    assert main(["--verbose", "simulate", "--help"]) == 0
    assert logging.getLogger("kafka").level == logging.NOTSET


def test_simulate_warns_when_a_label_has_too_few_episodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--users", "300", "--days", "1", "--quiet", "--out", str(tmp_path / "w")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: abnormal_click: 0 episodes in 300 users" in err
    assert "fraud" not in err  # it has enough


def test_train_refuses_a_head_without_positives_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = tmp_path / "w"
    assert main(["simulate", "--users", "300", "--days", "1", "--quiet", "--out", str(world)]) == 0
    capsys.readouterr()
    out = tmp_path / "model"
    data = ["--events", str(world / "events.jsonl"), "--labels", str(world / "labels.jsonl")]
    argv = ["train", *data, "--out", str(out), "--preset", "tiny", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "abnormal_click has 0 positive events to fit on and 0 to choose its threshold on" in err
    assert "--force" in err
    assert err.count("\n") == 1
    assert not out.exists(), "a refused run writes nothing"


def test_train_force_goes_on_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np

    from training.examples import ExampleSet
    from training.exceptions import TrainingError
    from training.train import Examples, check_positives

    def examples(y: list[list[float]]) -> ExampleSet:
        n = len(y)
        zeros = np.zeros(n, dtype=np.int32)
        return ExampleSet(zeros, zeros, zeros + 1, np.array(y, dtype=np.float32),
                          np.full((n, 2), -1, dtype=np.int32), np.ones(n, dtype=np.float32),
                          np.zeros(n, dtype=np.int64))  # fmt: skip

    def sets(fit: ExampleSet, choose: ExampleSet) -> Examples:
        return Examples(fit, choose, choose, choose, fit, fit, labelled_users=1, reference=fit)

    fit = examples([[1, 0], [0, 1], [0, 0]])
    choose = examples([[1, 0], [0, 0]])  # no abnormal_click positive to choose a threshold on
    with pytest.raises(TrainingError, match="abnormal_click has 1 positive events to fit on and 0"):
        check_positives(sets(fit, choose), force=False)
    with caplog.at_level("WARNING", logger="training.train"):
        check_positives(sets(fit, choose), force=True)
    assert "abnormal_click has 1 positive events" in caplog.text
    assert "--force" in caplog.text
    check_positives(sets(fit, fit), force=False)  # positives everywhere: no complaint


def test_worker_with_no_broker_answering_says_so_in_one_line(tmp_path: Path) -> None:
    import os

    from riskstream.localstack import find_free_port

    port = find_free_port()  # nobody listens on it
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")  # the broker check comes before the bundle's
    env = {**os.environ, "RISKSTREAM_REDIS_URL": "redis://127.0.0.1:1/0"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "riskstream",
            "worker",
            "--processes",
            "1",
            "--bundle",
            str(bundle),
            "--broker",
            f"kafka://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: cannot reach the broker at 127.0.0.1:{port}")
    assert proc.stderr.count("\n") == 1, proc.stderr


def test_progress_bars_stay_out_of_logs(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # Progress asked for (no --quiet), stderr not a terminal: no bar frames, the summary stays.
    argv = ["simulate", "--users", "40", "--days", "0.05", "--out", str(tmp_path / "w")]
    assert main(argv) == 0
    captured = capfd.readouterr()
    assert "\r" not in captured.err + captured.out
    assert "events" in captured.out


def test_bench_quality_refuses_a_bad_training_setting_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "quality", "--out", str(tmp_path / "q"), "--set"]
    assert main([*args, "threshold_transfer=median"]) == 2
    err = capsys.readouterr().err
    assert "threshold_transfer: 'median' is not one of quantile, refit, pooled, none" in err
    assert "Traceback" not in err
    assert not (tmp_path / "q" / "worlds").exists()  # refused before any world is simulated
