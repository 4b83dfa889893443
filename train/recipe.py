"""Training recipes: a YAML/JSON file, then `key=value` overrides, resolved into typed dataclasses."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qformer.config.typed import ConfigError, apply_overrides, check_bounds, from_plain, load_yaml, parse_override
from qformer.processing.prompts import MAX_QUESTION_CHARS

MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of settings


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
    max_unreadable_in_a_row: int = 100  # unreadable images in a row that end the run (the data is at fault)
    num_workers: int = 2  # DataLoader processes decoding and preprocessing images; 0: in the main process

    def __post_init__(self) -> None:
        if not self.train:
            raise ConfigError("data.train is required: a folder, a .jsonl/.parquet file or a hub dataset name")
        check_bounds(self, {"batch_size": (1, 1024), "eval_size": (1, 100_000), "shuffle_buffer": (1, 1_000_000),
                            "max_unreadable_in_a_row": (1, 1_000_000), "num_workers": (0, 64)}, "data")


@dataclass
class OptimConfig:
    lr: float = 1e-4  # BLIP-2's peak learning rate
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    grad_accumulation: int = 1

    def __post_init__(self) -> None:
        check_bounds(self, {"lr": (1e-12, 1.0), "weight_decay": (0.0, 1.0), "betas": (0.0, 0.999999),
                            "warmup_steps": (0, 100_000_000), "grad_clip": (0.0, 1e6),
                            "grad_accumulation": (1, 1024)}, "optim")


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
        self.data = from_plain(DataConfig, self.data, "data")
        self.optim = from_plain(OptimConfig, self.optim, "optim")
        self.optim.betas = tuple(self.optim.betas)
        check_bounds(self, {"max_steps": (1, 100_000_000), "seed": (0, 2**32 - 1), "save_every": (0, 100_000_000),
                            "keep_last": (0, 1000), "eval_every": (0, 100_000_000), "log_every": (1, 100_000_000),
                            "max_bad_steps": (1, 1_000_000)}, "")
        if self.prompt is not None and len(self.prompt) > MAX_QUESTION_CHARS:
            raise ConfigError(f"prompt is {len(self.prompt)} characters long; at most {MAX_QUESTION_CHARS}")
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        if self.stage == 1 and self.data.batch_size < 2:
            raise ConfigError("stage 1 contrasts pairs within a batch: data.batch_size must be at least 2")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision={self.mixed_precision!r} is not one of 'no', 'bf16', 'fp16'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a recipe and apply `key=value` overrides (dotted keys; values read as YAML, so 1e-4 is a number)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no recipe file at {path}")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise ConfigError(f"recipe {path} is {path.stat().st_size:,} bytes; a recipe is a page of settings (at most "
                          f"{MAX_RECIPE_BYTES:,})")
    try:
        text = path.read_text(encoding="utf-8")
        data = load_yaml(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (ConfigError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"recipe {path}: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of keys to values at the top, got {type(data).__name__}")
    data = apply_overrides(data, dict(parse_override(item) for item in overrides))
    return from_plain(TrainConfig, data, "recipe")


def save_resolved(config: TrainConfig, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "recipe.resolved.json").write_text(json.dumps(config.to_dict(), indent=2))
