"""EventBert: a transformers BERT over a user's window, one position per event.

Each event's channels (type, category, money buckets, gap, novelty, …) are embedded and summed
into one vector; BERT adds positions. Two sigmoid heads read the scored (last) event's hidden
state, the window's mean state and (`window_bag`) the window's exact code counts; pretraining
predicts the channels of masked events.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import BertConfig, BertModel

from events.encoding import EncodingSpec
from events.features import CHANNELS, RECENT_WINDOWS_MS, age_code_below, channel_vocab_sizes
from training.bag import WindowBag
from training.exceptions import TrainingError

if TYPE_CHECKING:
    from training.collator import MaskedBatch

__all__ = ["EventBert", "ModelConfig", "copy_init_weights"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines the network; its only input."""

    vocab_sizes: tuple[int, ...]  # per channel, in events.features.CHANNELS order
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 256
    max_len: int = 64
    dropout: float = 0.1
    # The window bag (training/bag.py); off in checkpoints saved before it existed.
    window_bag: bool = False
    recent_age_codes: tuple[int, ...] = ()  # age-channel codes of 1 min, 10 min, 1 h
    # Bucketed magnitudes counted as "up to this bucket" (True, as saved before the choice) or
    # per bucket; chosen per preset on validation (docs/training.md).
    bag_cumulative: bool = True

    @classmethod
    def for_spec(cls, spec: EncodingSpec, **sizes: Any) -> ModelConfig:
        """A config whose embedding tables fit `spec`, with the window bag."""
        vocab = channel_vocab_sizes(spec)
        recent = tuple(age_code_below(spec, ms) for _, ms in RECENT_WINDOWS_MS)
        return cls(
            vocab_sizes=tuple(vocab[c] for c in CHANNELS),
            window_bag=True,
            recent_age_codes=recent,
            **sizes,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        out = asdict(self)
        out["vocab_sizes"] = list(self.vocab_sizes)
        out["recent_age_codes"] = list(self.recent_age_codes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Load a saved config; one built for other input channels is refused."""
        sizes = data.get("vocab_sizes", ())
        if isinstance(sizes, list | tuple) and len(sizes) != len(CHANNELS):
            raise TrainingError(
                f"model config: vocab_sizes has {len(sizes)} channels, this code encodes "
                f"{len(CHANNELS)} ({', '.join(CHANNELS)}): retrain the model"
            )
        try:
            return cls(
                **{
                    **data,
                    "vocab_sizes": tuple(data["vocab_sizes"]),
                    "recent_age_codes": tuple(data.get("recent_age_codes", ())),
                }
            )
        except (KeyError, TypeError) as exc:
            raise TrainingError(f"model config: {exc}") from exc

    def bert_config(self) -> BertConfig:
        """The transformers config of the encoder (eager attention: ONNX Runtime fuses it)."""
        config = BertConfig(
            vocab_size=1,  # unused: inputs arrive as summed event embeddings
            hidden_size=self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            intermediate_size=self.intermediate,
            max_position_embeddings=self.max_len,
            type_vocab_size=1,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
        )
        config._attn_implementation = "eager"
        return config


#: Channels the window bag counts (category's ~250 codes are left to the encoder).
BAG_CHANNELS: tuple[str, ...] = tuple(c for c in CHANNELS if c != "category")
_ORDINAL = ("price", "amount", "quantity", "gap", "age")  # bucketed magnitudes


#: Model sizes and bag counting. tiny: tests and the demo; small: the default; base: for GPUs.
class EventBert(nn.Module):
    """features [B, L, C] int64 + attention_mask [B, L] → probabilities [B, 2]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.ModuleList(
            nn.Embedding(v, config.hidden, padding_idx=0) for v in config.vocab_sizes
        )
        self.bert = BertModel(config.bert_config(), add_pooling_layer=False)  # type: ignore[no-untyped-call]
        # The scored event's state beside the window's mean: rates over the window reach the
        # heads without having to be funnelled through one position.
        self.bag: WindowBag | None = None
        if config.window_bag:
            channels = [CHANNELS.index(c) for c in BAG_CHANNELS]
            self.bag = WindowBag(
                config.vocab_sizes,
                channels,
                CHANNELS.index("age"),
                config.recent_age_codes,
                ordinal=[CHANNELS.index(c) for c in _ORDINAL] if config.bag_cumulative else (),
            )
            self.bag_proj = nn.Sequential(nn.Linear(self.bag.width, config.hidden), nn.GELU())
            self.head: nn.Module = nn.Sequential(
                nn.Linear(3 * config.hidden, config.hidden), nn.GELU(), nn.Linear(config.hidden, 2)
            )
        else:
            self.head = nn.Linear(2 * config.hidden, 2)
        self.mlm = nn.ModuleList(nn.Linear(config.hidden, v) for v in config.vocab_sizes)

    def encode(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, H]."""
        x = self.embed[0](features[..., 0])
        for c in range(1, len(self.embed)):
            x = x + self.embed[c](features[..., c])  # [B, L, H]
        # A prepared additive mask [B, 1, 1, L]: transformers uses it as is, so the graph has
        # no data-dependent branch (its own mask builder skips the mask when none is padded,
        # which a traced ONNX export would freeze into the graph).
        bias = (1 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        out = self.bert(inputs_embeds=x, attention_mask=bias)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden

    def logits(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Head logits [B, 2] from the last real position (right padding) and the mean."""
        hidden = self.encode(features, attention_mask)  # [B, L, H]
        lengths = attention_mask.sum(dim=1)  # [B]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last_state = hidden[rows, lengths - 1]  # [B, H]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
        mean_state = (hidden * weights).sum(dim=1) / lengths.unsqueeze(-1).to(hidden.dtype)
        pooled = [last_state, mean_state]
        if self.bag is not None:
            pooled.append(self.bag_proj(self.bag(features, attention_mask)))  # [B, H]
        out: torch.Tensor = self.head(torch.cat(pooled, dim=-1))  # [B, 2]
        return out

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Probabilities [B, 2] (fraud, abnormal_click): what ONNX export serves."""
        return torch.sigmoid(self.logits(features, attention_mask))

    def mlm_logits(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        """Per channel, logits [B, L, vocab_c] for the masked-event pretraining task."""
        return [layer(hidden) for layer in self.mlm]

    def mlm_loss(self, batch: MaskedBatch) -> torch.Tensor:
        """The masked-event loss: cross-entropy of every channel of every hidden event,
        averaged over channels (`training.collator.MaskedEventCollator` builds the batch)."""
        hidden = self.encode(batch.masked, batch.attention_mask)  # [B, L, H]
        logits = self.mlm_logits(hidden[batch.hide])  # C × [M, vocab_c]
        loss = sum(
            (nn.functional.cross_entropy(lg, batch.targets[:, c]) for c, lg in enumerate(logits)),
            torch.zeros((), device=hidden.device),
        )
        return loss / len(logits)

    def load_encoder(self, state: dict[str, torch.Tensor]) -> dict[str, int]:
        """Take a `riskstream pretrain` model's encoder: event embeddings, BERT and the
        masked-event heads; the fraud / abnormal_click heads (untrained there) stay new."""
        fresh = ("head.", "bag_proj.")
        wanted = {k: v for k, v in state.items() if not k.startswith(fresh)}
        ours = self.state_dict()
        for name, tensor in wanted.items():
            if name not in ours or ours[name].shape != tensor.shape:
                raise TrainingError(f"--init: {name} does not fit this model")
        missing = [k for k in ours if not k.startswith(fresh) and k not in wanted]
        if missing:
            raise TrainingError(f"--init: the pretrained weights lack {missing[0]}")
        self.load_state_dict(wanted, strict=False)
        return {"copied": len(wanted), "skipped": len(state) - len(wanted)}


_ROW_SLICED = ("embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight")


def copy_init_weights(model: EventBert, path: Path) -> dict[str, int]:
    """Start the encoder from a local Hugging Face BERT checkpoint: its layers, position
    embeddings and embedding LayerNorm; the event embeddings stay new. No downloads."""
    if not (path / "config.json").is_file():
        raise TrainingError(f"--init {path}: not a Hugging Face checkpoint (no config.json)")
    try:
        source = BertModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"--init {path}: cannot load it as a BERT ({exc})") from exc
    ours = model.bert.state_dict()
    theirs = source.state_dict()
    copied = skipped = 0
    for name, tensor in theirs.items():
        if name.startswith("embeddings.word_embeddings") or name not in ours:
            skipped += 1
            continue
        target = ours[name]
        if name in _ROW_SLICED and tensor.shape[0] >= target.shape[0]:
            tensor = tensor[: target.shape[0]]  # fewer positions / one token type here
        if tensor.shape != target.shape:
            raise TrainingError(
                f"--init {path}: {name} has shape {tuple(tensor.shape)}, "
                f"the model needs {tuple(target.shape)}"
            )
        ours[name] = tensor.clone()
        copied += 1
    model.bert.load_state_dict(ours)
    return {"copied": copied, "skipped": skipped}


def config_from_init(path: Path, base: ModelConfig) -> ModelConfig:
    """The model sizes an --init checkpoint dictates (hidden, layers, heads, intermediate)."""
    try:
        source = BertConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"--init {path}: cannot read its config ({exc})") from exc
    if source.max_position_embeddings < base.max_len:
        raise TrainingError(
            f"--init {path}: {source.max_position_embeddings} positions, the window needs "
            f"{base.max_len}"
        )
    return replace(
        base,
        hidden=source.hidden_size,
        layers=source.num_hidden_layers,
        heads=source.num_attention_heads,
        intermediate=source.intermediate_size,
    )
