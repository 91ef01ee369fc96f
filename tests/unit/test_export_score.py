"""Offline scoring, the torch-free loader, evaluate on a bundle, the export CLI and its bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from export import ParityError, load_bundle
from export.score import score_file
from riskstream.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_score_equals_direct_inference_on_the_trainers_windows(
    tiny_bundle: Path, tiny_world: Path, tmp_path: Path
) -> None:
    from training.data import load_corpus
    from training.examples import batch_windows, build_examples

    bundle = load_bundle(tiny_bundle, "cpu", variant="fp32")
    out = tmp_path / "scores.jsonl"
    summary = score_file(bundle, tiny_world / "events.jsonl", out, progress=False)
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert summary.scored == len(rows) == summary.lines > 10_000
    assert set(rows[0]) == {"event_id", "user_id", "ts", "fraud", "abnormal_click"}

    # The trainer's windows (sorted history + window_slices) scored in one go, by event id.
    corpus = load_corpus(
        tiny_world / "events.jsonl", spec=bundle.spec, progress=False, event_ids=True
    )
    examples = build_examples(corpus, np.arange(len(corpus.users)), bundle.policy)
    probs = bundle.score_windows(batch_windows(corpus, examples, np.arange(len(examples))))
    event_ids = [
        corpus.users[u].event_ids[e - 1]
        for u, e in zip(examples.user_index.tolist(), examples.end.tolist(), strict=True)
    ]
    direct = dict(zip(event_ids, probs.tolist(), strict=True))
    assert len(direct) == len(rows)
    worst = max(
        max(
            abs(r["fraud"] - direct[r["event_id"]][0]),
            abs(r["abnormal_click"] - direct[r["event_id"]][1]),
        )
        for r in rows
    )
    # Only batching differs; an ensemble bundle's float32 tree sums follow the batch, and the
    # blend scales the rounding: within the bundle's FP32 parity bound.
    assert worst <= 1e-4


def test_score_counts_refused_and_redelivered_events(tiny_bundle: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    good = {"event_id": "e1", "user_id": "u1", "ts": "2026-11-02T10:00:00Z", "type": "click"}
    lines = [
        json.dumps(good),
        json.dumps(good),  # redelivered
        json.dumps({**good, "event_id": "e2", "ts": "not a time"}),
        "{broken",
        json.dumps({**good, "event_id": "e3", "ts": "2026-11-02T10:00:01Z"}),
    ]
    events.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.jsonl"
    summary = score_file(load_bundle(tiny_bundle, "cpu"), events, out, progress=False)
    assert (summary.lines, summary.scored, summary.refused, summary.duplicates) == (5, 2, 2, 1)
    assert [orjson.loads(x)["event_id"] for x in out.read_bytes().splitlines()] == ["e1", "e3"]


def test_score_writes_no_bar_frames_when_stderr_is_not_a_terminal(
    tiny_bundle: Path, tiny_world: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # progress asked for, stderr captured (not a terminal): no \r frames, the summary line only
    argv = ["score", "--bundle", str(tiny_bundle), "--events", str(tiny_world / "events.jsonl"),
            "--out", str(tmp_path / "scores.jsonl")]  # fmt: skip
    assert main(argv) == 0
    captured = capfd.readouterr()
    assert "\r" not in captured.err
    assert "\r" not in captured.out
    assert "scored " in captured.out


_TORCH_FREE = """
import sys
from pathlib import Path
from export import load_bundle
from riskstream.cli import main
bundle = load_bundle(Path(sys.argv[1]), "cpu")
assert bundle.score_windows([]).shape == (0, 2)
assert main(["score", "--bundle", sys.argv[1], "--events", sys.argv[2], "--out", sys.argv[3],
             "--quiet"]) == 0
