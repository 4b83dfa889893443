"""`Blip2`: frozen image encoder -> trainable Q-Former -> projection -> frozen language model.

The model takes tensors, as transformers' `Blip2ForConditionalGeneration` does; `model.processor`
(a `Blip2Processor`) makes them from images and text, and `caption`, `ask` and `scores`
(`processing/inference.py`) do both for you. Saving and loading are `hub.py`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from torch import nn

from ..config import Blip2Config, ConfigError
from ..lm.frozen_lm import FrozenLM
from ..lm.tokenizers import QFormerTokenizer
from ..processing.inference import InferenceMixin, inference
from ..processing.processor import Blip2Processor
from ..vision.encoders import Pixels, build_encoder
from .bert_init import init_from_bert
from .hub import MODEL_CARD, HubMixin
from .qformer import QFormer
from .stage1 import Stage1Heads, hard_negatives


class Blip2(nn.Module, InferenceMixin, HubMixin, library_name="qformer", tags=["blip-2", "q-former", "image-to-text"],
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
        self.qformer = QFormer(qformer_config)
        if qformer_config.bert_init:
            init_from_bert(self.qformer, qformer_config.bert_init)
        self.heads = Stage1Heads(qformer_config)
        # step 3: the frozen LM and the projection into its embedding space
        self.lm = FrozenLM(config.lm) if config.lm is not None else None
        self.projection = nn.Linear(qformer_config.hidden_size, self.lm.hidden_size) if self.lm else None
        self.onnx_visual = None  # an OnnxVisualPrompt, set when loaded from an ONNX export
        self.config = dataclasses.replace(config, qformer=qformer_config)
        # step 4: the processor that makes this model's tensors (it holds no weights, and pickles)
        self.processor = Blip2Processor(self.vision.preprocessor, qformer_config,
                                        self.lm.tokenizer if self.lm else None,
                                        self.lm.kind if self.lm else None, config.lm)

    @property
    def tokenizer(self) -> QFormerTokenizer:
        """The Q-Former's text tokenizer (stage 1 and scores only: captioning never needs it)."""
        tokenizer = self.processor.qformer_tokenizer
        if len(tokenizer) > self.config.qformer.vocab_size:
            raise ConfigError(f"qformer.vocab_size={self.config.qformer.vocab_size} is smaller "
                              f"than the {len(tokenizer)} "
                              f"tokens of qformer.tokenizer={self.config.qformer.tokenizer!r} (with [DEC] added)")
        return tokenizer

    @property
    def device(self) -> torch.device:
        return self.qformer.query_tokens.device

    def _require_lm(self, action: str) -> None:
        if self.lm is None:
            raise ValueError(f"this model has no language model (config.lm is None), so it cannot {action}; "
                             "it scores image-text pairs only")

    # --- the building blocks ------------------------------------------------------------------

    def encode_images(self, pixels: Pixels) -> torch.Tensor:
        pixels = tuple(p.to(self.device) for p in pixels) if isinstance(pixels, tuple) else pixels.to(self.device)
        return self.vision(pixels)  # (B, N, encoder_width), no grad

    def query_outputs(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.qformer(image_tokens)  # (B, Q, D)

    def visual_prompt(self, pixels: Pixels) -> torch.Tensor:
        """The soft prompt for the LM: projected query outputs, `(B, Q, D_lm)`; on onnxruntime when the
        bridge was loaded from an ONNX export (`qformer export --onnx`)."""
        if self.onnx_visual is not None:
            self._require_lm("map queries into a language model")
            prompt = self.onnx_visual(pixels.float().cpu().numpy())
            return torch.from_numpy(prompt).to(self.device, self.lm.dtype)
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
        pixel_values: Pixels | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
        image_ids: torch.Tensor | None = None,
        stage: Literal[1, 2] = 2,
    ) -> dict[str, torch.Tensor]:
        """Losses for one batch from the processor's tensors. Stage 1 takes `qformer_input_ids` and
        `qformer_attention_mask` and gives `itc`, `itm`, `itg`; stage 2 takes the LM's `input_ids`,
        `attention_mask` and `labels` and gives `lm`. `loss` is their sum. `image_tokens` (the frozen
        encoder's output, e.g. from a feature cache) may stand in for `pixel_values`."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        if image_tokens is None:
            if pixel_values is None:
                raise ValueError("forward needs pixel_values (or image_tokens from the frozen encoder)")
            image_tokens = self.encode_images(pixel_values)  # (B, N, Dv), no grad
        image_tokens = image_tokens.to(self.device)
        if stage == 1:
            if qformer_input_ids is None or qformer_attention_mask is None:
                raise ValueError("stage 1 needs qformer_input_ids and qformer_attention_mask (processor.qformer_text)")
            return self.stage1_losses(image_tokens, qformer_input_ids, qformer_attention_mask, image_ids)
        if input_ids is None or attention_mask is None or labels is None:
            raise ValueError("stage 2 needs input_ids, attention_mask and labels (processor.lm_training)")
        return self.stage2_loss(image_tokens, input_ids, attention_mask, labels)

    def stage1_losses(self, image_tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                      image_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        batch = ids.shape[0]
        if batch < 2:
            raise ValueError("stage 1 needs at least 2 image-text pairs per batch (ITC and ITM contrast them)")
        queries = self.qformer.num_queries
        ids, mask = ids.to(self.device), mask.to(self.device)  # (B, T)
        # step 1: ITC, queries and text in one pass that keeps them apart
        hidden = self.qformer(image_tokens, ids, mask, mode="unimodal")  # (B, Q + T, D)
        image_feats = self.heads.image_features(hidden[:, :queries])  # (B, Q, E)
        text_feats = self.heads.text_features(hidden[:, queries])  # (B, E), the [CLS] output
        itc, similarity = self.heads.itc_loss(image_feats, text_feats)
        # step 2: ITM on positives, (image, hard negative text) and (hard negative image, text)
        negative_text, negative_image = hard_negatives(similarity, image_ids)
        pair_tokens = torch.cat([image_tokens, image_tokens, image_tokens[negative_image]])  # (3B, N, Dv)
        pair_ids = torch.cat([ids, ids[negative_text], ids])
        pair_mask = torch.cat([mask, mask[negative_text], mask])
        pair_hidden = self.qformer(pair_tokens, pair_ids, pair_mask, mode="bidirectional")
        itm_labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(self.device)
        itm = nn.functional.cross_entropy(self.heads.itm_logits(pair_hidden[:, :queries]), itm_labels)
        # step 3: ITG, text generated from the queries through the causal mask; [DEC] starts the text
        dec_ids = ids.clone()
        dec_ids[:, 0] = self.tokenizer.dec_token_id
        gen_hidden = self.qformer(image_tokens, dec_ids, mask, mode="causal")
        itg = self.heads.itg_loss(gen_hidden[:, queries:], dec_ids, mask)
        return {"loss": itc + itm + itg, "itc": itc, "itm": itm, "itg": itg}

    def stage2_loss(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self._require_lm("train stage 2 (the LM loss)")
        prefix = self.project(self.query_outputs(image_tokens))  # (B, Q, D_lm)
        loss = self.lm.loss(prefix, input_ids, attention_mask, labels)
        return {"loss": loss, "lm": loss}

    # --- inference on tensors -----------------------------------------------------------------

    @inference
    def generate(self, pixel_values: Pixels, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **generation: Any) -> torch.Tensor:
        """New token ids `(B, T_new)` from pixels and prompt ids (ours, or a BLIP-2 processor's, whose
        `input_ids` may hold `num_queries` `<image>` tokens per row)."""
        self._require_lm("generate text")
        return self.lm.generate(self.visual_prompt(pixel_values), input_ids, attention_mask, **generation)

    @inference
    def match_scores(self, pixel_values: Pixels, qformer_input_ids: torch.Tensor, qformer_attention_mask: torch.Tensor,
                     method: Literal["itc", "itm"] = "itc") -> torch.Tensor:
        """`(num_images, num_texts)`: ITC cosine similarity, or ITM match probability, of every pair."""
        image_tokens = self.encode_images(pixel_values)
        ids, mask = qformer_input_ids.to(self.device), qformer_attention_mask.to(self.device)
        if method == "itc":
            image_feats = self.heads.image_features(self.query_outputs(image_tokens))
            text_feats = self.heads.text_features(self.qformer(None, ids, mask)[:, 0])
            return self.heads.similarity(image_feats, text_feats)
        rows = []
        for tokens in image_tokens:  # every text against one image at a time
            hidden = self.qformer(tokens[None].expand(len(ids), -1, -1), ids, mask, mode="bidirectional")
            rows.append(self.heads.itm_logits(hidden[:, : self.qformer.num_queries]).softmax(-1)[:, 1])
        return torch.stack(rows)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
