"""The window bag: exact counts of each input code over the window, computed inside the graph.

Attention averages: a softmax-weighted mean cannot say "five failed payments" as opposed to "a
third of the window", and a window's counts (failed payments, new devices, events in the last
minute) are what risk hinges on. The bag gives the heads those counts exactly, from the same
`features` and `attention_mask` the encoder reads, so the ONNX graph keeps its two inputs and
the stream needs nothing new. Built from comparisons and sums only: it exports to any opset and
quantises like the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from events.features import CODE_SHIFT

__all__ = ["WindowBag"]


class WindowBag(nn.Module):
    """features [B, L, C] int64 + attention_mask [B, L] → [B, width] float.

    Per counted channel, the count of each code over the real events (log1p) and its share of
    the window (cumulative over the codes of `ordinal` channels); then, per age cut, the counts
    of the first channel's codes (the event type) among events younger than the cut: velocity
    per type.
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        channels: Sequence[int],
        age_channel: int,
        recent_age_codes: Sequence[int],
        ordinal: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.ordinal = frozenset(ordinal)
        self.age_channel = age_channel
        self.recent_age_codes = tuple(recent_age_codes)
        for c in self.channels:
            self.register_buffer(f"codes_{c}", torch.arange(vocab_sizes[c]), persistent=False)
        codes = sum(vocab_sizes[c] for c in self.channels)
        codes += len(self.recent_age_codes) * vocab_sizes[self.channels[0]]
        self.width = 2 * codes  # counts, then shares

    def _counts(self, codes: torch.Tensor, weights: torch.Tensor, c: int) -> torch.Tensor:
        """Weighted count of each code of channel `c`: codes [B, L] → [B, V_c]. For an ordinal
        channel (buckets of money, gaps, ages), the count of real codes up to each code: a
        1.5 s cadence and a 3 s one then share "gaps under 5 s", which generalises."""
        vocab: torch.Tensor = getattr(self, f"codes_{c}")
        x = codes.unsqueeze(-1)  # [B, L, 1]
        hit = ((x <= vocab) & (x >= CODE_SHIFT)) if c in self.ordinal else x == vocab  # [B, L, V_c]
        return (hit.to(weights.dtype) * weights.unsqueeze(-1)).sum(dim=1)

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        real = attention_mask.to(torch.float32)  # [B, L]
        length = real.sum(dim=1, keepdim=True).clamp(min=1.0)  # [B, 1]
        counts = [self._counts(features[..., c], real, c) for c in self.channels]
        age = features[..., self.age_channel]  # [B, L]
        first = self.channels[0]
        for cut in self.recent_age_codes:
            young = real * (age < cut).to(real.dtype)  # [B, L]
            counts.append(self._counts(features[..., first], young, first))
        bag = torch.cat(counts, dim=-1)  # [B, codes]
        return torch.cat([torch.log1p(bag), bag / length], dim=-1)  # [B, 2 * codes]
