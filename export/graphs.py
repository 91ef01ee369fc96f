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
from events.trees import TreeModel
from export.exceptions import ExportError
from export.manifest import GBDT_INPUT, GBDT_OUTPUT, INPUT_NAMES, OUTPUT_NAMES
from training.model import EventBert

__all__ = [
    "OPSET",
    "export_fp32",
    "fuse_transformer",
    "gbdt_to_onnx",
    "to_fp16",
    "to_int8",
]

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
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    # The window bag's counting stays float32: exact counts, and ONNX Runtime's CPU kernels
    # have no FP16 ScatterElements-add.
    blocked = [*DEFAULT_OP_BLOCK_LIST, "ScatterElements", "CumSum"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    onnx.save(converted, str(out))


def torch_probs(model: EventBert, inputs: ModelInputs) -> Any:
    """Reference probabilities [B, 2] from the torch model."""
    with torch.no_grad():
        features = torch.from_numpy(inputs.features)
        mask = torch.from_numpy(inputs.attention_mask)
        return model(features, mask).numpy().astype(np.float32)


#: A membership value no aggregate takes (categories are codes ≥ 0).
_NEVER: Final = -3.0e38


def _round_down_f32(values: np.ndarray) -> np.ndarray:
    """The largest float32 ≤ each float64 value: with float32 inputs, `x <= t32` then holds
    exactly when `x <= t` does."""
    t32 = values.astype(np.float32)
    above = t32.astype(np.float64) > values
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _constant_column(value: float, out: str) -> list[Any]:
    """Nodes giving `out` = [B, 1] filled with `value`, B the input's batch."""
    from onnx import TensorProto, helper

    def const(name: str, data: list[int]) -> Any:
        tensor = helper.make_tensor(name, TensorProto.INT64, [len(data)], data)
        return helper.make_node("Constant", [], [name], value=tensor)

    return [
        helper.make_node("Shape", [GBDT_INPUT], [f"{out}_shape"]),
        const(f"{out}_first", [0]),
        const(f"{out}_one", [1]),
        helper.make_node("Gather", [f"{out}_shape", f"{out}_first"], [f"{out}_batch"], axis=0),
        helper.make_node("Concat", [f"{out}_batch", f"{out}_one"], [f"{out}_dims"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            [f"{out}_dims"],
            [out],
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [value]),
        ),
    ]


def gbdt_to_onnx(trees: dict[str, TreeModel], n_features: int, out: Path) -> None:
    """The heads' trees as one ONNX graph: aggregates [B, n_features] float32 → log-odds
    [B, heads], one ai.onnx.ml TreeEnsemble per head (opset 5: set membership for categorical
    splits, NaN routed as each node's `missing_left` says)."""
    from onnx import TensorProto, helper

    nodes: list[Any] = []
    outs: list[str] = []
    for h, model in enumerate(trees.values()):
        a = model._arrays
        n_trees, width = a["feature"].shape
        ids: dict[tuple[int, int], int] = {}  # (tree, node) → interior node id
        leaves: dict[tuple[int, int], int] = {}  # (tree, node) → leaf id
        leaf_weights: list[float] = []
        for t in range(n_trees):
            for n in range(width):
                if a["leaf"][t, n]:
                    leaves[(t, n)] = len(leaf_weights)
                    leaf_weights.append(float(a["value"][t, n]))
                else:
                    ids[(t, n)] = len(ids)
        name = f"{GBDT_OUTPUT}_{h}"
        outs.append(name)
        if not ids:  # a constant head (one class in training): every tree is a leaf
            total = model.baseline + float(sum(leaf_weights))
            nodes += _constant_column(total, name)
            continue
        feature: list[int] = []
        modes: list[int] = []
        splits: list[float] = []
        true_ids: list[int] = []
        true_leaf: list[int] = []
        false_ids: list[int] = []
        false_leaf: list[int] = []
        missing: list[int] = []
        members: list[float] = []
        roots: list[int] = []
        columns = model.columns or list(range(n_features))
        offset = model.baseline
        for t in range(n_trees):
            if (t, 0) in ids:
                roots.append(ids[(t, 0)])
            else:  # a tree that never split: its one leaf adds a constant
                offset += leaf_weights[leaves[(t, 0)]]
        for (t, n), _ in sorted(ids.items(), key=lambda kv: kv[1]):
            left, right = int(a["left"][t, n]), int(a["right"][t, n])
            f = int(a["feature"][t, n])
            feature.append(columns[f])
            miss_left = bool(a["missing_left"][t, n])
            if a["categorical"][t, n]:
                known = [v for v in model.categories[f] if v == v]  # NaN is missing, not a set
                words = a["bitset"][t, n]
                goes_left = [
                    v for code, v in enumerate(known) if (int(words[code // 32]) >> (code % 32)) & 1
                ]
                # Unknown categories are missing for sklearn: the tested set is the side that
                # unknown values must not reach.
                if miss_left:
                    tested = [v for v in known if v not in goes_left]
                    true_child, false_child = right, left
                else:
                    tested = goes_left
                    true_child, false_child = left, right
                modes.append(6)  # BRANCH_MEMBER
                splits.append(np.nan)
                # An empty set (every known category on one side) gets a value no input has.
                members += [*(tested or [_NEVER]), np.nan]
                missing.append(0)  # NaN is in no set: it follows the false branch
            else:
                modes.append(0)  # BRANCH_LEQ
                splits.append(float(_round_down_f32(np.array([a["threshold"][t, n]]))[0]))
                true_child, false_child = left, right
                missing.append(1 if miss_left else 0)
            for child, id_list, leaf_list in (
                (true_child, true_ids, true_leaf),
                (false_child, false_ids, false_leaf),
            ):
                if (t, child) in leaves:
                    id_list.append(leaves[(t, child)])
                    leaf_list.append(1)
                else:
                    id_list.append(ids[(t, child)])
                    leaf_list.append(0)
        tree_node = helper.make_node(
            "TreeEnsemble",
            [GBDT_INPUT],
            [name + "_sum"],
            domain="ai.onnx.ml",
            aggregate_function=1,  # SUM
            post_transform=0,
            n_targets=1,
            tree_roots=roots,
            nodes_featureids=feature,
            nodes_modes=helper.make_tensor("modes", TensorProto.UINT8, [len(modes)], modes),
            nodes_splits=helper.make_tensor("splits", TensorProto.FLOAT, [len(splits)], splits),
            nodes_truenodeids=true_ids,
            nodes_trueleafs=true_leaf,
            nodes_falsenodeids=false_ids,
            nodes_falseleafs=false_leaf,
            nodes_missing_value_tracks_true=missing,
            membership_values=helper.make_tensor(
                "members", TensorProto.FLOAT, [len(members or [np.nan])], members or [np.nan]
            ),
            leaf_targetids=[0] * len(leaf_weights),
            leaf_weights=helper.make_tensor(
                "weights", TensorProto.FLOAT, [len(leaf_weights)], leaf_weights
            ),
        )
        base = helper.make_node("Constant", [], [f"{name}_base"],
                                value=helper.make_tensor("b", TensorProto.FLOAT, [1],
                                                         [offset]))  # fmt: skip
        nodes += [tree_node, base, helper.make_node("Add", [name + "_sum", f"{name}_base"], [name])]
    nodes.append(helper.make_node("Concat", outs, [GBDT_OUTPUT], axis=1))
    graph = helper.make_graph(
        nodes,
        "riskstream-gbdt",
        [helper.make_tensor_value_info(GBDT_INPUT, TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info(GBDT_OUTPUT, TensorProto.FLOAT, ["batch", len(trees)])],
    )
    model_proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)]
    )
    model_proto.ir_version = 10
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(out))
