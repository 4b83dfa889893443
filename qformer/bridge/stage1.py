"""BLIP-2 stage-1 heads and losses: image-text contrast (ITC), matching (ITM), grounded generation (ITG)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import QFormerConfig

LABEL_SMOOTHING = 0.1  # BLIP-2's value for ITC and ITG


class Stage1Heads(nn.Module):
    """Projections for ITC, the ITM classifier, the ITG text head and the learnable temperature."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        dim = config.hidden_size
        self.vision_proj = nn.Linear(dim, config.embed_dim)
        self.text_proj = nn.Linear(dim, config.embed_dim)
        self.itm_head = nn.Linear(dim, 2)
        self.text_head = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim, eps=config.layer_norm_eps),
            nn.Linear(dim, config.vocab_size),
        )
        self.temperature = nn.Parameter(torch.tensor(0.07))

    def image_features(self, query_hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(query_hidden), dim=-1)  # (B, Q, E)

    def text_features(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(cls_hidden), dim=-1)  # (B, E)

    def similarity(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """`(B_img, B_txt)`: for each pair, the best-matching query's cosine similarity."""
        return torch.einsum("iqe,te->itq", image_feats, text_feats).amax(dim=-1)

    def itc_loss(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric contrastive loss over the (gathered) batch; also returns the local `(B, B)` similarity."""
        temperature = self.temperature.clamp(0.001, 0.5)
        all_images, all_texts = gather_with_grad(image_feats), gather_with_grad(text_feats)
        offset = rank_offset(image_feats)
        sim_i2t = self.similarity(image_feats, all_texts) / temperature  # (B, B_all)
        sim_t2i = self.similarity(all_images, text_feats).t() / temperature  # (B, B_all)
        targets = torch.arange(image_feats.shape[0], device=image_feats.device) + offset
        loss = (
            F.cross_entropy(sim_i2t, targets, label_smoothing=LABEL_SMOOTHING)
            + F.cross_entropy(sim_t2i, targets, label_smoothing=LABEL_SMOOTHING)
        ) / 2
        local = sim_i2t[:, offset : offset + image_feats.shape[0]]
        return loss, local.detach()

    def itm_logits(self, query_hidden: torch.Tensor) -> torch.Tensor:
        return self.itm_head(query_hidden).mean(dim=1)  # (B, 2): average over queries

    def itg_loss(self, text_hidden: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Next-token loss of the text given the image, through the causal mask."""
        logits = self.text_head(text_hidden[:, :-1])  # (B, T-1, V)
        labels = input_ids[:, 1:].masked_fill(text_mask[:, 1:] == 0, -100)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                               label_smoothing=LABEL_SMOOTHING)


def hard_negatives(similarity: torch.Tensor, image_ids: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image a negative text, and for each text a negative image, drawn with probability
    softmax(similarity): the harder the negative, the likelier. Pairs of the same image are never drawn."""
    batch = similarity.shape[0]
    same = torch.eye(batch, dtype=torch.bool, device=similarity.device)
    if image_ids is not None:
        same = same | (image_ids[:, None] == image_ids[None, :])
    with torch.no_grad():
        weights = similarity.float().softmax(dim=1).masked_fill(same, 0.0)
        weights_t = similarity.t().float().softmax(dim=1).masked_fill(same, 0.0)
        # a row with nothing left to draw (all the same image) falls back to any other row
        fallback = (~torch.eye(batch, dtype=torch.bool, device=similarity.device)).float()
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, fallback)
        weights_t = torch.where(weights_t.sum(1, keepdim=True) > 0, weights_t, fallback)
        negative_text = torch.multinomial(weights, 1).squeeze(1)  # (B,) for each image
        negative_image = torch.multinomial(weights_t, 1).squeeze(1)  # (B,) for each text
    return negative_text, negative_image


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All processes' rows, concatenated; gradients flow back to each process's own rows."""
    if not _distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def rank_offset(x: torch.Tensor) -> int:
    return dist.get_rank() * x.shape[0] if _distributed() else 0
