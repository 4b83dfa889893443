"""Typed configs: one dataclass per component, composed by `Blip2Config`.

Dicts from JSON are turned into dataclasses strictly: an unknown key is an error that names it.
Dimensions that depend on the built backbones (image token width, LM width) may be left as
`None` here and are filled in, and checked, when the model is built.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..processing.prompts import MAX_QUESTION_CHARS
from .typed import ConfigError, apply_overrides, describe_value, from_plain

VISION_BACKENDS = ("timm", "open_clip", "transformers", "fusion")
LM_KINDS = ("causal", "seq2seq")
DTYPES = ("float32", "bfloat16", "float16")
LM_QUANTIZE = ("int8", "int4")  # block-wise weights on onnxruntime (qformer/deploy/onnx_lm.py)
MAX_PROMPT_TOKENS = 4096  # the text around the visual prompt; a caption prompt or a question needs far less
MAX_IMAGE_SIDE = 4096  # an encoder's input size, in pixels a side


# Options of the loaders behind the backends (transformers, timm, open_clip) that choose files, formats
# or code. A config may come from someone else, so none of them can be set from one: they could load
# a pickle (weights_only), run a repository's code (trust_remote_code) or read other files.
LOADER_OPTIONS = frozenset({
    "weights_only", "trust_remote_code", "use_safetensors", "from_tf", "from_flax", "code_revision",
    "revision", "token", "use_auth_token", "cache_dir", "local_files_only", "force_download", "proxies",
    "subfolder", "variant", "gguf_file", "device_map", "offload_folder", "offload_state_dict", "_fast_init",
    "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "pretrained_strict",
    "load_weights", "pretrained_image", "pretrained_text", "pretrained_image_path", "pretrained_text_path",
    "require_pretrained", "jit", "auto_map", "config", "state_dict", "quantization_config",
})


def check_loader_options(value: Any, key: str) -> None:
    """Refuse loader options anywhere inside a config mapping (`model_kwargs`, `random_config`)."""
    if isinstance(value, dict):
        for name, inner in value.items():
            if name in LOADER_OPTIONS:
                raise ConfigError(
                    f"{key}.{name}: loader options cannot be set from a config, because a config may come from "
                    f"someone else and {name!r} decides which files or code get loaded. {key} holds architecture "
                    "settings only (sizes, depths, drop rates)"
                )
            check_loader_options(inner, f"{key}.{name}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            check_loader_options(inner, f"{key}[{i}]")
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise ConfigError(f"{key} must hold plain values (numbers, strings, lists, objects), got "
                          f"{describe_value(value)}")


def _check_choice(value: Any, choices: tuple, key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {list(choices)}")


@dataclass
class VisionConfig:
    """A frozen image encoder: which library builds it, from which weights, and how to preprocess."""

    backend: str = "timm"
    model_name: str = ""  # timm / open_clip model name, or a transformers model_type for random init
    pretrained: str | None = None  # checkpoint file, folder, hub id, or open_clip pretrained tag
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # architecture overrides
    image_size: int | None = None  # None: the backbone's own default
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None  # "bicubic" / "bilinear"; None: the backbone's own
    dtype: str = "float32"
    seed: int = 0  # random-init backbones are a pure function of their config, so never need saving
    members: list[VisionConfig] = field(default_factory=list)  # backend="fusion" only
    fusion_width: int | None = None  # backend="fusion": common width of the projected token sets

    def __post_init__(self) -> None:
        _check_choice(self.backend, VISION_BACKENDS, "vision.backend")
        _check_choice(self.dtype, DTYPES, "vision.dtype")
        if self.image_size is not None and not 1 <= self.image_size <= MAX_IMAGE_SIDE:
            raise ConfigError(f"vision.image_size must be from 1 to {MAX_IMAGE_SIDE}, got {self.image_size}")
        check_loader_options(self.model_kwargs, "vision.model_kwargs")
        self.members = [from_plain(VisionConfig, m, f"vision.members[{i}]") for i, m in enumerate(self.members)]
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                if len(value) != 3:
                    raise ConfigError(f"vision.{key} needs 3 values (R, G, B), got {list(value)}")
                setattr(self, key, tuple(float(v) for v in value))
        if self.backend == "fusion":
            if len(self.members) < 2:
                raise ConfigError("vision.backend='fusion' needs at least 2 vision.members")
            if not self.fusion_width or self.fusion_width <= 0:
                raise ConfigError("vision.backend='fusion' needs a positive vision.fusion_width")
        else:
            if self.members:
                raise ConfigError(f"vision.members is only for backend='fusion', not {self.backend!r}")
            if not self.model_name and not self.pretrained:
                raise ConfigError(f"vision: backend {self.backend!r} needs vision.model_name or vision.pretrained")


# What a config may ask of the bridge: wide enough for any published Q-Former (BLIP-2's is 32 queries,
# 768 wide, 12 layers), bounded so that a config from someone else cannot ask for all the memory.
QFORMER_BOUNDS = {"num_queries": 4096, "hidden_size": 16384, "num_layers": 256, "num_heads": 1024,
                  "intermediate_size": 65536, "cross_attention_freq": 256, "encoder_width": 65536,
                  "vocab_size": 1 << 20, "max_text_length": 65536, "max_position_embeddings": 65536,
                  "embed_dim": 16384}
MAX_QFORMER_PARAMETERS = 2_000_000_000


@dataclass
class QFormerConfig:
    """The trainable bridge: learned queries and BERT-style layers (BLIP-2 defaults)."""

    num_queries: int = 32
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_freq: int = 2
    encoder_width: int | None = None  # image-token width; None: taken from the built encoder
    vocab_size: int = 30523  # bert-base-uncased + [DEC]
    max_text_length: int = 32
    max_position_embeddings: int = 512
    embed_dim: int = 256  # ITC projection width
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    tokenizer: str = "bert-base-uncased"  # hub id, folder, or "byt5" (built in, needs no files)
    bert_init: str | None = None  # a BERT checkpoint (transformers layout) to initialise the layers from

    def __post_init__(self) -> None:
        for key, high in QFORMER_BOUNDS.items():
            value = getattr(self, key)
            if value is not None and not 1 <= value <= high:
                raise ConfigError(f"qformer.{key} must be from 1 to {high:,}, got {value}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"qformer.hidden_size={self.hidden_size} is not divisible by qformer.num_heads={self.num_heads}"
            )
        if self.max_text_length > self.max_position_embeddings:
            raise ConfigError(
                f"qformer.max_text_length={self.max_text_length} exceeds "
                f"qformer.max_position_embeddings={self.max_position_embeddings}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"qformer.dropout must be in [0, 1), got {self.dropout}")
        if self.parameter_count() > MAX_QFORMER_PARAMETERS:
            raise ConfigError(f"qformer: these sizes make a bridge of about "
                              f"{self.parameter_count():,} parameters, over "
                              f"the {MAX_QFORMER_PARAMETERS:,} a config may ask for; check its sizes")

    def parameter_count(self) -> int:
        """About how many parameters the bridge has (its layers, embeddings and queries), from the sizes alone."""
        d, width = self.hidden_size, self.encoder_width or self.hidden_size
        layer = 4 * d * d + 2 * 2 * d * self.intermediate_size  # self-attention, the query and text FFNs
        cross = 2 * d * d + 2 * d * width
        crossing = -(-self.num_layers // self.cross_attention_freq)
        return (self.num_layers * layer + crossing * cross
                + (self.vocab_size + self.max_position_embeddings + self.num_queries) * d)


@dataclass
class LMConfig:
    """A frozen language model: a transformers causal or seq2seq LM, from a hub id, folder or GGUF file."""

    name_or_path: str | None = None
    gguf_file: str | None = None  # file name inside name_or_path (or a full path) to load GGUF weights
    random_config: dict[str, Any] | None = None  # {"model_type": ..., dims...}: random weights, no files
    kind: str | None = None  # "causal" | "seq2seq"; None: read from the model's config
    tokenizer: str | None = None  # hub id, folder, or "byt5"; None: same as name_or_path
    dtype: str = "float32"
    seed: int = 0  # for random_config: the same config always builds the same weights
    prompt: str = ""  # caption prompt
    question_template: str = "Question: {question} Answer:"
    max_prompt_tokens: int = 128
    quantize: str | None = None  # "int8" | "int4": the LM runs on onnxruntime with block-wise low-bit weights
    onnx: str | None = None  # an exported LM engine folder (`qformer export --onnx` writes ./language_model)

    def __post_init__(self) -> None:
        _check_choice(self.dtype, DTYPES, "lm.dtype")
        if self.quantize is not None:
            _check_choice(self.quantize, LM_QUANTIZE, "lm.quantize")
        if self.name_or_path and self.name_or_path.endswith(".gguf") and self.gguf_file is None:
            # a path straight to a .gguf file: transformers wants the folder and the file name apart
            self.name_or_path, self.gguf_file = str(Path(self.name_or_path).parent), Path(self.name_or_path).name
        if self.kind is not None:
            _check_choice(self.kind, LM_KINDS, "lm.kind")
        if (self.name_or_path is None) == (self.random_config is None):
            raise ConfigError("lm: give exactly one of lm.name_or_path or lm.random_config")
        if self.random_config is not None:
            check_loader_options(self.random_config, "lm.random_config")
            if not isinstance(self.random_config.get("model_type"), str):
                raise ConfigError("lm.random_config needs a 'model_type' (e.g. 'llama', 'opt', 't5')")
        if "{question}" not in self.question_template:
            raise ConfigError(f"lm.question_template must contain '{{question}}', got {self.question_template!r}")
        if not 1 <= self.max_prompt_tokens <= MAX_PROMPT_TOKENS:
            raise ConfigError(f"lm.max_prompt_tokens must be from 1 to {MAX_PROMPT_TOKENS}, got "
                              f"{self.max_prompt_tokens}")
        for key in ("prompt", "question_template"):
            if len(getattr(self, key)) > MAX_QUESTION_CHARS:
                raise ConfigError(f"lm.{key} is {len(getattr(self, key))} characters long; at "
                                  f"most {MAX_QUESTION_CHARS}")


@dataclass
class Blip2Config:
    """The whole model: a frozen vision encoder, the Q-Former bridge and a frozen LM."""

    vision: VisionConfig
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    lm: LMConfig | None = None  # None: a stage-1-only model (retrieval scores, no text generation)
    name: str = "custom"

    def __post_init__(self) -> None:
        self.vision = from_plain(VisionConfig, self.vision, "vision")
        self.qformer = from_plain(QFormerConfig, self.qformer, "qformer")
        if self.lm is not None:
            self.lm = from_plain(LMConfig, self.lm, "lm")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Blip2Config:
        return from_plain(cls, dict(data), "config")

    @classmethod
    def from_json(cls, path: str | Path) -> Blip2Config:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e}); fix or replace this config file") from e
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, **overrides: Any) -> Blip2Config:
        """A new config with overrides applied: `qformer={"num_layers": 2}` or `**{"qformer.num_layers": 2}`."""
        return Blip2Config.from_dict(apply_overrides(self.to_dict(), overrides))


def _path_slots(data: dict) -> list[tuple[dict, str, str]]:
    """(section, key, dotted name) of every config value that may name files."""
    vision = [data["vision"], *data["vision"]["members"]]
    slots = [(v, key, f"vision.{key}") for v in vision for key in ("pretrained", "model_name")]
    slots += [(data["qformer"], key, f"qformer.{key}") for key in ("tokenizer", "bert_init")]
    if data.get("lm"):
        slots += [(data["lm"], key, f"lm.{key}") for key in ("name_or_path", "gguf_file", "tokenizer", "onnx")]
    return slots


def has_relative_paths(config: Blip2Config) -> bool:
    return any(str(section[key]).startswith("./") for section, key, _ in _path_slots(config.to_dict()))


def resolve_relative_paths(config: Blip2Config, root: Path) -> Blip2Config:
    """The config of a saved folder with its paths as the loaders read them: `./name` inside the folder
    (made absolute), hub ids and `pypi:` packages as they are. A saved config may come from someone
    else, so anything that would lead outside the folder is refused by name (`qformer/files.py`)."""
    from ..files import file_name_only, named_in_folder

    data = config.to_dict()
    where = Path(root) / "config.json"
    for section, key, name in _path_slots(data):
        if key == "gguf_file":
            file_name_only(section[key], where, name)
        elif key == "onnx" and section[key] is not None and not str(section[key]).startswith("./"):
            raise ConfigError(f"{name}={section[key]!r} in {where}: an exported language model is the folder's own "
                              "(./language_model); export the model again")
        else:
            section[key] = named_in_folder(section[key], root, f"{where}: {name}", may_be_local=key != "model_name")
    return Blip2Config.from_dict(data)
