"""`riskstream bench gpu`: the model on a GPU, per preset: CUDA verified, FP16 parity, windows/s.

For each preset the architecture is exported untrained (speed does not depend on the weights)
at the default window (N = 64), as FP32 and FP16 graphs, and run with ONNX Runtime's CUDA
provider on real windows of a small simulated world, batches padded to their longest window as
the worker does: the FP16 graph's largest |Δ probability| against FP32, and windows/s at batch
256, 1,024 and 4,096 for both. Where no CUDA device is usable it stops at once with one line
(`NoCudaError`): onnxruntime-gpu lists CUDA as available on any machine, and a session asked
for CUDA falls back to the CPU with only a log line, so the session's own providers are checked.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from events import EncodingSpec, encode_event, windows_to_inputs
from events.window import InMemoryWindowStore, Records, WindowPolicy, select_window
from export.loader import cuda_present, make_session, run_session
from riskstream.bench.core import BenchResult
from riskstream.bench.exceptions import NoCudaError

__all__ = ["GPU_BATCHES", "bench_gpu", "check_cuda", "require_cuda"]

GPU_BATCHES: Final = (256, 1024, 4096)
_CUDA: Final = "CUDAExecutionProvider"
_BUDGET_S: Final = 2.0


def require_cuda() -> None:
    """`NoCudaError` (one line) unless ONNX Runtime has CUDA and a device node is there."""
    import onnxruntime as ort

    if not cuda_present():
        raise NoCudaError(
            "bench gpu: no CUDA device here (onnxruntime providers: "
            f"{', '.join(ort.get_available_providers())}; no /dev/nvidiactl)"
        )


def check_cuda(graph: Path) -> str:
    """The provider a session on `graph` really got; `NoCudaError` unless it is CUDA."""
    import onnxruntime as ort

    require_cuda()
    got = make_session(graph, _CUDA).get_providers()
    if not got or got[0] != _CUDA:
        raise NoCudaError(f"bench gpu: a CUDA session fell back to {got[0] if got else 'none'}")
    return f"{got[0]} (onnxruntime {ort.__version__}, device {ort.get_device()})"


def _windows(spec: EncodingSpec, policy: WindowPolicy, users: int) -> list[Records]:
    from events import parse_event
    from simulator import WorldConfig, simulate_world

    with tempfile.TemporaryDirectory() as tmp:
        simulate_world(WorldConfig(users=users, days=1.0, seed=11), Path(tmp), progress=False)
        lines = (Path(tmp) / "events.jsonl").read_bytes().splitlines()
    store = InMemoryWindowStore(policy)
    out: list[Records] = []
    for line in lines:
        event = parse_event(line, now_ms=2**62)
        result = store.append(event.user_id, encode_event(event, spec))
        if not result.duplicate:
            out.append(select_window(result.stored, policy))
    return out


def _rate(session: Any, spec: EncodingSpec, windows: list[Records], batch: int) -> float:
    batches = [windows_to_inputs(windows[i : i + batch], spec)
               for i in range(0, len(windows) - batch + 1, batch)]  # fmt: skip
    run_session(session, batches[0])
    took, done, i = 0.0, 0, 0
    while took < _BUDGET_S or i < 3:
        x = batches[i % len(batches)]
        began = time.perf_counter()
        run_session(session, x)
        took += time.perf_counter() - began
        done += len(x.features)
        i += 1
    return done / took


def bench_gpu(
    presets: tuple[str, ...] = ("tiny", "small", "base"), users: int = 3000
) -> BenchResult:
    """Per preset: FP16 parity against FP32 on CUDA, windows/s at each of `GPU_BATCHES`."""
    require_cuda()  # before minutes of simulation and export
    import torch

    from export.graphs import export_fp32, to_fp16
    from training.model import EventBert, ModelConfig
    from training.presets import PRESETS

    spec, policy = EncodingSpec(), WindowPolicy()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        windows: list[Records] = []
        for preset in presets:
            torch.manual_seed(0)
            config = ModelConfig.for_spec(spec, **PRESETS[preset].model, max_len=policy.max_events)
            model = EventBert(config).eval()
            fp32, fp16 = work / f"{preset}-fp32.onnx", work / f"{preset}-fp16.onnx"
            if not windows:
                windows = _windows(spec, policy, users)
            export_fp32(model, windows_to_inputs(windows[:64], spec), fp32)
            if not notes:
                notes.append(f"provider: {check_cuda(fp32)}")
                notes.append(
                    f"{len(windows):,} real windows, N = {policy.max_events}, untrained "
                    "weights, batches padded to their longest window"
                )
            to_fp16(fp32, fp16)
            s32, s16 = make_session(fp32, _CUDA), make_session(fp16, _CUDA)
            parity = windows[: 4 * 1024]
            p32 = np.concatenate([run_session(s32, windows_to_inputs(parity[i : i + 1024], spec))
                                  for i in range(0, len(parity), 1024)])  # fmt: skip
            p16 = np.concatenate([run_session(s16, windows_to_inputs(parity[i : i + 1024], spec))
                                  for i in range(0, len(parity), 1024)])  # fmt: skip
            row: dict[str, Any] = {"preset": preset,
                                   "fp16_max_abs_diff": float(np.abs(p16 - p32).max())}  # fmt: skip
            for batch in GPU_BATCHES:
                row[f"fp32_b{batch}"] = _rate(s32, spec, windows, batch)
                row[f"fp16_b{batch}"] = _rate(s16, spec, windows, batch)
            rows.append(row)
    return BenchResult("gpu", rows, notes)
