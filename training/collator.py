"""The masked-event objective's batches, as transformers' DataCollatorForLanguageModeling does it
for tokens: the collator hides events, the model (`EventBert.mlm_loss`) predicts them.

A hidden event has every channel replaced by `MASK_ID`; each real event is hidden with
probability `mask_prob`, and a window with none hidden hides its last (scored) event, so every
window teaches something. The collator owns its seeded generator, whose state a resumable run
saves and restores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from events.features import MASK_ID

__all__ = ["MaskedBatch", "MaskedEventCollator"]


@dataclass
class MaskedBatch:
    """A batch for the masked-event loss (all tensors on the batch's device)."""

    masked: torch.Tensor  # [B, L, C] features with hidden events set to MASK_ID
    attention_mask: torch.Tensor  # [B, L]
    hide: torch.Tensor  # [B, L] bool: the hidden events
    targets: torch.Tensor  # [M, C] the hidden events' true channel codes

    def to(self, device: torch.device) -> MaskedBatch:
        """The same batch on `device`."""
        return MaskedBatch(
            self.masked.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            self.hide.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
        )


class MaskedEventCollator:
    """features [B, L, C] + attention_mask [B, L] (right padded) → a `MaskedBatch`."""

    def __init__(self, mask_prob: float, seed: int) -> None:
        if not 0 < mask_prob < 1:
            raise ValueError(f"mask_prob: must be in (0, 1), got {mask_prob}")
        self.mask_prob = mask_prob
        self.rng = np.random.default_rng(seed)

    def __call__(self, features: torch.Tensor, attention_mask: torch.Tensor) -> MaskedBatch:
        real = attention_mask.bool()
        hide = torch.from_numpy(self.rng.random(real.shape) < self.mask_prob) & real
        # Every window hides at least one event: its last (the scored one).
        last = attention_mask.sum(dim=1) - 1
        rows = torch.arange(len(last))
        none = ~hide.any(dim=1)
        hide[rows[none], last[none]] = True
        masked = features.clone()
        masked[hide] = MASK_ID
        return MaskedBatch(masked, attention_mask, hide, features[hide])

    def state_dict(self) -> dict[str, Any]:
        """The generator's state (JSON-able), for resuming."""
        state: dict[str, Any] = dict(self.rng.bit_generator.state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the draws where a saved run stopped."""
        self.rng.bit_generator.state = state
