"""`riskstream export`: checkpoint → verified bundle folder (written atomically).

Verification runs on real windows of the checkpoint's validation users: FP32 ONNX against torch
(max |Δ probability| ≤ 1e-4 on the sequence model's probabilities, ≤ 1e-2 on the score served
through an ensemble's blend; else the export fails), INT8 and FP16 against FP32 (PR-AUC within
0.005 per head, probabilities within 1e-2 for FP16); a variant that fails is kept but marked
unusable in the manifest, and the loader never picks it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from events import ENCODING_VERSION, EncodingSpec, ModelInputs, windows_to_inputs
from events.aggregates import AGGREGATE_NAMES, window_aggregates
from events.trees import Blend, TreeModel
from events.window import Records
from export import graphs
from export.exceptions import ExportError, ParityError
from export.install import swap_in
from export.loader import cuda_present, make_session, run_session, score_windows
from export.manifest import (
    CPU_SPEED_KEY,
    CPU_VARIANTS,
    FILES,
    GBDT_FILE,
    GBDT_INPUT,
    INPUT_NAMES,
    OUTPUT_NAMES,
    VARIANT_FILES,
    Manifest,
    Variant,
    sha256_file,
)
from export.verify import VerificationSet, pr_auc_per_head, verification_set
from training.checkpoint import Checkpoint, load_checkpoint

__all__ = [
    "FP16_MAX_DIFF",
    "FP32_MAX_DIFF",
    "INT8_MAX_PR_AUC_DROP",
    "SERVED_MAX_DIFF",
    "ExportOptions",
    "export",
]

log = logging.getLogger(__name__)

FP32_MAX_DIFF: Final = 1e-4
INT8_MAX_PR_AUC_DROP: Final = 0.005
FP16_MAX_DIFF: Final = 1e-2
GBDT_MAX_DIFF: Final = 1e-3  # log-odds: float32 thresholds are exact, leaf sums round
#: The served score through the blend: a wiring check (right trees, right weights, right order)
#: on top of the strict FP32_MAX_DIFF on the sequence model's own probabilities.
SERVED_MAX_DIFF: Final = 1e-2


@dataclass(frozen=True)
class ExportOptions:
    """What `riskstream export` was asked for."""

    int8: bool = False
    fp16: bool = False
    events: Path | None = None  # verification data; default: the checkpoint's training data
    labels: Path | None = None
    feedback: Path | None = None
    windows: int = 2048  # parity windows (≥ 1,000)
    force: bool = False
    progress: bool = True


def _data_paths(ckpt: Checkpoint, options: ExportOptions) -> tuple[Path, Path | None, Path | None]:
    source = ckpt.meta.source
    if options.events is not None:
        return options.events, options.labels, options.feedback
    events = source.events
    if not events or not Path(events).is_file():
        raise ExportError(
            f"--events: the checkpoint's training events ({events}) are not there; "
            "pass --events (and --labels/--feedback) to verify on"
        )
    labels, feedback = source.labels, source.feedback
    return (
        Path(events),
        Path(labels) if labels and Path(labels).is_file() else None,
        Path(feedback) if feedback and Path(feedback).is_file() else None,
    )


@dataclass
class _Ensemble:
    """The checkpoint's trees and blend, and the trees' ONNX graph in the bundle being built."""

    trees: dict[str, TreeModel]
    blend: Blend
    graph: Path

    def raw(self, windows: list[Records], spec: EncodingSpec, onnx: bool) -> npt.NDArray[Any]:
        """The trees' log-odds per window: from the ONNX graph, or from the numpy trees."""
        x = np.concatenate([
            window_aggregates(*_arrays(windows_to_inputs(windows[i : i + 512], spec)))
            for i in range(0, len(windows), 512)
        ])  # fmt: skip
        if onnx:
            return np.asarray(make_session(self.graph).run(None, {GBDT_INPUT: x})[0])
        return np.stack([self.trees[h].predict_raw(x) for h in self.blend.weights], axis=1)

    def apply(
        self, probs: npt.NDArray[Any], windows: list[Records], spec: EncodingSpec, onnx: bool
    ) -> npt.NDArray[np.float32]:
        """The served scores: the model's `probs` blended with the trees'."""
        return self.blend.combine(probs, self.raw(windows, spec, onnx)).astype(np.float32)


def _arrays(inputs: ModelInputs) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    return inputs.features, inputs.attention_mask


def _probs(
    path: Path, windows: list[Records], spec: EncodingSpec, ens: _Ensemble | None = None
) -> npt.NDArray[np.float32]:
    session = make_session(path)
    probs = score_windows(lambda x: run_session(session, x), spec, windows)
    return probs if ens is None else ens.apply(probs, windows, spec, onnx=True)


