"""What the queries looked at: the Q-Former's cross-attention weights over the image tokens, as
heatmaps on the photo. The fast path attends with fused SDPA kernels that never materialise the
weights, so they are recomputed here from the same projections, for inspection only."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ..processing.images import MAX_ASPECT, ImageInput, load_image


@torch.no_grad()
def cross_attention(model, image: ImageInput) -> torch.Tensor:
    """`(layers, queries, image_tokens)`: softmax weights of every cross-attention layer, averaged over heads."""
    captured = []
    hooks = [layer.cross_attn.register_forward_pre_hook(lambda module, args: captured.append((module, *args)))
             for layer in model.qformer.layers if layer.cross_attn is not None]
    try:
        pixels, _ = model.load_images([load_image(image)])
        model.query_outputs(model.encode_images(pixels))
    finally:
        for hook in hooks:
            hook.remove()
    maps = []
    for module, queries, tokens in captured:
        heads = module.num_heads
        q = module.q(queries)
        k = module.kv(tokens).chunk(2, dim=-1)[0]
        scores = _split_heads(q, heads) @ _split_heads(k, heads).transpose(-1, -2) / math.sqrt(q.shape[-1] // heads)
        maps.append(scores.float().softmax(-1).mean(1)[0])  # (Q, N)
    return torch.stack(maps).cpu()


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # (B, H, L, D/H)


def token_grid(num_tokens: int) -> tuple[int, int] | None:
    """(skip, side): image tokens form a side x side grid after `skip` leading tokens (a ViT's [CLS]);
    None when they form no square grid (e.g. fused encoders)."""
    for skip in (0, 1):
        side = math.isqrt(num_tokens - skip)
        if side * side == num_tokens - skip and side > 1:
            return skip, side
    return None


def heatmaps(model, image: ImageInput, max_queries: int = 8) -> list[tuple[Image.Image, str]]:
    """Overlays of the most focused queries' attention (averaged over layers) on the photo, with captions."""
    photo = load_image(image)
    maps = cross_attention(model, photo).mean(0)  # (Q, N)
    grid = token_grid(maps.shape[-1])
    if grid is None:
        return []
    skip, side = grid
    maps = maps[:, skip:].reshape(-1, side, side)
    focus = maps.flatten(1).max(-1).values  # the queries whose attention is most peaked come first
    order = focus.argsort(descending=True)[:max_queries]
    left, top, right, bottom = seen_box(getattr(model.vision, "preprocessor", None), *photo.size)
    photo = photo.convert("RGB")
    seen = photo.crop((left, top, right, bottom))
    overlays = []
    for q in order.tolist():
        heat = maps[q] / maps[q].max().clamp_min(1e-12)
        heat = Image.fromarray((heat.numpy() * 255).astype(np.uint8)).resize(seen.size, Image.Resampling.BICUBIC)
        red = Image.merge("RGB", (heat, Image.new("L", seen.size, 0), Image.new("L", seen.size, 0)))
        overlay = photo.copy()  # painted only where the encoder looked: a centre crop never saw the edges
        overlay.paste(Image.blend(seen, red, 0.5), (left, top))
        overlays.append((overlay, f"query {q}: peak {float(focus[q]):.2f}"))
    return overlays


def seen_box(preprocess, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom): the part of a width x height photo the encoder's preprocessing keeps.
    Squashing keeps all of it; timm-style preprocessing first cuts extreme shapes to `MAX_ASPECT`,
    scales the short side to size / crop_pct, and keeps the centre size x size."""
    crop_pct = getattr(preprocess, "crop_pct", None)
    if crop_pct is None:
        return 0, 0, width, height
    kept_w, kept_h = min(width, int(height * MAX_ASPECT)), min(height, int(width * MAX_ASPECT))
    x0, y0 = (width - kept_w) // 2, (height - kept_h) // 2
    scale = int(preprocess.size / crop_pct) / min(kept_w, kept_h)
    side = preprocess.size / scale  # the centre square, in photo pixels
    left, top = x0 + (kept_w - side) / 2, y0 + (kept_h - side) / 2
    return round(max(0, left)), round(max(0, top)), round(min(width, left + side)), round(min(height, top + side))
