"""`Blip2`: frozen image encoder -> trainable Q-Former -> projection -> frozen language model."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from huggingface_hub import ModelHubMixin, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from torch import nn

from .bert_init import init_from_bert
from .checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    has_relative_paths,
    load_bridge_state,
    read_bridge,
    resolve_relative_paths,
    save_bridge,
)
from .config import Blip2Config, ConfigError
from .encoders import Pixels, build_encoder
from .images import ImageInput, ImageLoadError, load_image
from .llm import FrozenLM
from .qformer import QFormer
from .stage1 import Stage1Heads, hard_negatives
from .tokenizers import QFormerTokenizer

MODEL_CARD = """---
{{ card_data }}
---

# {{ name }}

A BLIP-2 style bridge made with [qformer]({{ repo_url }}): a Q-Former with {{ num_queries }} learned
queries between a frozen image encoder and a frozen language model. This repository holds only the
bridge (queries, Q-Former, heads and projection); the frozen backbones are named in `config.json`.

- Image encoder: `{{ vision }}`
- Language model: `{{ lm }}`
- Trainable parameters: {{ num_params }}

```python
import qformer
model = qformer.Blip2.from_pretrained("{{ repo_id }}")
print(model.caption(["photo.jpg"]))
```
"""


def inference(method):
    """Run `method` without gradients and with dropout off, whatever mode the model is in (a model
    fresh from training is in training mode), then give the mode back: the same input always gives
    the same answer."""

    @functools.wraps(method)
    def run(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        was_training = self.training
        self.train(False)
        try:
            with torch.no_grad():
                return method(self, *args, **kwargs)
        finally:
            self.train(was_training)

    return run


class Blip2(nn.Module, ModelHubMixin, library_name="qformer", tags=["blip-2", "q-former", "image-to-text"],
            repo_url="https://github.com/qformer/qformer", model_card_template=MODEL_CARD):
    """A BLIP-2 model. Only the bridge trains: `query_tokens`, `qformer`, `heads` and `projection`
    (and fusion projections, when the vision config fuses several encoders)."""

    def __init__(self, config):  # untyped on purpose: the hub mixin must hand us the raw dict
        super().__init__()
        config = config if isinstance(config, Blip2Config) else Blip2Config.from_dict(config)
        # step 1: the frozen image encoder fixes the width of the image tokens
        self.vision = build_encoder(config.vision)
        qformer_config = config.qformer
        if qformer_config.encoder_width is None:
            qformer_config = dataclasses.replace(qformer_config, encoder_width=self.vision.width)
        elif qformer_config.encoder_width != self.vision.width:
            raise ConfigError(
                f"qformer.encoder_width={qformer_config.encoder_width} but the vision encoder "
                f"({config.vision.backend}:{config.vision.model_name}) gives tokens of width {self.vision.width}"
            )
        # step 2: the Q-Former and the stage-1 heads
        self._tokenizer: QFormerTokenizer | None = None  # loaded on first use of the text branch
        self.qformer = QFormer(qformer_config)
        if qformer_config.bert_init:
            init_from_bert(self.qformer, qformer_config.bert_init)
        self.heads = Stage1Heads(qformer_config)
        # step 3: the frozen LM and the projection into its embedding space
        self.lm = FrozenLM(config.lm) if config.lm is not None else None
        self.projection = nn.Linear(qformer_config.hidden_size, self.lm.hidden_size) if self.lm else None
        self.config = dataclasses.replace(config, qformer=qformer_config)

    @property
    def tokenizer(self) -> QFormerTokenizer:
        """The Q-Former's text tokenizer (stage 1 and scores only: captioning never needs it)."""
        if self._tokenizer is None:
            config = self.config.qformer
            tokenizer = QFormerTokenizer(config.tokenizer, config.max_text_length)
            if len(tokenizer) > config.vocab_size:
                raise ConfigError(
                    f"qformer.vocab_size={config.vocab_size} is smaller than the {len(tokenizer)} "
                    f"tokens of qformer.tokenizer={config.tokenizer!r} (with [DEC] added)"
                )
            self._tokenizer = tokenizer
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self.qformer.query_tokens.device

    # --- the building blocks ------------------------------------------------------------------

    def load_images(
        self, images: ImageInput | Sequence[ImageInput], return_exceptions: bool = False
    ) -> tuple[Pixels | None, list[ImageLoadError | None]]:
        """Pixels for the readable images, and per input either None or the error that stopped it."""
        images = _as_list(images, "images")
        loaded, errors = [], []
        for image in images:
            try:
                loaded.append(load_image(image))
                errors.append(None)
            except ImageLoadError as e:
                if not return_exceptions:
                    raise
                errors.append(e)
        return (self.vision.preprocess(loaded) if loaded else None), errors

    def encode_images(self, pixels: Pixels) -> torch.Tensor:
        pixels = tuple(p.to(self.device) for p in pixels) if isinstance(pixels, tuple) else pixels.to(self.device)
        return self.vision(pixels)  # (B, N, encoder_width), no grad

    def query_outputs(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.qformer(image_tokens)  # (B, Q, D)

    def visual_prompt(self, pixels: Pixels) -> torch.Tensor:
        """The soft prompt for the LM: projected query outputs, `(B, Q, D_lm)`."""
        return self.project(self.query_outputs(self.encode_images(pixels)))

    def project(self, query_outputs: torch.Tensor) -> torch.Tensor:
        """Queries into the LM's embedding space, computed in the LM's dtype as transformers' BLIP-2
        computes its `language_projection`; the weights themselves stay float32, to train."""
        self._require_lm("map queries into a language model")
        dtype = self.lm.dtype
        weight, bias = self.projection.weight.to(dtype), self.projection.bias.to(dtype)
        return nn.functional.linear(query_outputs.to(dtype), weight, bias)  # (B, Q, D_lm)

    # --- training -----------------------------------------------------------------------------

    def forward(
        self,
        pixels: Pixels | None,
        texts: Sequence[str],
        stage: Literal[1, 2] = 2,
        prompts: Sequence[str] | None = None,
        image_ids: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses for one batch: stage 1 gives `itc`, `itm`, `itg`; stage 2 gives `lm`. `loss` is their sum.
        `image_tokens` (the frozen encoder's output, e.g. from a feature cache) may stand in for `pixels`."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        if image_tokens is None:
            image_tokens = self.encode_images(pixels)  # (B, N, Dv), no grad
        if stage == 1:
            return self.stage1_losses(image_tokens.to(self.device), texts, image_ids)
        return self.stage2_loss(image_tokens.to(self.device), texts, prompts)

    def stage1_losses(self, image_tokens: torch.Tensor, texts: Sequence[str], image_ids: torch.Tensor | None = None) -> dict:
        batch = len(texts)
        if batch < 2:
            raise ValueError("stage 1 needs at least 2 image-text pairs per batch (ITC and ITM contrast them)")
        queries = self.qformer.num_queries
        # step 1: tokenized text; the image tokens are the frozen encoder's (B, N, Dv)
        ids, mask = self.tokenizer(texts, self.device)  # (B, T)
        # step 2: ITC, queries and text in one pass that keeps them apart
        hidden = self.qformer(image_tokens, ids, mask, mode="unimodal")  # (B, Q + T, D)
        image_feats = self.heads.image_features(hidden[:, :queries])  # (B, Q, E)
        text_feats = self.heads.text_features(hidden[:, queries])  # (B, E), the [CLS] output
        itc, similarity = self.heads.itc_loss(image_feats, text_feats)
        # step 3: ITM on positives, (image, hard negative text) and (hard negative image, text)
        negative_text, negative_image = hard_negatives(similarity, image_ids)
        pair_tokens = torch.cat([image_tokens, image_tokens, image_tokens[negative_image]])  # (3B, N, Dv)
        pair_ids = torch.cat([ids, ids[negative_text], ids])
        pair_mask = torch.cat([mask, mask[negative_text], mask])
        pair_hidden = self.qformer(pair_tokens, pair_ids, pair_mask, mode="bidirectional")
        itm_labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(self.device)
        itm = nn.functional.cross_entropy(self.heads.itm_logits(pair_hidden[:, :queries]), itm_labels)
        # step 4: ITG, text generated from the queries through the causal mask; [DEC] starts the text
        dec_ids = ids.clone()
        dec_ids[:, 0] = self.tokenizer.dec_token_id
        gen_hidden = self.qformer(image_tokens, dec_ids, mask, mode="causal")
        itg = self.heads.itg_loss(gen_hidden[:, queries:], dec_ids, mask)
        return {"loss": itc + itm + itg, "itc": itc, "itm": itm, "itg": itg}

    def stage2_loss(self, image_tokens: torch.Tensor, targets: Sequence[str], prompts: Sequence[str] | None = None) -> dict:
        self._require_lm("train stage 2 (the LM loss)")
        prefix = self.project(self.query_outputs(image_tokens))  # (B, Q, D_lm)
        prompts = list(prompts) if prompts is not None else [self.config.lm.prompt] * len(targets)
        loss = self.lm.loss(prefix, prompts, targets)
        return {"loss": loss, "lm": loss}

    # --- inference ----------------------------------------------------------------------------

    @inference
    def caption(
        self,
        images: ImageInput | Sequence[ImageInput],
        prompt: str | None = None,
        return_exceptions: bool = False,
        **generation: Any,
    ) -> list[str | ImageLoadError]:
        """One caption per image. With `return_exceptions=True` an unreadable image gives its
        `ImageLoadError` in its place and the others are still captioned."""
        self._require_lm("generate text")
        images = _as_list(images, "images")
        prompt = self.config.lm.prompt if prompt is None else prompt
        return self._generate(images, [prompt] * len(images), return_exceptions, generation)

    @inference
    def ask(
        self,
        images: ImageInput | Sequence[ImageInput],
        questions: str | Sequence[str],
        return_exceptions: bool = False,
        **generation: Any,
    ) -> list[str | ImageLoadError]:
        """One answer per (image, question); a single question is asked of every image."""
        self._require_lm("generate text")
        images = _as_list(images, "images")
        questions = [questions] * len(images) if isinstance(questions, str) else list(questions)
        if len(questions) != len(images):
            raise ValueError(f"ask() got {len(images)} images but {len(questions)} questions")
        for i, q in enumerate(questions):
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"question {i} is empty; ask something about the image")
        prompts = [self.config.lm.question_template.format(question=q.strip()) for q in questions]
        return self._generate(images, prompts, return_exceptions, generation)

    def _require_lm(self, action: str) -> None:
        if self.lm is None:
            raise ValueError(f"this model has no language model (config.lm is None), so it cannot {action}; "
                             "it scores image-text pairs only")

    def _generate(self, images, prompts, return_exceptions, generation) -> list:
        self.lm.prompt_ids(prompts)  # fail on an overlong prompt before any image work
        pixels, errors = self.load_images(images, return_exceptions)
        texts: list = list(errors)
        if pixels is not None:
            kept = [p for p, e in zip(prompts, errors) if e is None]
            answers = iter(self.lm.generate(self.visual_prompt(pixels), kept, **generation))
            texts = [next(answers) if e is None else e for e in errors]
        return texts

    @inference
    def generate(
        self, pixel_values: Pixels, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **generation
    ) -> torch.Tensor:
        """transformers-style generation from a BLIP-2 processor's output: new token ids `(B, T_new)`.
        `input_ids` may hold `num_queries` `<image>` tokens per row (recent processors) or none (older ones)."""
        self._require_lm("generate text")
        prefix = self.visual_prompt(pixel_values)
        mask = attention_mask.to(self.device) if attention_mask is not None else None
        embeds, mask = self.lm.embed_with_prefix(prefix, input_ids.to(self.device), mask)
        return self.lm.generate_from_embeds(embeds, mask, **generation)

    @inference
    def scores(
        self, images: ImageInput | Sequence[ImageInput], texts: Sequence[str], method: Literal["itc", "itm"] = "itc"
    ) -> torch.Tensor:
        """Image-text match scores `(num_images, num_texts)`: ITC cosine similarity, or ITM match probability."""
        texts = _as_list(texts, "texts")
        pixels, _ = self.load_images(images)
        image_tokens = self.encode_images(pixels)
        ids, mask = self.tokenizer(texts, self.device)
        if method == "itc":
            image_feats = self.heads.image_features(self.query_outputs(image_tokens))
            text_feats = self.heads.text_features(self.qformer(None, ids, mask)[:, 0])
            return self.heads.similarity(image_feats, text_feats)
        if method != "itm":
            raise ValueError(f"method must be 'itc' or 'itm', got {method!r}")
        rows = []
        for tokens in image_tokens:  # every text against one image at a time
            pair_tokens = tokens[None].expand(len(texts), -1, -1)
            hidden = self.qformer(pair_tokens, ids, mask, mode="bidirectional")
            rows.append(self.heads.itm_logits(hidden[:, : self.qformer.num_queries]).softmax(-1)[:, 1])
        return torch.stack(rows)

    # --- checkpoints --------------------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def _save_pretrained(self, save_directory: Path) -> None:
        save_bridge(self, save_directory)
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2))

    def generate_model_card(self, *args, **kwargs):
        lm = self.config.lm
        return super().generate_model_card(
            name=self.config.name,
            num_queries=self.config.qformer.num_queries,
            vision=f"{self.config.vision.backend}: {self.config.vision.model_name or self.config.vision.pretrained}",
            lm=(lm.name_or_path or lm.random_config.get("model_type") + " (random)") if lm else "none",
            num_params=f"{sum(p.numel() for p in self.trainable_parameters()):,}",
            repo_id=kwargs.pop("repo_id", "path/to/this/folder"),
            **kwargs,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Blip2:
        """Load a saved bridge from a folder or hub id. Keyword arguments are the hub's download
        options (revision, cache_dir, token, local_files_only...), `map_location`, or config overrides."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (HfHubHTTPError, LocalEntryNotFoundError) as e:
            raise FileNotFoundError(
                f"{pretrained_model_name_or_path}: could not get it from the Hugging Face hub or its local cache "
                f"({e}). Check the id and your connection, or pass a local folder."
            ) from e

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         config: dict | None = None, map_location: str = "cpu", **overrides) -> Blip2:
        if config is None:  # the mixin found no config.json
            raise FileNotFoundError(f"{model_id}: no {CONFIG_NAME}; is this a qformer checkpoint folder?")
        blip2_config = Blip2Config.from_dict(config).with_overrides(**overrides)
        download = dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
                        local_files_only=local_files_only, token=token)
        if Path(model_id).is_dir():
            root = Path(model_id)
        elif has_relative_paths(blip2_config):  # backbones stored in the repo itself: fetch the whole folder
            root = Path(snapshot_download(model_id, **download))
        else:
            root = Path(hf_hub_download(model_id, WEIGHTS_NAME, **download)).parent
        weights = root / WEIGHTS_NAME
        model = cls(resolve_relative_paths(blip2_config, root))
        load_bridge_state(model, read_bridge(weights), f"{model_id}/{WEIGHTS_NAME}")
        return model.to(map_location).eval()

def _as_list(items: Any, what: str) -> list:
    items = [items] if isinstance(items, (str, Path, bytes)) or not isinstance(items, Sequence) else list(items)
    if not items:
        raise ValueError(f"got an empty batch of {what}; pass at least one")
    return items
