"""Start the Q-Former from a pretrained BERT (transformers layout), as BLIP-2 starts from bert-base.

Self-attention, both feed-forward blocks (query and text start as copies of BERT's one) and the
embeddings are copied; cross-attention has no BERT counterpart and keeps its random init.
"""

from __future__ import annotations

import torch

from ..pretrained.weights import load_safetensors_model
from .qformer import QFormer


def init_from_bert(qformer: QFormer, name_or_path: str) -> list[str]:
    """Copy BERT's weights into `qformer`; returns the Q-Former parameter names that were set."""
    from transformers import BertModel  # here: importing BERT's modelling code adds seconds to every start

    bert = load_safetensors_model(BertModel, name_or_path, "qformer.bert_init")
    source, config = bert.state_dict(), qformer.config
    if bert.config.hidden_size != config.hidden_size or bert.config.num_hidden_layers < config.num_layers:
        raise ValueError(
            f"qformer.bert_init={name_or_path!r} has hidden_size={bert.config.hidden_size} and "
            f"{bert.config.num_hidden_layers} layers; the Q-Former needs hidden_size={config.hidden_size} "
            f"and at least {config.num_layers} layers"
        )
    copies: dict[str, torch.Tensor] = {
        "embed_norm.weight": source["embeddings.LayerNorm.weight"],
        "embed_norm.bias": source["embeddings.LayerNorm.bias"],
    }
    for i in range(config.num_layers):
        bert_layer, ours = f"encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            copies[ours + f"self_attn.qkv.{kind}"] = torch.cat(
                [source[bert_layer + f"attention.self.{p}.{kind}"] for p in ("query", "key", "value")]
            )
            copies[ours + f"self_attn.out.{kind}"] = source[bert_layer + f"attention.output.dense.{kind}"]
            copies[ours + f"self_attn.norm.{kind}"] = source[bert_layer + f"attention.output.LayerNorm.{kind}"]
            for ffn in ("query_ffn", "text_ffn"):
                copies[ours + f"{ffn}.fc1.{kind}"] = source[bert_layer + f"intermediate.dense.{kind}"]
                copies[ours + f"{ffn}.fc2.{kind}"] = source[bert_layer + f"output.dense.{kind}"]
                copies[ours + f"{ffn}.norm.{kind}"] = source[bert_layer + f"output.LayerNorm.{kind}"]
    targets = qformer.state_dict()
    with torch.no_grad():
        for key, value in copies.items():
            targets[key].copy_(value)
        # BERT's vocabulary is a prefix of ours ([DEC] and friends are appended), likewise positions
        for ours, theirs in (("word_embeddings.weight", "embeddings.word_embeddings.weight"),
                             ("position_embeddings.weight", "embeddings.position_embeddings.weight")):
            rows = min(targets[ours].shape[0], source[theirs].shape[0])
            targets[ours][:rows].copy_(source[theirs][:rows])
            copies[ours] = source[theirs]
    return sorted(copies)
