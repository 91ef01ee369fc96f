"""Make the bundle's graphs: torch → ONNX FP32, the transformer-fused candidate, INT8, FP16.

Needs torch (the training extra); the loader never imports this module.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
import torch
from torch import nn

from events import ModelInputs
from export.exceptions import ExportError
from export.manifest import INPUT_NAMES, OUTPUT_NAMES
from training.model import EventBert

__all__ = ["OPSET", "export_fp32", "fuse_transformer", "to_fp16", "to_int8"]

log = logging.getLogger(__name__)

OPSET: Final = 17


@contextmanager
def _quiet_root() -> Iterator[None]:
    """ONNX Runtime's fusion and quantisation tools log chatter on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Served(nn.Module):
    """What the graph computes: one probability vector per head (sigmoid inside)."""

    def __init__(self, model: EventBert) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, features: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.model(features, attention_mask)  # [B, 2]
        return probs[:, 0], probs[:, 1]


def export_fp32(model: EventBert, example: ModelInputs, out: Path) -> None:
    """Trace `model` on `example` (a real, padded batch) into `out`, dynamic batch and length."""
    served = _Served(model).eval()  # eval() here too: export restores the wrapper's mode
    args = (torch.from_numpy(example.features), torch.from_numpy(example.attention_mask))
    axes: dict[str, dict[int, str]] = {
        INPUT_NAMES[0]: {0: "batch", 1: "events"},
        INPUT_NAMES[1]: {0: "batch", 1: "events"},
        **{name: {0: "batch"} for name in OUTPUT_NAMES},
    }
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in torch 2.9+ but still the one whose graphs
        # ONNX Runtime's fusions know; its advanced-indexing notice is about negative indices,
        # which the last-position gather never uses.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            torch.onnx.export(
                served,
                args,
                str(out),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        except Exception as exc:  # the exporter raises many types
            raise ExportError(f"{out}: torch.onnx.export failed ({exc})") from exc
    model.eval()
    onnx.checker.check_model(str(out))


def fuse_transformer(src: Path, out: Path, heads: int, hidden: int) -> dict[str, int]:
    """ONNX Runtime's BERT fusions (attention, skip-LayerNorm, bias-GELU); the fused op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings(), _quiet_root():
        warnings.simplefilter("ignore")
        optimized = optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden)
    with _quiet_root():
        optimized.save_model_to_file(str(out))
    stats: dict[str, int] = optimized.get_fused_operator_statistics()
    return {k: int(v) for k, v in stats.items() if v}


def to_int8(src: Path, out: Path) -> None:
    """Dynamic INT8: MatMul weights quantised per tensor, activations at run time.

    Only MatMul: quantising the embedding Gathers too was slower here and gained nothing.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_suffix(".pre.onnx")
    try:
        with _quiet_root():
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(
                str(prepared),
                str(out),
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QInt8,
                # Fused (com.microsoft) ops defeat ONNX shape inference; their tensors are FP32.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        prepared.unlink(missing_ok=True)


def to_fp16(src: Path, out: Path) -> None:
    """FP16 weights and activations, FP32 inputs/outputs (for GPUs)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(out))


def torch_probs(model: EventBert, inputs: ModelInputs) -> Any:
    """Reference probabilities [B, 2] from the torch model."""
    with torch.no_grad():
        features = torch.from_numpy(inputs.features)
        mask = torch.from_numpy(inputs.attention_mask)
        return model(features, mask).numpy().astype(np.float32)