def _speed(path: Path, windows: list[Records], spec: EncodingSpec, repeats: int = 3) -> float:
    """Windows/s of a graph on the verification windows, batch 256 (best of `repeats`)."""
    session = make_session(path)
    starts = range(0, min(1024, len(windows)), 256)
    inputs = [windows_to_inputs(windows[i : i + 256], spec) for i in starts]
    run_session(session, inputs[0])
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for x in inputs:
            run_session(session, x)
        best = min(best, time.perf_counter() - began)
    return sum(len(x.features) for x in inputs) / best


def _timed_on_cpu(
    variants: dict[str, Variant], folder: Path, vs: VerificationSet, spec: EncodingSpec
) -> dict[str, Variant]:
    """Each verified CPU graph's windows/s here (`CPU_SPEED_KEY`): the loader serves the
    fastest on a CPU (INT8 is not faster everywhere: it depends on the CPU's integer kernels)."""
    out = dict(variants)
    for name in CPU_VARIANTS:
        variant = variants.get(name)
        if variant is None or not variant.verified:
            continue
        wps = _speed(folder / variant.file, vs.windows, spec)
        out[name] = replace(variant, figures={**variant.figures, CPU_SPEED_KEY: round(wps)})
        log.info("%s: %.0f windows/s on this CPU at batch 256", name, wps)
    return out


def _torch_reference(ckpt: Checkpoint, vs: VerificationSet) -> npt.NDArray[np.float32]:
    # Batches in a shuffled order, padded to their own longest window: unlike the ONNX side
    # (length-sorted chunks), so padding differences are part of what parity checks.
    out = np.zeros((len(vs.windows), 2), dtype=np.float32)
    order = np.random.default_rng(0).permutation(len(vs.windows))
    for start in range(0, len(order), 256):
        idx = order[start : start + 256]
        inputs = windows_to_inputs([vs.windows[i] for i in idx], ckpt.spec)
        out[idx] = graphs.torch_probs(ckpt.model, inputs)
    return out


def _evaluation(model_dir: Path) -> dict[str, Any]:
    report = model_dir / "report.json"
    if not report.is_file():
        return {}
    data = json.loads(report.read_text())
    keep = ("pr_auc", "roc_auc", "threshold", "precision", "recall", "episode_recall")
    return {
        "heads": {h: {k: m.get(k) for k in keep} for h, m in data.get("heads", {}).items()},
        "baseline_pr_auc": {h: m.get("pr_auc") for h, m in data.get("baseline", {}).items()},
        "data": data.get("data", {}),
    }