assert "torch" not in sys.modules, "the loader or score imported torch"
print("ok", bundle.variant)
"""


def test_loader_and_score_run_without_torch(
    tiny_bundle: Path, tiny_world: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _TORCH_FREE,
            str(tiny_bundle),
            str(tiny_world / "events.jsonl"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].startswith("ok")
    assert out.stat().st_size > 0


def test_evaluate_accepts_a_bundle(tiny_bundle: Path, tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval" / "report.json"
    code = main(
        ["evaluate", "--model", str(tiny_bundle), "--events", str(tiny_world / "events.jsonl"),
         "--labels", str(tiny_world / "labels.jsonl"), "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["evaluation"]["scored_by"].startswith("bundle ")
    assert report["heads"]["fraud"]["pr_auc"] > 0.5


def test_export_fails_loudly_when_fp32_parity_fails(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from export import graphs
    from export.build import ExportOptions, export

    real = graphs.torch_probs
    monkeypatch.setattr(graphs, "torch_probs", lambda m, x: real(m, x) + 1e-3)
    out = tmp_path / "bundle"
    with pytest.raises(ParityError, match=r"max \|Δ probability\|"):
        export(tiny_model, out, ExportOptions(windows=1000, progress=False))
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "--out", "x"], "Missing option '--model'"),
        (["export", "--model", "/nonexistent", "--out", "x"], "--model"),
        (["export", "--model", ".", "--out", "x", "--windows", "10"], "--windows"),
        (["score", "--bundle", "/tmp", "--events", "/nonexistent", "--out", "x"], "--events"),
    ],
)
def test_export_cli_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:")
    assert message in err
    assert "Traceback" not in err
    assert len(err.splitlines()) <= 2


def test_score_cli_refuses_a_folder_that_is_not_a_bundle(
    tmp_path: Path, tiny_world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["score", "--bundle", str(tmp_path), "--events",
                 str(tiny_world / "events.jsonl"), "--out", str(tmp_path / "s.jsonl")])  # fmt: skip
    assert code == 1
    assert "manifest.json: missing" in capsys.readouterr().err


def test_bench_times_every_engine_and_batch(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riskstream.bench import bundle as bench

    monkeypatch.setattr(bench, "_BUDGET_S", 0.05)
    result = bench.bench_bundle(tiny_bundle, progress=False, users=300)
    engines = {r["engine"] for r in result.rows}
    assert {"torch eager (CPU)", "ORT FP32 (CPU)", "ORT INT8 (CPU)"} <= engines
    assert {r["batch"] for r in result.rows} == set(bench.BATCH_SIZES)
    assert all(r["windows_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in result.rows)
    bench.render_bench(result, tmp_path)
    assert "| ORT INT8 (CPU) | 256 |" in (tmp_path / "bundle.md").read_text()


def test_int8_quantises_a_fused_graph_too(tiny_model: Path, tmp_path: Path) -> None:
    # The export keeps ONNX Runtime's fusions when they measure faster; the quantiser must
    # then cope with com.microsoft ops (it once failed on their missing shape types).
    from events import CHANNELS, ModelInputs
    from export import graphs
    from export.loader import make_session, run_session
    from training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_model)
    rng = np.random.default_rng(0)
    x = ModelInputs(
        rng.integers(2, 5, (4, 16, len(CHANNELS))).astype(np.int64), np.ones((4, 16), np.int64)
    )
    graphs.export_fp32(ckpt.model, x, tmp_path / "m.onnx")
    fused = graphs.fuse_transformer(
        tmp_path / "m.onnx", tmp_path / "f.onnx", ckpt.model_config.heads, ckpt.model_config.hidden
    )
    assert fused.get("SkipLayerNormalization", 0) > 0
    graphs.to_int8(tmp_path / "f.onnx", tmp_path / "q.onnx")
    fp32 = run_session(make_session(tmp_path / "f.onnx"), x)
    int8 = run_session(make_session(tmp_path / "q.onnx"), x)
    assert np.abs(fp32 - int8).max() < 0.1
