"""Training recipes: a YAML/JSON file, then `key=value` overrides, resolved into typed dataclasses."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qformer.config import ConfigError, _from_dict


@dataclass
class DataConfig:
    train: str = ""  # image folder with metadata.jsonl/.csv, a .jsonl / .parquet file, or a hub dataset
    eval: str | None = None
    split: str = "train"
    eval_split: str = "train"
    streaming: bool = False
    shuffle_buffer: int = 1000  # streaming only
    batch_size: int = 8
    eval_size: int = 64  # examples scored at each evaluation

    def __post_init__(self) -> None:
        if not self.train:
            raise ConfigError("data.train is required: a folder, a .jsonl/.parquet file or a hub dataset name")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, got {self.batch_size}")


@dataclass
class OptimConfig:
    lr: float = 1e-4  # BLIP-2's peak learning rate
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    grad_accumulation: int = 1


@dataclass
class TrainConfig:
    """One training run. `model` is a preset, config file or saved folder; `stage` 1 or 2."""

    model: str = "tiny-random"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    stage: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    max_steps: int = 1000
    seed: int = 0
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    output_dir: str = "runs/train"
    save_every: int = 200
    keep_last: int = 2
    eval_every: int = 0  # 0: only at the end
    log_every: int = 10
    max_bad_steps: int = 5  # consecutive NaN/inf losses before the run stops
    prompt: str | None = None  # stage-2 caption prompt; None: the model's own
    feature_cache: str | None = None  # folder for frozen image tokens, computed once and reused

    def __post_init__(self) -> None:
        self.data = _from_dict(DataConfig, self.data, "data")
        self.optim = _from_dict(OptimConfig, self.optim, "optim")
        self.optim.betas = tuple(self.optim.betas)
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        if self.stage == 1 and self.data.batch_size < 2:
            raise ConfigError("stage 1 contrasts pairs within a batch: data.batch_size must be at least 2")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision={self.mixed_precision!r} is not one of 'no', 'bf16', 'fp16'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a recipe and apply `key=value` overrides (dotted keys; values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no recipe file at {path}")
    data = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return _from_dict(TrainConfig, data, "recipe")


def save_resolved(config: TrainConfig, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "recipe.resolved.json").write_text(json.dumps(config.to_dict(), indent=2))