def export(model_dir: Path, out: Path, options: ExportOptions = ExportOptions()) -> Manifest:
    """Export, verify and write the bundle; returns its manifest."""
    if out.exists() and any(out.iterdir()) and not options.force:
        raise ExportError(f"--out {out}: exists and is not empty (pass --force to replace it)")
    if options.windows < 1000:
        raise ExportError(f"--windows: {options.windows}; verification needs at least 1,000")
    ckpt = load_checkpoint(model_dir)
    log.info("export: verification data")
    vs = verification_set(
        ckpt,
        data=_data_paths(ckpt, options),
        windows=options.windows,
        progress=options.progress,
    )
    log.info(
        "%s parity windows (%d of length 1, %d full at %d); %s validation windows for PR-AUC",
        f"{len(vs.windows):,}",
        vs.length_one,
        vs.full,
        ckpt.policy.max_events,
        f"{len(vs.val_windows):,}",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp_dir:
        tmp = Path(tmp_dir)
        manifest = _build(ckpt, model_dir, tmp, vs, options)
        tmp.chmod(0o755)  # temporary folders are private; a worker may run as another user
        swap_in(tmp, out)  # an old bundle is swapped out, never missing (export.install)
        tmp.mkdir()  # TemporaryDirectory removes it again on exit
    return manifest


def _build(
    ckpt: Checkpoint, model_dir: Path, tmp: Path, vs: VerificationSet, options: ExportOptions
) -> Manifest:
    (tmp / FILES["spec"]).write_text(ckpt.spec.to_json() + "\n")
    (tmp / FILES["policy"]).write_text(ckpt.policy.to_json() + "\n")
    spec = ckpt.spec

    ens, ensemble = _ensemble(ckpt, tmp, vs)
    log.info("export: FP32 graph")
    fp32 = tmp / VARIANT_FILES["fp32"]
    graphs.export_fp32(ckpt.model, windows_to_inputs(vs.windows[:64], ckpt.spec), fp32)
    optimization = _maybe_fuse(ckpt, fp32, vs)
    # Parity is strict on what the graph computes; the blend then scales logits (by up to its
    # weight, and steeply near p = 1), so the served score gets a looser wiring check.
    reference = _torch_reference(ckpt, vs)
    graph_probs = _probs(fp32, vs.windows, spec, None)
    diff = float(np.abs(graph_probs - reference).max())
    log.info("FP32 ONNX vs torch: max |Δ probability| = %.2e (limit %.0e)", diff, FP32_MAX_DIFF)
    if not diff <= FP32_MAX_DIFF:
        raise ParityError(
            f"{fp32}: max |Δ probability| vs torch is {diff:.2e} > {FP32_MAX_DIFF:.0e}; "
            "the bundle was not written"
        )
    check = f"max |Δ prob| vs torch {diff:.2e} ≤ {FP32_MAX_DIFF:.0e} on {len(vs.windows)} windows"
    metrics: dict[str, Any] = {"max_abs_diff_vs_torch": diff, "windows": len(vs.windows)}
    fp32_probs = graph_probs
    if ens is not None:
        fp32_probs = ens.apply(graph_probs, vs.windows, spec, onnx=True)
        served = float(np.abs(fp32_probs - ens.apply(reference, vs.windows, spec, False)).max())
        log.info("served (blended) score vs torch + numpy trees: max |Δ| = %.2e", served)
        if not served <= SERVED_MAX_DIFF:
            raise ParityError(
                f"{fp32}: the blended score differs from torch + numpy trees by {served:.2e} > "
                f"{SERVED_MAX_DIFF:.0e}; the bundle was not written"
            )
        check += f"; blended score {served:.2e} ≤ {SERVED_MAX_DIFF:.0e}"
        metrics["max_abs_diff_served"] = served
    variants = {"fp32": Variant(VARIANT_FILES["fp32"], True, check, metrics)}
    if options.int8:
        log.info("export: INT8 graph")
        graphs.to_int8(fp32, tmp / VARIANT_FILES["int8"])
        val_fp32 = _probs(fp32, vs.val_windows, spec, ens)
        variants["int8"] = _check_int8(
            tmp / VARIANT_FILES["int8"], vs, val_fp32, fp32_probs, spec, ens
        )
    if options.fp16:
        log.info("export: FP16 graph")
        graphs.to_fp16(fp32, tmp / VARIANT_FILES["fp16"])
        variants["fp16"] = _check_fp16(tmp / VARIANT_FILES["fp16"], vs, fp32_probs, spec, ens)
    variants = _timed_on_cpu(variants, tmp, vs, spec)
    for name, variant in variants.items():
        log.info("%s: %s — %s", name, "usable" if variant.verified else "UNUSABLE", variant.check)

    files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.is_file()}
    created = datetime.now(UTC)
    inputs, outputs = _signature(ckpt)
    manifest = Manifest(
        model_version=f"{created:%Y%m%dT%H%M%SZ}-{files[VARIANT_FILES['fp32']][:12]}",
        created_at=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        encoding_version=ENCODING_VERSION,
        encoding_spec_hash=ckpt.spec.spec_hash,
        window=ckpt.policy.to_dict(),
        inputs=inputs,
        outputs=outputs,
        thresholds=ckpt.thresholds,
        files=files,
        opset=graphs.OPSET,
        variants=variants,
        source={
            "checkpoint": str(model_dir.resolve()),
            "step": ckpt.meta.step,
            "preset": ckpt.meta.train.preset,
            "model": ckpt.model_config.to_dict(),
            "verification_data": vs.source,
        },
        evaluation=_evaluation(model_dir),
        session_gap_s=ckpt.session_gap_s,
        optimization=optimization,
        ensemble=ensemble,
        calibration=ckpt.meta.calibration,
    )
    (tmp / "manifest.json").write_text(manifest.to_json())
    return manifest


def _ensemble(
    ckpt: Checkpoint, tmp: Path, vs: VerificationSet
) -> tuple[_Ensemble | None, dict[str, Any]]:
    """Write the trees' graph when the checkpoint ships a blend, checked against the numpy
    trees on the parity windows; returns the ensemble and its manifest entry."""
    if ckpt.blend is None or ckpt.trees is None:
        return None, {}
    log.info("export: the ensemble's GBDT graph")
    graph = tmp / GBDT_FILE
    graphs.gbdt_to_onnx(ckpt.trees, len(AGGREGATE_NAMES), graph)
    ens = _Ensemble(ckpt.trees, ckpt.blend, graph)
    diff = float(
        np.abs(ens.raw(vs.windows, ckpt.spec, True) - ens.raw(vs.windows, ckpt.spec, False)).max()
    )
    if not diff <= GBDT_MAX_DIFF:
        raise ParityError(
            f"{graph}: max |Δ log-odds| vs the numpy trees is {diff:.2e} > {GBDT_MAX_DIFF:.0e}; "
            "the bundle was not written"
        )
    log.info("GBDT ONNX vs numpy trees: max |Δ log-odds| = %.2e", diff)
    return ens, {
        "gbdt": GBDT_FILE,
        "blend": ckpt.blend.to_dict(),
        "check": f"max |Δ log-odds| vs the numpy trees {diff:.2e} ≤ {GBDT_MAX_DIFF:.0e} on "
        f"{len(vs.windows)} windows",
        "trees": {h: len(t.feature) for h, t in ckpt.trees.items()},
    }


