"""The training run's settings: one frozen dataclass, with per-preset defaults."""

from __future__ import annotations

import json
import types
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from training.exceptions import TrainingError
from training.presets import DEFAULT_PRESET, PRESETS

#: How thresholds reach the refit model (TrainConfig.threshold_transfer, training.thresholds).
THRESHOLD_TRANSFERS = ("quantile", "refit", "pooled", "none")

__all__ = ["DEFAULT_PRESET", "TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved in the checkpoint beside the model config. The bare defaults are
    DEFAULT_PRESET's (training/presets.py)."""

    preset: str = DEFAULT_PRESET
    seed: int = 0
    # Window and sessions (saved with the model; the stream uses the same N and T).
    max_events: int = 32
    max_age_s: int = 7 * 24 * 3600
    session_gap_s: int = 1800
    # Out of time (training.examples.split_time): choices are made on the events at or after
    # this quantile of time, by half the users there (`check_share` of them are the report's);
    # then the shipped model (and its GBDT) learns from every event with those choices.
    val_after_quantile: float = 0.8
    check_share: float = 0.5
    # Self-supervised masked-event pretraining.
    pretrain_windows: int = 6_000
    pretrain_epochs: int = 1
    mask_prob: float = 0.15
    pretrain_lr: float = 2e-3
    # Fine-tuning.
    labelled_share: float = 1.0  # share of the users whose labels are used
    neg_keep: float = 0.2  # share of all-negative examples kept (weights undo it)
    finetune_epochs: int = 3
    finetune_lr: float = 2e-3
    patience: int = 1
    eval_neg_keep: float = 0.25  # negatives scored for early stopping (weights undo it)
    # Known negatives (analysts' false positives, from --feedback): always kept, this weight.
    # The default is what a kept negative weighs at neg_keep 0.1.
    known_negative_weight: float = 10.0
    batch_size: int = 64
    weight_decay: float = 0.01
    warmup_share: float = 0.06
    # Thresholds, chosen on validation: by default at most this many normal users alerted
    # per 1,000 per day; or the lowest threshold reaching a precision, or an event FPR cap.
    max_alerted_per_1000_per_day: float = 5.0
    target_precision: float | None = None
    target_fpr: float | None = None
    # How the thresholds chosen with the selection run reach the refit model that ships
    # (training.thresholds): "quantile" carries each as the same share of normal users' days
    # on the events both models learnt; "refit" chooses again with the refit model on them;
    # "pooled" chooses on every validation user (choose and check), then carries; "none"
    # ships the selection run's thresholds as they are.
    threshold_transfer: str = "refit"
    # The stacked ensemble (training.ensemble): "auto" ships the model blended with the GBDT
    # when that wins on validation, "on" always, "off" never.
    ensemble: str = "auto"
    # After the choices, fine-tune again from the pretrained weights (and refit the GBDT) on
    # every event for the selected epochs (iterations): the shipped model has seen the whole
    # history. False ships the selection run's model (it never saw the validation period).
    refit: bool = True
    # Where to compute: auto (CUDA when present) | cpu | cuda; mixed precision on CUDA only:
    # auto (bf16 where supported, else fp16 with a grad scaler) | bf16 | fp16 | off.
    device: str = "auto"
    amp: str = "auto"

    def __post_init__(self) -> None:
        if self.target_precision is not None and self.target_fpr is not None:
            raise TrainingError("target_precision, target_fpr: give at most one")
        if self.preset not in PRESETS:
            raise TrainingError(f"preset: must be one of {', '.join(PRESETS)}")
        for name in ("val_after_quantile", "check_share"):
            if not 0 < getattr(self, name) < 1:
                raise TrainingError(f"{name}: must be in (0, 1)")
        for name in ("neg_keep", "eval_neg_keep", "labelled_share"):
            if not 0 < getattr(self, name) <= 1:
                raise TrainingError(f"{name}: must be in (0, 1]")
        if self.known_negative_weight <= 0:
            raise TrainingError("known_negative_weight: must be > 0")
        if not 0 < self.mask_prob < 1:
            raise TrainingError("mask_prob: must be in (0, 1)")
        if self.threshold_transfer not in THRESHOLD_TRANSFERS:
            raise TrainingError(
                f"threshold_transfer: {self.threshold_transfer!r} is not one of "
                + ", ".join(THRESHOLD_TRANSFERS)
            )
        if self.ensemble not in ("auto", "on", "off"):
            raise TrainingError(f"ensemble: {self.ensemble!r} is not one of auto, on, off")
        if self.device not in ("auto", "cpu", "cuda"):
            raise TrainingError(f"device: must be auto, cpu or cuda, got {self.device!r}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise TrainingError(f"amp: must be auto, bf16, fp16 or off, got {self.amp!r}")
        for name in ("pretrain_epochs", "finetune_epochs", "batch_size", "max_events"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name}: must be >= 1")

    @classmethod
    def for_preset(cls, preset: str, **overrides: Any) -> TrainConfig:
        """The preset's defaults, then `overrides`."""
        if preset not in PRESETS:
            raise TrainingError(f"--preset: must be one of {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TrainingError(f"{sorted(unknown)[0]}: unknown training setting")
        return replace(cls(preset=preset, **PRESETS[preset].training), **overrides)

    @classmethod
    def from_sources(
        cls,
        preset: str | None = None,
        *,
        base: dict[str, Any] | None = None,
        config_file: Path | None = None,
        sets: list[str] | tuple[str, ...] = (),
        **flags: Any,
    ) -> TrainConfig:
        """The command line's config: `base` (a saved run's settings) or the preset's
        defaults, then the `--config` JSON file, then each `--set key=value`, then explicit
        flags (None = not given). Values are checked against the fields' types; an unknown
        key is refused with its name."""
        layered: dict[str, Any] = {}
        if config_file is not None:
            layered |= _read_config_file(config_file)
        for item in sets:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise TrainingError(f"--set {item}: expected key=value")
            layered[key] = _parse_text(key, text.strip(), f"--set {item}")
        layered |= {k: v for k, v in flags.items() if v is not None}
        for key, value in layered.items():
            layered[key] = _coerce(key, value)
        chosen = preset or layered.get("preset") or (base or {}).get("preset") or DEFAULT_PRESET
        if base is not None:
            start = {k: _coerce(k, v) for k, v in base.items() if k in _HINTS}
            start["preset"] = chosen
            return cls(**(start | layered))
        return cls.for_preset(str(chosen), **{k: v for k, v in layered.items() if k != "preset"})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return asdict(self)


_HINTS: dict[str, Any] = get_type_hints(TrainConfig)


def _unknown(key: str) -> TrainingError:
    return TrainingError(f"{key}: unknown training setting (known: {', '.join(sorted(_HINTS))})")


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TrainingError(f"--config {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise TrainingError(f"--config {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TrainingError(f"--config {path}: must be a JSON object of settings")
    for key in data:
        if key not in _HINTS:
            raise TrainingError(f"--config {path}: {_unknown(key)}")
    return data


def _parse_text(key: str, text: str, where: str) -> Any:
    """A --set value as the field's type wants it: JSON where it parses, else the string."""
    if key not in _HINTS:
        raise TrainingError(f"{where}: {_unknown(key)}")
    hint = _HINTS[key]
    if hint is str:
        return text
    if text.lower() in ("none", "null"):
        return None
    if hint is bool and text.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
        return text.lower() in ("true", "yes", "on", "1")
    if get_origin(hint) is tuple and not text.startswith("["):
        text = f"[{text}]"
    try:
        return json.loads(text)
    except ValueError:
        return text  # _coerce names the expected type


def _coerce(key: str, value: Any) -> Any:
    """`value` as field `key`'s type, or a TrainingError naming the key and the type."""
    if key not in _HINTS:
        raise _unknown(key)
    hint = _HINTS[key]
    args = get_args(hint)
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in args
    if value is None:
        if optional:
            return None
        raise TrainingError(f"{key}: must not be null")
    target = next(a for a in args if a is not type(None)) if optional else hint
    if target is bool:
        if isinstance(value, bool):
            return value
    elif target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif target is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif target is str:
        if isinstance(value, str):
            return value
    elif get_origin(target) is tuple:
        inner = get_args(target)
        if (
            isinstance(value, list | tuple)
            and len(value) == len(inner)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            return tuple(float(v) for v in value)
        raise TrainingError(f"{key}: must be {len(inner)} numbers, got {value!r}")
    name = getattr(target, "__name__", str(target))
    raise TrainingError(f"{key}: must be {name}{' or null' if optional else ''}, got {value!r}")
