"""Load a model bundle without torch: verify it, pick the execution provider, score windows."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from events import (
    CHANNELS,
    ENCODING_VERSION,
    EncodingSpec,
    IncompatibleSpec,
    ModelInputs,
    WindowPolicy,
    windows_to_inputs,
)
from events.aggregates import window_aggregates
from events.trees import Blend
from events.window import Records
from export.exceptions import (
    BundleError,
    CorruptBundleError,
    HashMismatchError,
    IncompatibleBundleError,
    MissingFileError,
    UnsafePathError,
)
from export.manifest import (
    CPU_SPEED_KEY,
    CPU_VARIANTS,
    FILES,
    GBDT_INPUT,
    INPUT_NAMES,
    MANIFEST_FILE,
    OUTPUT_NAMES,
    VARIANT_FILES,
    Manifest,
    Variant,
    read_manifest,
    sha256_file,
)

__all__ = [
    "Bundle",
    "Device",
    "PreparedWindows",
    "bundle_member",
    "cuda_present",
    "default_variant",
    "load_bundle",
    "make_session",
    "prepare_windows",
    "read_spec_and_policy",
    "read_verified",
    "run_session",
    "score_windows",
    "verify_bundle",
]

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
_CUDA: Final = "CUDAExecutionProvider"
_CPU: Final = "CPUExecutionProvider"


def bundle_member(bundle: Path, name: str) -> Path:
    """The file `name` of the bundle folder, refused (`UnsafePathError`, naming it) unless it is
    a plain name inside the folder: no `/` or `\\`, no `.` or `..`, not absolute, and no
    symlink that leads out of the folder. Bundles are flat: every file sits at the top."""
    where = f"{bundle / MANIFEST_FILE}: file {name!r}"
    if Path(name).is_absolute():
        raise UnsafePathError(f"{where} is an absolute path, outside the bundle")
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UnsafePathError(f"{where} is not a plain file name inside the bundle")
    file = bundle / name
    try:
        inside = file.resolve().is_relative_to(bundle.resolve())
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise UnsafePathError(f"{where} cannot be resolved ({exc})") from exc
    if not inside:
        raise UnsafePathError(f"{where} leads outside the bundle (a symlink to {file.resolve()})")
    return file


def read_verified(bundle: Path, manifest: Manifest, name: str) -> bytes:
    """The bytes of the bundle's file `name`, read once and checked against the manifest's
    sha256: whoever uses them (ONNX Runtime, the JSON parser) gets exactly the bytes that were
    hashed, so a file swapped after the check cannot be loaded unverified."""
    digest = manifest.files.get(name)
    if digest is None:
        raise CorruptBundleError(f"{bundle / name}: the manifest does not list it")
    file = bundle_member(bundle, name)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"{file}: listed in the manifest but missing") from None
    except IsADirectoryError:
        raise CorruptBundleError(f"{file}: a folder, not a file") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise HashMismatchError(f"{file}: sha256 differs from the manifest (changed or damaged)")
    return data


def verify_bundle(path: Path) -> Manifest:
    """The manifest, after checking every listed file's name (inside the bundle), presence and
    sha256, that the graphs it names are listed, and the encoding."""
    manifest = read_manifest(path)
    for name, digest in manifest.files.items():
        file = bundle_member(path, name)
        if not file.is_file():
            raise MissingFileError(f"{file}: listed in the manifest but missing")
        if sha256_file(file) != digest:
            raise HashMismatchError(
                f"{file}: sha256 differs from the manifest (changed or damaged)"
            )
    for required in (*FILES.values(), VARIANT_FILES["fp32"]):
        if required not in manifest.files:
            raise CorruptBundleError(f"{path / required}: the manifest does not list it")
    for key, variant in manifest.variants.items():
        if variant.file not in manifest.files:
            raise CorruptBundleError(
                f"{path / MANIFEST_FILE}: variant {key}'s file {variant.file!r} is not listed "
                "with its sha256"
            )
    if manifest.encoding_version != ENCODING_VERSION:
        raise IncompatibleBundleError(
            f"{path / FILES['spec']}: encoding version {manifest.encoding_version}, "
            f"this code encodes version {ENCODING_VERSION}; re-export from a model trained on it"
        )
    return manifest


def cuda_present() -> bool:
    # The GPU build lists CUDA as available on any machine; a device node says one is there.
    return _CUDA in ort.get_available_providers() and os.path.exists("/dev/nvidiactl")


def make_session(
    model: Path | bytes,
    provider: str = _CPU,
    threads: int | None = None,
    spin: bool = True,
    *,
    where: Path | None = None,
) -> ort.InferenceSession:
    """An ONNX Runtime session on `provider` (CPU as fallback); bad graph: `CorruptBundleError`.

    `model`: a graph file, or its bytes (`where` names the file in errors); a bundle's graphs
    are passed as the bytes that were checked against the manifest (`read_verified`).

    `spin=False`: intra-op threads sleep between operators instead of busy-waiting, which is
    faster where the cores are shared (the worker's consumer, a broker or Redis beside it).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a CPU fallback is logged by us, once
    if threads is not None:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [provider, _CPU] if provider != _CPU else [_CPU]
    source = model if isinstance(model, bytes) else str(model)
    name = where if where is not None else ("<bytes>" if isinstance(model, bytes) else model)
    try:
        return ort.InferenceSession(source, options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/… types, all Exception
        raise CorruptBundleError(f"{name}: ONNX Runtime cannot load it ({exc})") from exc


@dataclass
class Bundle:
    """A verified bundle, ready to score: `predict` on model inputs, `score_windows` on windows."""

    path: Path
    manifest: Manifest
    spec: EncodingSpec
    policy: WindowPolicy
    variant: str
    provider: str
    session: ort.InferenceSession
    gbdt: ort.InferenceSession | None = None  # the ensemble's trees (CPU), when it has one
    blend: Blend | None = None

    @property
    def model_version(self) -> str:
        """What alerts carry."""
        return self.manifest.model_version

    @property
    def thresholds(self) -> dict[str, float]:
        """Alert threshold per head."""
        return self.manifest.thresholds

    def predict(self, inputs: ModelInputs) -> npt.NDArray[np.float32]:
        """Probabilities [B, 2] (fraud, abnormal_click) for one padded batch: the sequence
        model's, blended with the trees' on the window aggregates when the bundle has them."""
        return self._predict(inputs, None)

    def _predict(
        self, inputs: ModelInputs, aggregates: npt.NDArray[np.float32] | None
    ) -> npt.NDArray[np.float32]:
        probs = run_session(self.session, inputs)
        if self.gbdt is None or self.blend is None or len(probs) == 0:
            return probs
        x = (
            aggregates
            if aggregates is not None
            else window_aggregates(inputs.features, inputs.attention_mask)
        )
        raw = self.gbdt.run(None, {GBDT_INPUT: x})[0]
        return self.blend.combine(probs, raw).astype(np.float32)

    def prepare_windows(self, windows: Sequence[Records], max_batch: int = 256) -> PreparedWindows:
        """The model inputs (and window aggregates, for a bundle with trees) of `windows`, ready
        for `score_prepared`: the numpy part of `score_windows`, which holds the GIL."""
        trees = self.gbdt is not None and self.blend is not None
        return prepare_windows(self.spec, windows, max_batch, aggregates=trees)

    def score_prepared(self, prepared: PreparedWindows) -> npt.NDArray[np.float32]:
        """Probabilities [count, 2], in the windows' order: the ONNX part of `score_windows`
        (ONNX Runtime releases the GIL while it runs)."""
        out = np.zeros((prepared.count, len(OUTPUT_NAMES)), dtype=np.float32)
        lo = 0
        for inputs, aggregates in prepared.chunks:
            hi = lo + len(inputs.features)
            out[prepared.order[lo:hi]] = self._predict(inputs, aggregates)
            lo = hi
        return out

    def score_windows(
        self, windows: Sequence[Records], max_batch: int = 256
    ) -> npt.NDArray[np.float32]:
        """Probabilities [len(windows), 2], in the windows' order (see `score_windows`; the
        same chunks, their inputs built in one pass: `prepare_windows`)."""
        return self.score_prepared(self.prepare_windows(windows, max_batch))


def run_session(session: ort.InferenceSession, inputs: ModelInputs) -> npt.NDArray[np.float32]:
    """Probabilities [B, 2] from a bundle graph for one padded batch."""
    if len(inputs.features) == 0:
        return np.zeros((0, len(OUTPUT_NAMES)), dtype=np.float32)
    feed = {INPUT_NAMES[0]: inputs.features, INPUT_NAMES[1]: inputs.attention_mask}
    outputs = session.run(list(OUTPUT_NAMES), feed)
    return np.stack([np.asarray(o, dtype=np.float32) for o in outputs], axis=1)


#: `prepare_windows` builds the inputs of at most about this many windows at once (bounds
#: the padded [rows, longest, channels] int64 array on big offline batches).
_PREPARE_ROWS: Final = 8192


@dataclass(frozen=True)
class PreparedWindows:
    """Windows turned into model inputs ahead of the model run: length-sorted chunks of at most
    `max_batch`, each padded to its own longest window, as `score_windows` cuts them."""

    count: int  # windows
    order: npt.NDArray[np.int64]  # the chunks' rows, end to end → the windows' positions
    # (inputs, window aggregates or None when the bundle has no trees) per chunk
    chunks: tuple[tuple[ModelInputs, npt.NDArray[np.float32] | None], ...]


def prepare_windows(
    spec: EncodingSpec,
    windows: Sequence[Records],
    max_batch: int = 256,
    *,
    aggregates: bool = False,
) -> PreparedWindows:
    """`score_windows`' chunks of `windows`, their inputs (and aggregates) built for many
    chunks in one numpy pass and then cut: a window's inputs and aggregates depend neither on
    the other windows nor on the padding, and the per-call numpy overheads, paid per chunk of
    64 before, were most of their cost on the worker's batches."""
    if max_batch < 1:
        raise ValueError(f"max_batch: {max_batch}; at least 1")
    lengths = np.fromiter((len(w) for w in windows), np.int64, len(windows))
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    chunks: list[tuple[ModelInputs, npt.NDArray[np.float32] | None]] = []
    step = max(max_batch, _PREPARE_ROWS // max_batch * max_batch)  # whole chunks per pass
    for start in range(0, len(order), step):
        rows = order[start : start + step]
        full = windows_to_inputs([windows[i] for i in rows], spec)
        aggs = window_aggregates(full.features, full.attention_mask) if aggregates else None
        for lo in range(0, len(rows), max_batch):
            hi = min(lo + max_batch, len(rows))
            width = int(sorted_lengths[start + hi - 1])  # the chunk's longest (sorted)
            inputs = ModelInputs(
                np.ascontiguousarray(full.features[lo:hi, :width]),
                np.ascontiguousarray(full.attention_mask[lo:hi, :width]),
            )
            chunks.append((inputs, None if aggs is None else aggs[lo:hi]))
    return PreparedWindows(len(order), order, tuple(chunks))


def score_windows(
    predict: Callable[[ModelInputs], npt.NDArray[np.float32]],
    spec: EncodingSpec,
    windows: Sequence[Records],
    max_batch: int = 256,
) -> npt.NDArray[np.float32]:
    """Probabilities [len(windows), 2], in the windows' order.

    Windows are scored in length-sorted chunks, each padded to its own longest window:
    padding is wasted work, and the model's output does not depend on it.
    """
    out = np.zeros((len(windows), len(OUTPUT_NAMES)), dtype=np.float32)
    order = np.argsort(
        np.fromiter((len(w) for w in windows), np.int64, len(windows)), kind="stable"
    )
    for start in range(0, len(order), max_batch):
        idx = order[start : start + max_batch]
        out[idx] = predict(windows_to_inputs([windows[i] for i in idx], spec))
    return out


def default_variant(variants: Mapping[str, Variant], cuda: bool) -> str:
    """The graph served when none is named: on a GPU FP16 if verified, else FP32; on a CPU
    the verified graph export measured fastest (`CPU_SPEED_KEY`), INT8 first where a bundle
    has no such figure. Unverified graphs are never chosen."""
    usable = {k: v for k, v in variants.items() if v.verified}
    if cuda:
        return next((k for k in ("fp16", "fp32") if k in usable), "fp32")
    cpu = [k for k in CPU_VARIANTS if k in usable]
    speeds = [usable[k].figures.get(CPU_SPEED_KEY) for k in cpu]
    if cpu and all(isinstance(s, int | float) and s > 0 for s in speeds):
        return max(cpu, key=lambda k: float(usable[k].figures[CPU_SPEED_KEY]))
    return cpu[0] if cpu else "fp32"


def _choose(manifest: Manifest, device: Device, variant: str | None) -> tuple[str, str]:
    if device not in ("auto", "cpu", "cuda"):
        raise BundleError(f"device: {device!r} is not one of auto, cpu, cuda")
    cuda = device == "cuda" or (device == "auto" and cuda_present())
    if variant is None:
        variant = default_variant(manifest.variants, cuda)
    if variant not in manifest.variants:
        raise BundleError(
            f"variant: the bundle has no {variant!r} (has {sorted(manifest.variants)})"
        )
    return variant, _CUDA if cuda else _CPU


def read_spec_and_policy(path: Path, manifest: Manifest) -> tuple[EncodingSpec, WindowPolicy]:
    """A verified bundle's encoding spec and window policy (each file hashed as it is read)."""
    try:
        spec_text = read_verified(path, manifest, FILES["spec"]).decode("utf-8")
        spec = EncodingSpec.from_json(spec_text)
        policy_bytes = read_verified(path, manifest, FILES["policy"])
        policy = WindowPolicy.from_dict(_json_object(policy_bytes, path / FILES["policy"]))
    except UnicodeDecodeError as exc:
        raise CorruptBundleError(f"{path / FILES['spec']}: not UTF-8 ({exc})") from exc
    except IncompatibleSpec as exc:
        raise IncompatibleBundleError(f"{path}: {exc}") from exc
    if spec.spec_hash != manifest.encoding_spec_hash:
        raise CorruptBundleError(
            f"{path / FILES['spec']}: its hash is not the manifest's spec hash"
        )
    return spec, policy


def load_bundle(
    path: str | Path,
    device: Device = "auto",
    *,
    variant: str | None = None,
    threads: int | None = None,
    spin: bool = True,
) -> Bundle:
    """Verify a bundle folder and open its best usable graph for this machine.

    `device="auto"` takes the GPU when there is one (the FP16 graph if it passed verification,
    else FP32), else the CPU (INT8 if it passed, else FP32); `variant` forces a graph.
    Each refusal is a `BundleError` subclass naming the file.
    """
    path = Path(path)
    manifest = verify_bundle(path)
    spec, policy = read_spec_and_policy(path, manifest)
    name, provider = _choose(manifest, device, variant)
    if not manifest.variants[name].verified:
        log.warning(
            "bundle %s: variant %s did not pass verification; using it as asked", path, name
        )
    model = path / manifest.variants[name].file
    graph = read_verified(path, manifest, manifest.variants[name].file)  # hashed: then used
    session = make_session(graph, provider, threads, spin, where=model)
    _check_io(session, model)
    actual = session.get_providers()[0]
    if actual != provider:
        log.warning("bundle %s: %s unavailable, running on %s", path, provider, actual)
    gbdt, blend = _ensemble(path, manifest, threads, spin)
    log.info("bundle %s (model %s): %s graph on %s%s", path, manifest.model_version, name, actual,
             " with its GBDT" if gbdt is not None else "")  # fmt: skip
    return Bundle(path, manifest, spec, policy, name, actual, session, gbdt, blend)


def _ensemble(
    path: Path, manifest: Manifest, threads: int | None, spin: bool
) -> tuple[ort.InferenceSession | None, Blend | None]:
    """The ensemble's trees and blend, when the manifest names them (else both None)."""
    if not manifest.ensemble:
        return None, None
    try:
        name = str(manifest.ensemble["gbdt"])
        blend = Blend.from_dict(manifest.ensemble["blend"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptBundleError(f"{path / MANIFEST_FILE}: ensemble: {exc}") from exc
    if name not in manifest.files:
        raise CorruptBundleError(f"{path / name}: the ensemble's trees are not in the manifest")
    if list(blend.weights) != list(OUTPUT_NAMES):
        raise CorruptBundleError(
            f"{path / MANIFEST_FILE}: ensemble.blend heads {list(blend.weights)}, "
            f"the graph's are {list(OUTPUT_NAMES)}"
        )
    graph = read_verified(path, manifest, name)
    return make_session(graph, _CPU, threads, spin, where=path / name), blend


def _json_object(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorruptBundleError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CorruptBundleError(f"{path}: must be a JSON object")
    return data


def _check_io(session: ort.InferenceSession, model: Path) -> None:
    inputs = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    if inputs != INPUT_NAMES or outputs != OUTPUT_NAMES:
        raise CorruptBundleError(
            f"{model}: inputs {inputs} and outputs {outputs}, expected {INPUT_NAMES} → "
            f"{OUTPUT_NAMES}"
        )
    shape = session.get_inputs()[0].shape  # [batch, events, channels]
    channels = shape[-1] if shape else None
    if channels != len(CHANNELS):
        raise IncompatibleBundleError(
            f"{model}: the graph takes {channels} input channels, this code encodes "
            f"{len(CHANNELS)} ({', '.join(CHANNELS)}): export the bundle again from a model "
            "trained with this version"
        )
