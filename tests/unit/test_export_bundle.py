"""The exported bundle: verified at export, parity per variant, refused when tampered with."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from events import windows_to_inputs
from events.aggregates import window_aggregates
from events.window import Records
from export import (
    CorruptBundleError,
    HashMismatchError,
    IncompatibleBundleError,
    MissingFileError,
    UnsafePathError,
    load_bundle,
    read_manifest,
)
from export.build import FP16_MAX_DIFF, FP32_MAX_DIFF, INT8_MAX_PR_AUC_DROP, SERVED_MAX_DIFF
from export.loader import run_session, score_windows
from export.manifest import CPU_SPEED_KEY, CPU_VARIANTS, MANIFEST_FILE, Manifest, sha256_file
from export.verify import pr_auc_per_head

HEADS = ("fraud", "abnormal_click")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: Parity bound per variant against the torch model, on windows the export never saw.
#: INT8 is bounded by ranking quality (PR-AUC) at export; here by a loose probability bound.
BOUNDS = {"fp32": FP32_MAX_DIFF, "fp16": FP16_MAX_DIFF, "int8": 0.1}


class HeldOut(NamedTuple):
    """Windows of the test users (not the validation users export verified on), the
    checkpoint's own probabilities (torch), its served score (blended with its trees when it
    ships the ensemble) and the labels."""

    windows: list[Records]
    model: np.ndarray
    served: np.ndarray
    y: np.ndarray


@pytest.fixture(scope="module")
def held_out(tiny_model: Path, tiny_world: Path) -> HeldOut:
    """Includes length-1 and full-length windows."""
    from export.graphs import torch_probs
    from training.checkpoint import load_checkpoint
    from training.data import load_corpus
    from training.examples import batch_windows, build_examples, split_time

    ckpt = load_checkpoint(tiny_model)
    corpus = load_corpus(tiny_world / "events.jsonl", tiny_world / "labels.jsonl", progress=False)
    examples = build_examples(corpus, split_time(corpus, seed=0).check_users, ckpt.policy)
    windows = batch_windows(corpus, examples, np.arange(len(examples)))
    assert {1, ckpt.policy.max_events} <= {len(w) for w in windows}
    chunks = [
        windows_to_inputs(windows[i : i + 512], ckpt.spec) for i in range(0, len(windows), 512)
    ]
    probs = np.concatenate([torch_probs(ckpt.model, x) for x in chunks])
    served = probs
    if ckpt.blend is not None and ckpt.trees is not None:
        x = np.concatenate([window_aggregates(c.features, c.attention_mask) for c in chunks])
        raw = np.stack([ckpt.trees[h].predict_raw(x) for h in ckpt.blend.weights], axis=1)
        served = ckpt.blend.combine(probs, raw).astype(np.float32)
    return HeldOut(windows, probs, served, examples.y)


def test_export_verifies_every_variant_and_writes_the_manifest(
    tiny_bundle: Path, tiny_model: Path
) -> None:
    manifest = read_manifest(tiny_bundle)
    assert set(manifest.variants) == {"fp32", "int8", "fp16"}
    fp32 = manifest.variants["fp32"]
    assert fp32.verified
    assert fp32.figures["max_abs_diff_vs_torch"] <= FP32_MAX_DIFF
    assert fp32.figures["windows"] >= 1000
    int8 = manifest.variants["int8"]
    drops = [int8.figures["pr_auc_fp32"][h] - int8.figures["pr_auc"][h] for h in HEADS]
    assert int8.verified == all(d <= INT8_MAX_PR_AUC_DROP for d in drops)
    # FP16 is measured against FP32 here on the CPU (its kernels ran: the figure is there) and
    # marked usable exactly when within the limit; on the tiny model's blended scores it may not
    # be (a blend weight above 1 scales the model's rounding), and the loader then skips it.
    fp16 = manifest.variants["fp16"]
    assert fp16.verified == (fp16.figures["max_abs_diff_vs_fp32"] <= FP16_MAX_DIFF)
    # Each verified CPU graph was timed here (the loader serves the fastest); FP16 is not a CPU
    # graph and an unverified one is never timed.
    for name, variant in manifest.variants.items():
        timed = name in CPU_VARIANTS and variant.verified
        assert (CPU_SPEED_KEY in variant.figures) == timed, name
        if timed:
            assert variant.figures[CPU_SPEED_KEY] > 0
    for name, digest in manifest.files.items():
        assert sha256_file(tiny_bundle / name) == digest
    assert {"model.onnx", "model.int8.onnx", "model.fp16.onnx", "encoding_spec.json"} <= set(
        manifest.files
    )
    assert manifest.model_version.endswith(manifest.files["model.onnx"][:12])
    assert manifest.source["checkpoint"] == str(tiny_model.resolve())
    assert set(manifest.thresholds) == {"fraud", "abnormal_click"}
    assert manifest.evaluation["heads"]["fraud"]["pr_auc"] is not None
    assert [i["name"] for i in manifest.inputs] == ["features", "attention_mask"]
    assert manifest.window["max_events"] == 32
    assert manifest.opset >= 17


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_variant_parity_with_torch(tiny_bundle: Path, held_out: HeldOut, variant: str) -> None:
    bundle = load_bundle(tiny_bundle, "cpu", variant=variant)
    assert bundle.variant == variant
    # The variant's graph against torch, at its bound; then what the bundle serves (through the
    # blend, when it ships one), which for FP32 must stay within the export's wiring check.
    graph = score_windows(lambda x: run_session(bundle.session, x), bundle.spec, held_out.windows)
    assert graph.shape == held_out.model.shape
    assert float(np.abs(graph - held_out.model).max()) <= BOUNDS[variant]
    served = bundle.score_windows(held_out.windows)
    if variant == "fp32":
        assert float(np.abs(served - held_out.served).max()) <= SERVED_MAX_DIFF
    if variant == "int8":  # ranking quality on these held-out windows, too
        weight = np.ones(len(held_out.y))
        base = pr_auc_per_head(held_out.y, held_out.served, weight)
        mine = pr_auc_per_head(held_out.y, served, weight)
        assert all(base[h] - mine[h] <= 2 * INT8_MAX_PR_AUC_DROP for h in base), (base, mine)


def test_padding_and_batching_do_not_change_scores(tiny_bundle: Path, held_out: HeldOut) -> None:
    windows = held_out.windows[:300]
    bundle = load_bundle(tiny_bundle, "cpu", variant="fp32")
    sorted_chunks = bundle.score_windows(windows, max_batch=64)
    one_batch = bundle.predict(windows_to_inputs(windows, bundle.spec, pad_to=32))
    one_by_one = np.concatenate(
        [bundle.predict(windows_to_inputs([w], bundle.spec)) for w in windows]
    )
    assert np.abs(sorted_chunks - one_batch).max() <= 1e-5
    assert np.abs(sorted_chunks - one_by_one).max() <= 1e-5


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_prepared_inputs_score_as_chunk_by_chunk(
    tiny_bundle: Path, held_out: HeldOut, chunk: int
) -> None:
    # The worker builds a batch's inputs and aggregates in one pass, then cuts them into the
    # same length-sorted chunks that score_windows scored one by one before.
    windows = held_out.windows[:300]
    bundle = load_bundle(tiny_bundle, "cpu", variant="fp32")
    per_chunk = score_windows(bundle.predict, bundle.spec, windows, chunk)
    prepared = bundle.prepare_windows(windows, max_batch=chunk)
    assert len(prepared.chunks) == -(-len(windows) // chunk)
    assert np.abs(bundle.score_prepared(prepared) - per_chunk).max() <= 1e-6
    assert np.abs(bundle.score_windows(windows, max_batch=chunk) - per_chunk).max() <= 1e-6


def test_cpu_serves_the_verified_graph_export_measured_fastest(tiny_bundle: Path) -> None:
    manifest = read_manifest(tiny_bundle)
    timed = {k: v.figures[CPU_SPEED_KEY] for k, v in manifest.variants.items()
             if CPU_SPEED_KEY in v.figures}  # fmt: skip
    bundle = load_bundle(tiny_bundle, "cpu")
    assert bundle.variant == max(timed, key=lambda k: timed[k])
    assert bundle.provider == "CPUExecutionProvider"


# --- tampering: each way a bundle can be damaged is refused with its own error ---------------


def _rewrite_manifest(bundle: Path, edit: Callable[[dict[str, object]], None]) -> None:
    """Edit the manifest and re-seal it, as a forger who knows the format would."""
    data = json.loads((bundle / MANIFEST_FILE).read_text())
    data.pop("manifest_sha256")
    edit(data)
    variants = data.pop("variants")
    manifest = Manifest(**data, variants={})  # type: ignore[arg-type]
    body = manifest.content() | {"variants": variants}
    from export.manifest import _canonical_hash

    (bundle / MANIFEST_FILE).write_text(
        json.dumps({**body, "manifest_sha256": _canonical_hash(body)})
    )


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _append_space(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b" ")


def _garbage_graph_resealed(bundle: Path) -> None:
    (bundle / "model.onnx").write_bytes(b"not an onnx graph")
    digest = sha256_file(bundle / "model.onnx")
    _rewrite_manifest(bundle, lambda d: d["files"].__setitem__("model.onnx", digest))  # type: ignore[attr-defined]


def _fewer_channels_resealed(bundle: Path) -> None:
    """The fp32 graph as an older version would have written it: one input channel fewer."""
    import onnx

    model = onnx.load(str(bundle / "model.onnx"))
    dim = model.graph.input[0].type.tensor_type.shape.dim[2]
    dim.dim_value = dim.dim_value - 1
    onnx.save(model, str(bundle / "model.onnx"))
    digest = sha256_file(bundle / "model.onnx")
    _rewrite_manifest(bundle, lambda d: d["files"].__setitem__("model.onnx", digest))  # type: ignore[attr-defined]


TAMPERS: dict[str, tuple[Callable[[Path], None], type[Exception], str]] = {
    "fp32 graph edited": (lambda b: _flip_byte(b / "model.onnx"), HashMismatchError, "model.onnx"),
    "int8 graph edited": (
        lambda b: _flip_byte(b / "model.int8.onnx"),
        HashMismatchError,
        "model.int8.onnx",
    ),
    "fp16 graph edited": (
        lambda b: _flip_byte(b / "model.fp16.onnx"),
        HashMismatchError,
        "model.fp16.onnx",
    ),
    "spec edited": (
        lambda b: _append_space(b / "encoding_spec.json"),
        HashMismatchError,
        "encoding_spec.json",
    ),
    "window edited": (
        lambda b: _append_space(b / "window_policy.json"),
        HashMismatchError,
        "window_policy.json",
    ),
    "graph deleted": (lambda b: (b / "model.onnx").unlink(), MissingFileError, "model.onnx"),
    "manifest deleted": (lambda b: (b / MANIFEST_FILE).unlink(), MissingFileError, "manifest"),
    "manifest not JSON": (
        lambda b: (b / MANIFEST_FILE).write_text("{"),
        CorruptBundleError,
        "manifest",
    ),
    "threshold edited in the manifest": (
        lambda b: (b / MANIFEST_FILE).write_text(
            (b / MANIFEST_FILE).read_text().replace('"fraud": 0.', '"fraud": 0.0', 1)
        ),
        CorruptBundleError,
        "manifest_sha256",
    ),
    "newer bundle format": (
        lambda b: _rewrite_manifest(b, lambda d: d.__setitem__("format_version", 99)),
        IncompatibleBundleError,
        "format_version",
    ),
    "older encoding": (
        lambda b: _rewrite_manifest(b, lambda d: d.__setitem__("encoding_version", 2)),
        IncompatibleBundleError,
        "encoding version 2",
    ),
    "graph ONNX Runtime cannot load": (_garbage_graph_resealed, CorruptBundleError, "model.onnx"),
    "graph for other input channels": (
        _fewer_channels_resealed,
        IncompatibleBundleError,
        "model.onnx.*input channels",
    ),
    "manifest names ../x.onnx": (
        lambda b: _point_fp32_at(b, "../x.onnx"),
        UnsafePathError,
        r"'\.\./x\.onnx'",
    ),
    "manifest names a subfolder": (
        lambda b: _point_fp32_at(b, "sub/x.onnx"),
        UnsafePathError,
        "'sub/x.onnx'",
    ),
    "manifest names an absolute path": (
        lambda b: _point_fp32_at(b, str(b.parent / "x.onnx")),
        UnsafePathError,
        "absolute",
    ),
    "a listed file is a symlink out of the bundle": (
        lambda b: _symlink_out(b, "model.onnx"),
        UnsafePathError,
        "model.onnx.*leads outside",
    ),
    "a variant's file is not listed": (
        lambda b: _rewrite_manifest(b, lambda d: d["files"].pop("model.int8.onnx")),  # type: ignore[attr-defined]
        CorruptBundleError,
        "int8.*model.int8.onnx.*not listed",
    ),
}


def _point_fp32_at(bundle: Path, name: str) -> None:
    """The fp32 variant moved to `name` (the graph copied there when that is possible, outside
    the bundle), the manifest re-sealed to list it with its true sha256."""
    target = bundle / name if not Path(name).is_absolute() else Path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle / "model.onnx", target)
    digest = sha256_file(target)

    def edit(d: dict[str, object]) -> None:
        files = d["files"]
        assert isinstance(files, dict)
        files[name] = digest

    _rewrite_manifest(bundle, edit)
    data = json.loads((bundle / MANIFEST_FILE).read_text())
    data["variants"]["fp32"]["file"] = name
    data.pop("manifest_sha256")
    from export.manifest import _canonical_hash

    (bundle / MANIFEST_FILE).write_text(
        json.dumps({**data, "manifest_sha256": _canonical_hash(data)})
    )


def _symlink_out(bundle: Path, name: str) -> None:
    """`name` replaced by a symlink to an identical copy outside the bundle (hash unchanged)."""
    outside = bundle.parent / f"outside-{name}"
    shutil.copyfile(bundle / name, outside)
    (bundle / name).unlink()
    (bundle / name).symlink_to(outside)


@pytest.mark.parametrize("case", list(TAMPERS), ids=list(TAMPERS))
def test_tampered_bundle_is_refused(tiny_bundle: Path, tmp_path: Path, case: str) -> None:
    tamper, error, names = TAMPERS[case]
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    load_bundle(copy, "cpu", variant="fp32")  # intact: loads
    tamper(copy)
    with pytest.raises(error, match=names):
        load_bundle(copy, "cpu", variant="fp32")


def test_a_graph_swapped_after_verification_is_not_loaded(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check-then-open gap: the fp32 graph is replaced by another valid graph (the int8
    one) right after `verify_bundle` passed. The session is made from the bytes that were
    hashed, so the swap is caught, never loaded as the verified fp32 graph."""
    import export.loader as loader

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    verify = loader.verify_bundle

    def verify_then_swap(path: Path) -> Manifest:
        manifest = verify(path)
        shutil.copyfile(path / "model.int8.onnx", path / "model.onnx")
        return manifest

    monkeypatch.setattr(loader, "verify_bundle", verify_then_swap)
    with pytest.raises(HashMismatchError, match=r"model\.onnx"):
        load_bundle(copy, "cpu", variant="fp32")
