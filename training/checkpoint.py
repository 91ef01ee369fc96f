"""The trained model on disk: a Hugging Face-style folder that export/ reads.

config.json (model config and `training.checkpoint_meta.CheckpointMeta`: training config, step,
session gap, the validation split, the sources, the blend),
model.safetensors, the encoding spec and window policy (canonical JSON), thresholds.json,
gbdt.json (the GBDT fitted beside the model: `events.trees`, JSON, no pickle), and the
evaluation report. A checkpoint that ships the stacked ensemble records its blend in config.json.

`riskstream pretrain` writes a smaller folder of the same shape (format
`riskstream-pretrained/1`: config, weights, spec, policy) that `train --init` starts from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from safetensors.torch import load_file, save_file

from events import EncodingSpec, IncompatibleSpec, WindowPolicy
from events.trees import Blend, TreeModel, tree_models_from_json, tree_models_to_json
from training.checkpoint_meta import CheckpointMeta
from training.exceptions import TrainingError
from training.model import EventBert, ModelConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "PRETRAINED_FORMAT",
    "Checkpoint",
    "Pretrained",
    "is_pretrained",
    "load_checkpoint",
    "load_pretrained",
    "save_checkpoint",
    "save_pretrained",
]

CHECKPOINT_FORMAT: Final = "riskstream-checkpoint/1"
PRETRAINED_FORMAT: Final = "riskstream-pretrained/1"
FILES: Final = {
    "config": "config.json",
    "weights": "model.safetensors",
    "spec": "encoding_spec.json",
    "policy": "window_policy.json",
    "thresholds": "thresholds.json",
    "trees": "gbdt.json",  # the GBDT fitted beside the model (events.trees, no pickle)
}


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    model: EventBert
    model_config: ModelConfig
    spec: EncodingSpec
    policy: WindowPolicy
    thresholds: dict[str, float]
    meta: CheckpointMeta  # training settings, step, session gap, split, sources
    trees: dict[str, TreeModel] | None = None  # the GBDT fitted on the same examples

    @property
    def session_gap_s(self) -> int:
        """The inactivity gap that sessionised the training data."""
        return self.meta.session_gap_s

    @property
    def blend(self) -> Blend | None:
        """Set when the shipped scorer is the model blended with `trees`."""
        return self.meta.ensemble.blend if self.meta.ensemble else None


def save_checkpoint(
    out: Path,
    model: EventBert,
    spec: EncodingSpec,
    policy: WindowPolicy,
    thresholds: dict[str, float],
    meta: CheckpointMeta,
    *,
    trees: dict[str, TreeModel] | None = None,
) -> None:
    """Write the folder (created if needed). A blend (`meta.ensemble`) needs `trees`: the
    thresholds are then the blend's."""
    if meta.ensemble is not None and trees is None:
        raise TrainingError("a blend needs the trees it blends")
    _write_model(out, CHECKPOINT_FORMAT, model, spec, policy, meta.to_dict())
    (out / FILES["thresholds"]).write_text(json.dumps(thresholds, indent=2) + "\n")
    if trees is not None:
        (out / FILES["trees"]).write_text(tree_models_to_json(trees) + "\n")


def _write_model(
    out: Path,
    fmt: str,
    model: EventBert,
    spec: EncodingSpec,
    policy: WindowPolicy,
    meta: dict[str, Any],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config = {"format": fmt, "model": model.config.to_dict(), **meta}
    (out / FILES["config"]).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / FILES["weights"]), metadata={"format": fmt})
    (out / FILES["spec"]).write_text(spec.to_json() + "\n")
    (out / FILES["policy"]).write_text(policy.to_json() + "\n")


def save_pretrained(
    out: Path, model: EventBert, spec: EncodingSpec, policy: WindowPolicy, meta: dict[str, Any]
) -> None:
    """Write a pretrained encoder's folder (no heads trained, no thresholds)."""
    _write_model(out, PRETRAINED_FORMAT, model, spec, policy, meta)


