"""Model presets, in one table: each preset's network sizes and its training settings.

`TrainConfig`'s bare defaults are `DEFAULT_PRESET`'s, so a preset's `training` row lists only
what differs from them.

>>> sorted(PRESETS)
['base', 'small', 'tiny']
>>> PRESETS[DEFAULT_PRESET].training
{}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["DEFAULT_PRESET", "PRESETS", "Preset"]


@dataclass(frozen=True)
class Preset:
    """A preset: `model` (ModelConfig sizes) and `training` (TrainConfig overrides)."""

    model: dict[str, int | bool]
    training: dict[str, Any] = field(default_factory=dict)
    about: str = ""


#: `train`'s preset when none is named: `tiny` scores ~5× as many windows a second as `small` on
#: a CPU and was as good on the default 20k-user world (docs/training.md, Presets).
DEFAULT_PRESET: Final = "tiny"

_LARGER: Final[dict[str, Any]] = {
    "max_events": 64,
    "pretrain_windows": 60_000,
    "neg_keep": 0.1,
    "batch_size": 128,
    "pretrain_lr": 1e-3,
}

PRESETS: Final[dict[str, Preset]] = {
    "tiny": Preset(
        {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 128, "bag_cumulative": True},
        about="the default: fast on a CPU",
    ),
    # Validation PR-AUC was still climbing after 3 epochs (at 5e-4 and at 1e-3); 5 epochs at
    # 1e-3 lifted test fraud PR-AUC 0.9803 → 0.9848 on the default world (docs/benchmarks.md).
    "small": Preset(
        {"hidden": 128, "layers": 2, "heads": 4, "intermediate": 256, "bag_cumulative": False},
        {**_LARGER, "finetune_lr": 1e-3, "finetune_epochs": 5},
        about="a 64-event window, ~5x tiny's cost",
    ),
    "base": Preset(
        {"hidden": 256, "layers": 4, "heads": 4, "intermediate": 1024, "bag_cumulative": False},
        {
            **_LARGER,
            "pretrain_windows": 200_000,
            "finetune_epochs": 4,
            "batch_size": 256,
            "finetune_lr": 5e-4,
        },
        about="for a GPU",
    ),
}
