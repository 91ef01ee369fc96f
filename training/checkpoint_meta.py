"""What a checkpoint's config.json records beside the model: a typed, versioned record.

`train` writes it, `export`, `evaluate` and `score` read it; nobody digs through nested dicts.
Version 1 (before this record) had the same keys untyped and, from older protocols, a split
of recorded validation users: it still loads. A version newer than this code knows is refused
with one line naming the file.

>>> meta = CheckpointMeta(train=TrainConfig(), step=3, session_gap_s=1800)
>>> CheckpointMeta.from_dict(meta.to_dict(), "config.json") == meta
True
>>> CheckpointMeta.from_dict({"meta_version": 99}, "m/config.json")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
training.exceptions.TrainingError: m/config.json: meta_version 99 is newer than ...
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Final

from events.trees import Blend
from training.config import TrainConfig
from training.exceptions import TrainingError

__all__ = ["META_VERSION", "CheckpointMeta", "EnsembleRecord", "SourceRecord", "SplitRecord"]

META_VERSION: Final = 2


@dataclass(frozen=True)
class SplitRecord:
    """How `train` split its data, so that export's verification draws the same split again.
    `val_user_ids` and `t_cut_ms` are from checkpoints of the older by-user protocol."""

    protocol: str = "out-of-time"
    seed: int = 0
    val_after_quantile: float = 0.8
    check_share: float = 0.5
    t_val_ms: int | None = None
    val_user_ids: tuple[str, ...] | None = None
    t_cut_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, without the legacy fields when they are unset."""
        out: dict[str, Any] = {
            "protocol": self.protocol,
            "seed": self.seed,
            "val_after_quantile": self.val_after_quantile,
            "check_share": self.check_share,
            "t_val_ms": self.t_val_ms,
        }
        if self.val_user_ids is not None:
            out |= {"val_user_ids": list(self.val_user_ids), "t_cut_ms": self.t_cut_ms}
        return out


@dataclass(frozen=True)
class SourceRecord:
    """The files `train` read (export verifies on them when not told otherwise)."""

    events: str | None = None
    labels: str | None = None
    feedback: str | None = None


@dataclass(frozen=True)
class EnsembleRecord:
    """The shipped scorer blends the model with the stored GBDT; `model_thresholds` are the
    sequence model's own (for the ablation)."""

    blend: Blend
    model_thresholds: dict[str, float] | None = None


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything config.json holds besides the model's architecture."""

    train: TrainConfig
    step: int
    session_gap_s: int
    source: SourceRecord = field(default_factory=SourceRecord)
    split: SplitRecord | None = None
    baseline_thresholds: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    ensemble: EnsembleRecord | None = None
    meta_version: int = META_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON config.json carries (beside `format` and `model`)."""
        out: dict[str, Any] = {
            "meta_version": self.meta_version,
            "train": self.train.to_dict(),
            "step": self.step,
            "session_gap_s": self.session_gap_s,
            "baseline_thresholds": dict(self.baseline_thresholds),
            "calibration": self.calibration,
            "split": self.split.to_dict() if self.split else None,
            "source": {
                "events": self.source.events,
                "labels": self.source.labels,
                "feedback": self.source.feedback,
            },
        }
        if self.ensemble is not None:
            out["ensemble"] = {
                "blend": self.ensemble.blend.to_dict(),
                "model_thresholds": self.ensemble.model_thresholds,
            }
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> CheckpointMeta:
        """Read config.json's record (version 1 or 2); errors name `where` and the field."""
        version = raw.get("meta_version", 1)
        if not isinstance(version, int) or version < 1:
            raise TrainingError(f"{where}: meta_version: must be a positive integer")
        if version > META_VERSION:
            raise TrainingError(
                f"{where}: meta_version {version} is newer than this riskstream reads "
                f"({META_VERSION}); upgrade riskstream"
            )
        try:
            return cls(
                train=_train(raw.get("train", {})),
                step=int(raw.get("step", 0)),
                session_gap_s=int(raw.get("session_gap_s", 1800)),
                source=SourceRecord(**_subset(raw.get("source") or {}, SourceRecord)),
                split=_split(raw.get("split")),
                baseline_thresholds={
                    str(k): float(v) for k, v in (raw.get("baseline_thresholds") or {}).items()
                },
                calibration=dict(raw.get("calibration") or {}),
                ensemble=_ensemble(raw.get("ensemble")),
            )
        except TrainingError as exc:
            raise TrainingError(f"{where}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TrainingError(f"{where}: unreadable checkpoint record ({exc})") from exc


def _subset(raw: dict[str, Any], kind: type) -> dict[str, Any]:
    known = {f.name for f in fields(kind)}
    return {k: v for k, v in raw.items() if k in known}


def _train(raw: dict[str, Any]) -> TrainConfig:
    """The saved settings; keys an older or newer version had and this one lacks are ignored."""
    return TrainConfig(**_subset(raw, TrainConfig))


def _split(raw: dict[str, Any] | None) -> SplitRecord | None:
    if raw is None:
        return None
    values = _subset(raw, SplitRecord)
    if values.get("val_user_ids") is not None:
        values["val_user_ids"] = tuple(str(u) for u in values["val_user_ids"])
    return SplitRecord(**values)


def _ensemble(raw: dict[str, Any] | None) -> EnsembleRecord | None:
    if raw is None:
        return None
    try:
        blend = Blend.from_dict(raw["blend"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingError(f"ensemble.blend: {exc}") from exc
    model = raw.get("model_thresholds")
    return EnsembleRecord(
        blend, {str(k): float(v) for k, v in model.items()} if model is not None else None
    )