@dataclass
class Pretrained:
    """A `riskstream pretrain` folder: what `train --init` adopts."""

    path: Path
    model_config: ModelConfig
    spec: EncodingSpec
    policy: WindowPolicy
    state: dict[str, Any]  # the weights (safetensors)
    meta: dict[str, Any]

    @property
    def session_gap_s(self) -> int:
        """The inactivity gap that sessionised the pretraining data."""
        return int(self.meta.get("session_gap_s", 1800))


def is_pretrained(path: Path) -> bool:
    """Whether `path` is a `riskstream pretrain` folder (else, for --init, a Hugging Face BERT)."""
    try:
        return bool(
            json.loads((path / FILES["config"]).read_text()).get("format") == PRETRAINED_FORMAT
        )
    except (OSError, ValueError, AttributeError):
        return False


def load_pretrained(path: Path) -> Pretrained:
    """Read a `riskstream pretrain` folder; errors name the file."""
    config = _read_json(path / FILES["config"])
    if config.get("format") != PRETRAINED_FORMAT:
        raise TrainingError(f"{path / FILES['config']}: format is not {PRETRAINED_FORMAT}")
    spec, policy = _spec_policy(path)
    weights = path / FILES["weights"]
    if not weights.is_file():
        raise TrainingError(f"{weights}: missing from the pretrained folder")
    meta = {k: v for k, v in config.items() if k != "model"}
    model_config = ModelConfig.from_dict(config["model"])
    return Pretrained(path, model_config, spec, policy, load_file(str(weights)), meta)


def _spec_policy(path: Path) -> tuple[EncodingSpec, WindowPolicy]:
    try:
        spec = EncodingSpec.from_json((path / FILES["spec"]).read_text())
        policy = WindowPolicy.from_dict(_read_json(path / FILES["policy"]))
    except FileNotFoundError as exc:
        raise TrainingError(f"{exc.filename}: missing from the checkpoint") from None
    except IncompatibleSpec as exc:
        raise TrainingError(f"{path}: {exc}") from exc
    return spec, policy


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainingError(f"{path}: missing from the checkpoint") from None
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path}: unreadable ({exc})") from exc


def load_checkpoint(path: Path) -> Checkpoint:
    """Load and check a checkpoint folder; errors name the file."""
    if not path.is_dir():
        raise TrainingError(f"--model {path}: not a checkpoint folder")
    config = _read_json(path / FILES["config"])
    if config.get("format") == PRETRAINED_FORMAT:
        raise TrainingError(
            f"--model {path}: a pretrained encoder without trained heads; "
            f"fine-tune it first (riskstream train --init {path})"
        )
    if config.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path / FILES['config']}: format is not {CHECKPOINT_FORMAT}")
    spec, policy = _spec_policy(path)
    model_config = ModelConfig.from_dict(config["model"])
    model = EventBert(model_config)
    weights = path / FILES["weights"]
    if not weights.is_file():
        raise TrainingError(f"{weights}: missing from the checkpoint")
    try:
        model.load_state_dict(load_file(str(weights)))
    except (OSError, RuntimeError) as exc:
        raise TrainingError(f"{weights}: does not fit the model config ({exc})") from exc
    model.eval()
    thresholds = {str(k): float(v) for k, v in _read_json(path / FILES["thresholds"]).items()}
    meta = CheckpointMeta.from_dict(config, str(path / FILES["config"]))
    trees = None
    if (path / FILES["trees"]).is_file():
        try:
            trees = tree_models_from_json((path / FILES["trees"]).read_text())
        except (OSError, ValueError, TypeError) as exc:
            raise TrainingError(f"{path / FILES['trees']}: unreadable ({exc})") from exc
    if meta.ensemble is not None and trees is None:
        raise TrainingError(f"{path / FILES['trees']}: missing, but the checkpoint blends it")
    return Checkpoint(model, model_config, spec, policy, thresholds, meta, trees)
