"""The window bag counts what the baseline's aggregates count, ignores padding, and exports."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from events import EncodingSpec
from events.aggregates import AGGREGATE_NAMES, window_aggregates
from events.features import CHANNELS, CODE_SHIFT, ModelInputs
from training.bag import WindowBag
from training.model import BAG_CHANNELS, EventBert, ModelConfig

SPEC = EncodingSpec()


def _random_inputs(seed: int, batch: int = 64, width: int = 24) -> ModelInputs:
    """Plausible codes per channel (every code real, ≥ CODE_SHIFT), right padded with zeros."""
    rng = np.random.default_rng(seed)
    cfg = ModelConfig.for_spec(SPEC)
    features = np.stack(
        [rng.integers(CODE_SHIFT, v, size=(batch, width)) for v in cfg.vocab_sizes], axis=-1
    )
    lengths = rng.integers(1, width + 1, size=batch)
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    features = np.where(mask[..., None] == 1, features, 0).astype(np.int64)
    return ModelInputs(features, mask)


def _bag(cfg: ModelConfig) -> tuple[WindowBag, int]:
    """The bag as the model builds it, and the number of its count columns."""
    bag = EventBert(cfg).bag
    assert bag is not None
    return bag, bag.width // 2


def test_type_counts_and_velocity_equal_the_baseline_aggregates() -> None:
    cfg = ModelConfig.for_spec(SPEC)
    bag, codes = _bag(cfg)
    x = _random_inputs(seed=1)
    out = bag(torch.from_numpy(x.features), torch.from_numpy(x.attention_mask)).numpy()
    assert out.shape == (64, 2 * codes)
    counts = np.expm1(out[:, :codes].astype(np.float64))
    agg = window_aggregates(x.features, x.attention_mask, SPEC)
    n_types = len(SPEC.event_types)
    by_type = counts[:, CODE_SHIFT : CODE_SHIFT + n_types]
    expected = agg[:, [AGGREGATE_NAMES.index(f"count_{t}") for t in SPEC.event_types]]
    np.testing.assert_allclose(by_type, expected, atol=1e-4)
    vocab_type = cfg.vocab_sizes[CHANNELS.index("type")]
    for k, name in enumerate(("1m", "10m", "1h")):  # per-type velocity sums to the total
        block = counts[:, codes - (3 - k) * vocab_type : codes - (2 - k) * vocab_type]
        total = agg[:, AGGREGATE_NAMES.index(f"events_last_{name}")]
        np.testing.assert_allclose(block.sum(axis=1), total, atol=1e-3)
    shares = out[:, codes:]
    np.testing.assert_allclose(
        shares[:, CODE_SHIFT : CODE_SHIFT + n_types], expected / x.lengths[:, None], atol=1e-6
    )


def test_padding_changes_nothing() -> None:
    bag, _ = _bag(ModelConfig.for_spec(SPEC))
    x = _random_inputs(seed=2, width=10)
    wide = np.zeros((64, 40, len(CHANNELS)), dtype=np.int64)
    wide[:, :10] = x.features
    wide_mask = np.zeros((64, 40), dtype=np.int64)
    wide_mask[:, :10] = x.attention_mask
    narrow = bag(torch.from_numpy(x.features), torch.from_numpy(x.attention_mask))
    padded = bag(torch.from_numpy(wide), torch.from_numpy(wide_mask))
    torch.testing.assert_close(narrow, padded)


#: Every head architecture a checkpoint can describe: no bag (saved before it), the bag with
#: cumulative magnitude counts (tiny), with per-bucket ones (small, base).
ARCHITECTURES = {
    "no-bag": {"window_bag": False},
    "bag-cumulative": {"window_bag": True, "bag_cumulative": True},
    "bag-per-bucket": {"window_bag": True, "bag_cumulative": False},
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_exports_with_fp32_parity(arch: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    from export.build import FP32_MAX_DIFF
    from export.graphs import export_fp32, torch_probs

    torch.manual_seed(0)
    cfg = replace(
        ModelConfig.for_spec(SPEC, hidden=32, layers=1, heads=2, intermediate=64, max_len=24),
        **ARCHITECTURES[arch],
    )
    model = EventBert(cfg).eval()
    assert (model.bag is not None) == cfg.window_bag
    export_fp32(model, _random_inputs(seed=3), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = _random_inputs(seed=4, batch=33, width=17)  # other batch and length than traced
    got = session.run(None, {"features": x.features, "attention_mask": x.attention_mask})
    assert np.abs(np.stack(got, axis=1) - torch_probs(model, x)).max() <= FP32_MAX_DIFF


@pytest.mark.parametrize("cumulative", [True, False], ids=["cumulative", "per-bucket"])
def test_ordinal_channels_count_as_configured(cumulative: bool) -> None:
    cfg = replace(ModelConfig.for_spec(SPEC), bag_cumulative=cumulative)
    bag, _ = _bag(cfg)
    x = _random_inputs(seed=5)
    out = bag(torch.from_numpy(x.features), torch.from_numpy(x.attention_mask)).numpy()
    gap = CHANNELS.index("gap")
    counted = [CHANNELS.index(c) for c in BAG_CHANNELS]
    lo = sum(cfg.vocab_sizes[c] for c in counted[: counted.index(gap)])
    got = np.expm1(out[:, lo : lo + cfg.vocab_sizes[gap]].astype(np.float64))
    codes, real = x.features[..., gap], x.attention_mask == 1
    for k in range(cfg.vocab_sizes[gap]):  # real events whose gap code is (at most) k
        hit = ((codes >= CODE_SHIFT) & (codes <= k)) if cumulative else codes == k
        np.testing.assert_allclose(got[:, k], (hit & real).sum(axis=1), atol=1e-3)
    total = got[:, -1] if cumulative else got.sum(axis=1)
    np.testing.assert_allclose(total, x.lengths, atol=1e-3)  # every real event, once