def _signature(ckpt: Checkpoint) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The graph's inputs and outputs as the manifest records them."""
    channels = len(ckpt.model_config.vocab_sizes)
    inputs: list[dict[str, Any]] = [
        {"name": INPUT_NAMES[0], "dtype": "int64", "shape": ["batch", "events", channels]},
        {"name": INPUT_NAMES[1], "dtype": "int64", "shape": ["batch", "events"]},
    ]
    outputs: list[dict[str, Any]] = [
        {"name": n, "dtype": "float32", "shape": ["batch"]} for n in OUTPUT_NAMES
    ]
    return inputs, outputs


def _maybe_fuse(ckpt: Checkpoint, fp32: Path, vs: VerificationSet) -> dict[str, Any]:
    """Keep ONNX Runtime's transformer fusions only if they are faster here (measured)."""
    fused = fp32.with_suffix(".fused.onnx")
    cfg = ckpt.model_config
    try:
        stats = graphs.fuse_transformer(fp32, fused, cfg.heads, cfg.hidden)
        plain_wps = _speed(fp32, vs.windows, ckpt.spec)
        fused_wps = _speed(fused, vs.windows, ckpt.spec)
        keep = fused_wps > plain_wps * 1.05
        if keep:
            fused.replace(fp32)
        log.info(
            "transformer fusions %s: %.0f vs %.0f windows/s unfused at batch 256 → %s",
            stats,
            fused_wps,
            plain_wps,
            "kept" if keep else "not kept",
        )
        return {
            "transformer_fusions": stats,
            "windows_per_s_fused": round(fused_wps),
            "windows_per_s_unfused": round(plain_wps),
            "fusions_kept": keep,
        }
    finally:
        fused.unlink(missing_ok=True)


def _check_int8(
    path: Path,
    vs: VerificationSet,
    val_fp32: npt.NDArray[np.float32],
    fp32_probs: npt.NDArray[np.float32],
    spec: EncodingSpec,
    ens: _Ensemble | None,
) -> Variant:
    val_int8 = _probs(path, vs.val_windows, spec, ens)
    base = pr_auc_per_head(vs.val_y, val_fp32, vs.val_weight)
    mine = pr_auc_per_head(vs.val_y, val_int8, vs.val_weight)
    drops = {h: base[h] - mine[h] for h in base}
    diff = float(np.abs(_probs(path, vs.windows, spec, ens) - fp32_probs).max())
    ok = bool(drops) and all(d <= INT8_MAX_PR_AUC_DROP for d in drops.values())
    text = ", ".join(f"{h} {mine[h]:.4f} vs {base[h]:.4f}" for h in base) or "no positives"
    return Variant(
        path.name,
        ok,
        f"validation PR-AUC {text} (drop ≤ {INT8_MAX_PR_AUC_DROP} needed); max |Δ prob| {diff:.3f}",
        {"pr_auc": mine, "pr_auc_fp32": base, "max_abs_diff_vs_fp32": diff},
    )


def _check_fp16(
    path: Path,
    vs: VerificationSet,
    fp32_probs: npt.NDArray[np.float32],
    spec: EncodingSpec,
    ens: _Ensemble | None,
) -> Variant:
    provider = "CUDAExecutionProvider" if cuda_present() else "CPUExecutionProvider"
    try:
        session = make_session(path, provider)
        probs = score_windows(lambda x: run_session(session, x), spec, vs.windows)
        if ens is not None:
            probs = ens.apply(probs, vs.windows, spec, onnx=True)
        diff = float(np.abs(probs - fp32_probs).max())
    except Exception as exc:  # FP16 kernels may be missing on CPU
        return Variant(path.name, False, f"not verified on {provider}: {exc}", {})
    ran_on = session.get_providers()[0]
    ok = diff <= FP16_MAX_DIFF
    return Variant(
        path.name,
        ok,
        f"max |Δ prob| vs FP32 {diff:.2e} (≤ {FP16_MAX_DIFF:.0e} needed) on {ran_on}",
        {"max_abs_diff_vs_fp32": diff, "provider": ran_on},
    )
