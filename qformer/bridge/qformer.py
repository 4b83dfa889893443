"""The Q-Former: learned queries and BERT-style (post-LayerNorm) layers, as in BLIP-2.

Self-attention runs over `[queries; text]` under one of three masks (see `attention_mask`);
cross-attention to the image tokens applies to the query positions only, every
`cross_attention_freq` layers; queries and text have separate feed-forward blocks.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QFormerConfig

MaskMode = Literal["unimodal", "bidirectional", "causal"]


def attention_mask(num_queries: int, text_mask: torch.Tensor | None, mode: MaskMode) -> torch.Tensor:
    """Boolean `(B, 1, L, L)` mask over `[queries; text]`, True where a row may attend to a column.

    - unimodal (ITC): queries see queries, text sees text; neither sees the other.
    - bidirectional (ITM): everything sees everything.
    - causal (ITG): queries see queries; text sees all queries and the text up to itself.
    Padding text (text_mask == 0) is never attended to.
    """
    if text_mask is None:
        raise ValueError("attention_mask needs a text_mask; for queries alone, pass a (B, 0) tensor")
    batch, text_len = text_mask.shape
    length = num_queries + text_len
    device = text_mask.device
    is_query = torch.arange(length, device=device) < num_queries  # (L,)
    if mode == "bidirectional":
        allowed = torch.ones(length, length, dtype=torch.bool, device=device)
    elif mode == "unimodal":
        allowed = is_query[:, None] == is_query[None, :]
    elif mode == "causal":
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        allowed = torch.where(is_query[:, None], is_query[None, :], is_query[None, :] | causal)
    else:
        raise ValueError(f"unknown mask mode {mode!r}; use 'unimodal', 'bidirectional' or 'causal'")
    keys = torch.cat([torch.ones(batch, num_queries, dtype=torch.bool, device=device), text_mask.bool()], dim=1)
    return allowed[None, None] & keys[:, None, None, :]  # (B, 1, L, L)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection, then residual + LayerNorm."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, L, D)
        attended = _attend(q, k, v, mask, self.num_heads, self.dropout if self.training else 0.0)
        return self.norm(x + F.dropout(self.out(attended), self.dropout, self.training))


class CrossAttention(nn.Module):
    """Queries attend to image tokens of another width; residual + LayerNorm."""

    def __init__(self, config: QFormerConfig, encoder_width: int):
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(encoder_width, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(image_tokens).chunk(2, dim=-1)  # 2 x (B, N, D)
        attended = _attend(self.q(x), k, v, None, self.num_heads, self.dropout if self.training else 0.0)
        return self.norm(x + F.dropout(self.out(attended), self.dropout, self.training))


def _attend(q, k, v, mask, num_heads: int, dropout: float) -> torch.Tensor:
    batch, q_len, dim = q.shape

    def heads(t: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, H, L, D/H)
        return t.view(batch, -1, num_heads, dim // num_heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask, dropout_p=dropout)
    return out.transpose(1, 2).reshape(batch, q_len, dim)


class FeedForward(nn.Module):
    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(self.fc2(F.gelu(self.fc1(x))), self.dropout, self.training)
        return self.norm(x + hidden)


class QFormerLayer(nn.Module):
    def __init__(self, config: QFormerConfig, encoder_width: int, has_cross_attention: bool):
        super().__init__()
        self.self_attn = SelfAttention(config)
        self.cross_attn = CrossAttention(config, encoder_width) if has_cross_attention else None
        self.query_ffn = FeedForward(config)
        self.text_ffn = FeedForward(config)

    def forward(self, x, mask, num_queries: int, image_tokens: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn(x, mask)
        queries, text = x[:, :num_queries], x[:, num_queries:]
        if num_queries and self.cross_attn is not None:
            queries = self.cross_attn(queries, image_tokens)
        parts = []
        if num_queries:
            parts.append(self.query_ffn(queries))
        if text.shape[1]:
            parts.append(self.text_ffn(text))
        return torch.cat(parts, dim=1)


class QFormer(nn.Module):
    """Learned queries + text embeddings + layers. Heads for the losses live in `stage1.py`."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        if config.encoder_width is None:
            raise ValueError("QFormer needs qformer.encoder_width (Blip2 fills it in from the vision encoder)")
        self.config = config
        dim = config.hidden_size
        self.query_tokens = nn.Parameter(torch.empty(1, config.num_queries, dim))
        self.word_embeddings = nn.Embedding(config.vocab_size, dim)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, dim)
        self.embed_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(
            QFormerLayer(config, config.encoder_width, i % config.cross_attention_freq == 0)
            for i in range(config.num_layers)
        )
        self.apply(_init_bert_style)
        nn.init.normal_(self.query_tokens, std=0.02)

    @property
    def num_queries(self) -> int:
        return self.config.num_queries

    def forward(
        self,
        image_tokens: torch.Tensor | None = None,  # (B, N, encoder_width); None: text only, no queries
        input_ids: torch.Tensor | None = None,  # (B, T)
        text_mask: torch.Tensor | None = None,  # (B, T), 1 for real tokens
        mode: MaskMode = "unimodal",
    ) -> torch.Tensor:
        """Hidden states `(B, Q + T, D)`: query outputs first, then text outputs."""
        if image_tokens is None and input_ids is None:
            raise ValueError("QFormer.forward needs image_tokens, input_ids, or both")
        parts = []
        # step 1: queries (only when there is an image to look at)
        if image_tokens is not None:
            parts.append(self.query_tokens.expand(image_tokens.shape[0], -1, -1))  # (B, Q, D)
        # step 2: text embeddings; positions count from the first text token
        if input_ids is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            parts.append(self.word_embeddings(input_ids) + self.position_embeddings(positions))  # (B, T, D)
            if text_mask is None:
                text_mask = torch.ones_like(input_ids)
        else:
            text_mask = torch.ones(image_tokens.shape[0], 0, dtype=torch.long, device=image_tokens.device)
        x = F.dropout(self.embed_norm(torch.cat(parts, dim=1)), self.config.dropout, self.training)
        # step 3: layers over [queries; text]
        num_queries = self.num_queries if image_tokens is not None else 0
        # queries alone attend everywhere: no mask lets SDPA pick its fastest (flash) kernel
        mask = attention_mask(num_queries, text_mask, mode) if text_mask.shape[1] else None
        for layer in self.layers:
            x = layer(x, mask, num_queries, image_tokens)
        return x


def _init_bert_style(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
