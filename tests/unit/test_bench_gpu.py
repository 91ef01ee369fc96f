"""`scripts/bench-gpu.sh` and `riskstream bench gpu` where there is no GPU: one line, exit 1.

On a machine with a CUDA device these checks do not apply (the script would run for real)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from export.loader import cuda_present
from riskstream.bench import gpu
from riskstream.bench.exceptions import NoCudaError

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(cuda_present(), reason="a CUDA device is here")


def test_the_script_stops_at_once_with_one_line() -> None:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "bench-gpu.sh")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 1
    assert len(lines) == 1, lines
    assert "no CUDA device here" in lines[0]


def test_a_session_that_falls_back_to_the_cpu_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if a device node were there: the CUDA session itself is what is checked.
    monkeypatch.setattr(gpu, "cuda_present", lambda: True)
    graph = tmp_path / "identity.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=9,  # what this onnxruntime reads
    )
    onnx.save(model, str(graph))
    with pytest.raises(NoCudaError, match="fell back to CPUExecutionProvider"):
        gpu.check_cuda(graph)


def test_require_cuda_names_the_providers() -> None:
    with pytest.raises(NoCudaError, match=r"onnxruntime providers: .*CPUExecutionProvider"):
        gpu.require_cuda()
