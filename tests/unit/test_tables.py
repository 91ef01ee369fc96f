"""Tables and headers a person reads fold long values at 80 columns instead of cutting them
with `…`: what was asked for and not shown is no help."""

from __future__ import annotations

import ast
import io
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rich.console import Console

if TYPE_CHECKING:
    from export.manifest import Manifest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("events", "training", "export", "stream", "riskstream")
LONG = "postgresql://riskstream@a-rather-long-host-name.internal.example:54321/riskstream_reviews"


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=80, color_system=None, legacy_windows=False), buf


def _squashed(text: str) -> str:
    """The rendered text without box characters, spaces and line breaks: a folded value is
    whole again when its pieces sit in the same column on consecutive lines."""
    return "".join(ch for ch in text if not ch.isspace() and ch not in "│┃┏┓┗┛┡┩└┘━─┌┐╇╈┼┬┴╷╵")


def _column(text: str, index: int) -> str:
    """The pieces of column `index` (0-based) of a boxed table's body, joined."""
    pieces = []
    for line in text.splitlines():
        cells = line.split("│")
        if len(cells) > index + 2:
            pieces.append(cells[index + 1].strip())
    return "".join(pieces)


def _rendered_manifest(manifest: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """What `export.cli` prints for a bundle with `manifest`, checked to have no cut value."""
    import export.cli

    (tmp_path / "manifest.json").write_text(manifest.to_json())
    console, buf = _console()
    monkeypatch.setattr(export.cli, "_out", console)
    export.cli._render_manifest(tmp_path)
    text = buf.getvalue()
    assert "…" not in text
    return text


def test_every_table_column_folds_and_none_refuses_to_wrap() -> None:
    bad = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr != "add_column":
                    continue
                kw = {k.arg: k.value for k in node.keywords}
                fold = isinstance(kw.get("overflow"), ast.Constant) and (
                    kw["overflow"].value == "fold"  # type: ignore[union-attr]
                )
                if not fold or "no_wrap" in kw:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, f"add_column without overflow='fold' (or with no_wrap): {bad}"


def test_dev_status_shows_long_urls_whole() -> None:
    from riskstream.dev.cli import status_table
    from riskstream.dev.stack import PartStatus
    from riskstream.stackstate import ServiceRecord

    parts = [
        PartStatus(
            "broker", ServiceRecord("tansu", "kafka://127.0.0.1:19092", pid=4242), True, False
        ),
        PartStatus("postgres", ServiceRecord("external", LONG), True, True),
    ]
    console, buf = _console()
    console.print(status_table(parts, Path("/tmp/a/rather/long/path/to/the/state/dev.json")))
    text = buf.getvalue()
    assert "…" not in text
    assert LONG in _column(text, 2)
    assert "alive, notlistening" in _column(text, 4)
    assert "PostgreSQL (RISKSTREAM_DATABASE_URL)".replace(" ", "") in _column(text, 1)
    assert "/tmp/a/rather/long/path/to/the/state/dev.json" in _squashed(text)


def test_the_manifest_table_shows_each_verification_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from export.manifest import Manifest, Variant

    check = "max |Δ prob| vs torch 3.1e-07 ≤ 1e-04 on 1000 windows; " * 3
    manifest = Manifest(
        model_version="20261102T090000Z-3f9a0c1d2e4b", created_at="t", encoding_version=1,
        encoding_spec_hash="h", window={}, inputs=[], outputs=[], thresholds={}, files={},
        opset=17, variants={"int8": Variant("model.int8.onnx", True, check)}, source={},
        evaluation={},
    )  # fmt: skip
    text = _rendered_manifest(manifest, tmp_path, monkeypatch)
    assert _squashed(check) in _squashed(text)
    assert "model.int8.onnx" in _column(text, 1)


def test_the_demo_summary_and_step_headers_are_never_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import riskstream.demo.run as run
    from riskstream.demo.summary import Scorecard

    console, buf = _console()
    monkeypatch.setattr(run, "_out", console)
    title = "pretrain and fine-tune the tiny BERT (held-out: events after the test cut)"
    run.step_header(console, 2, title)
    out = Path("/tmp/a-long-demo-output-folder/with/several/levels/below/it/demo")
    card = Scorecard(Counter({"fraud": 9, "abnormal_click": 14}), {"card_testing": (3, 4)}, 900, 2)
    run.render(run.DemoResult(card, 12_000, 0, 2000.0, 0.01, 0.2, [], out))
    text = buf.getvalue()
    assert "…" not in text
    assert _squashed(title) in _squashed(text)
    assert _squashed(f"{out}/timeline.png") in _squashed(text)


def test_alerts_tail_folds_long_user_ids() -> None:
    from riskstream.tools.alerts import alerts_table

    user = "u-" + "0123456789abcdef" * 4
    alert = {"detected_at": "2026-11-02T18:42:07.402Z", "user_id": user, "type": "abnormal_click",
             "severity": "critical", "score": 0.97, "threshold": 0.81, "reasons": []}  # fmt: skip
    console, buf = _console()
    console.print(alerts_table([alert]))
    text = buf.getvalue()
    assert "…" not in text
    assert user in _column(text, 1)
    assert "abnormal_click" in _column(text, 2)


def test_the_manifest_shows_its_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from events.calibration import HeadCalibration
    from export.manifest import Manifest, Variant

    fraud = HeadCalibration(0.97, 0.9, 3, {"all": {"alerts": 40, "precision": 0.9}})
    manifest = Manifest(
        model_version="v", created_at="t", encoding_version=1, encoding_spec_hash="h",
        window={}, inputs=[], outputs=[], thresholds={}, files={}, opset=17,
        variants={"fp32": Variant("model.onnx", True, "ok")}, source={}, evaluation={},
        calibration={"fraud": fraud.to_dict(), "abnormal_click": HeadCalibration().to_dict()},
    )  # fmt: skip
    text = _rendered_manifest(manifest, tmp_path, monkeypatch)
    assert "≥ 0.97" in _column(text.split("Severity")[1], 1)
    assert "never" in _column(text.split("Severity")[1], 1)  # abnormal_click: no cut
    assert "40cases,90%true" in _column(text.split("Severity")[1], 4).replace(" ", "")
