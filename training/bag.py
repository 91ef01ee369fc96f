"""The window bag: exact counts of each input code over the window, computed inside the graph.

Attention averages: a softmax-weighted mean cannot say "five failed payments" as opposed to "a
third of the window", and a window's counts (failed payments, new devices, events in the last
minute) are what risk hinges on. The bag gives the heads those counts exactly, from the same
`features` and `attention_mask` the encoder reads, so the ONNX graph keeps its two inputs and
the stream needs nothing new. One scatter-add counts every channel in one flat code space, a
cumulative sum gives the ordinal channels' counts: about ten ONNX nodes (opset ≥ 16), none of
them a MatMul, so dynamic INT8 quantisation leaves the counts exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

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
        # One slot per counted channel, then one per age cut (the type channel again): each slot
        # owns a segment of one flat code space, so one scatter-add counts every slot at once.
        slots = [*self.channels, *[self.channels[0]] * len(self.recent_age_codes)]
        sizes = [vocab_sizes[c] for c in slots]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        codes = sum(sizes)
        self.width = 2 * codes  # counts, then shares
        # Ordinal slots count real codes up to each code: a cumulative sum over the flat space
        # minus its value just before the slot's first real code (CODE_SHIFT).
        cum_from = list(range(codes))  # unused outside ordinal segments
        is_cum = [False] * codes
        for slot, (start, size) in enumerate(zip(starts, sizes, strict=True)):
            if slot < len(self.channels) and self.channels[slot] in self.ordinal:
                for v in range(size):
                    # cum_padded[i] is the sum of codes before i: below CODE_SHIFT, nothing
                    cum_from[start + v] = start + CODE_SHIFT if v >= CODE_SHIFT else start + v + 1
                    is_cum[start + v] = True
        self.register_buffer("slot_channel", torch.tensor(slots), persistent=False)
        self.register_buffer("slot_start", torch.tensor(starts), persistent=False)
        self.register_buffer("age_cuts", torch.tensor(self.recent_age_codes), persistent=False)
        self.register_buffer("cum_from", torch.tensor(cum_from), persistent=False)
        self.register_buffer("is_cum", torch.tensor(is_cum), persistent=False)
        self.codes = codes

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        slot_channel, slot_start, age_cuts, cum_from, is_cum = (
            cast(torch.Tensor, getattr(self, n))
            for n in ("slot_channel", "slot_start", "age_cuts", "cum_from", "is_cum")
        )
        b, length_ = attention_mask.shape
        real = attention_mask.to(torch.float32)  # [B, L]
        length = real.sum(dim=1, keepdim=True).clamp(min=1.0)  # [B, 1]
        # Weight of each (event, slot): real for the channels, real and young for the cuts.
        young = (features[..., self.age_channel].unsqueeze(-1) < age_cuts).to(real.dtype)
        n_plain = len(self.channels)
        weights = torch.cat(
            [real.unsqueeze(-1).expand(b, length_, n_plain), young * real.unsqueeze(-1)], dim=-1
        )  # [B, L, S]
        flat = features.index_select(2, slot_channel) + slot_start  # [B, L, S]
        counts = real.new_zeros((b, self.codes)).scatter_add(
            1, flat.reshape(b, -1), weights.reshape(b, -1)
        )  # [B, codes]; integer-valued, so exact in float32 whatever the summing order
        cum = torch.cumsum(counts, dim=1)
        before = torch.cat([real.new_zeros((b, 1)), cum], dim=1).index_select(1, cum_from)
        bag = torch.where(is_cum, cum - before, counts)
        return torch.cat([torch.log1p(bag), bag / length], dim=-1)  # [B, 2 * codes]
