"""The bridge: the Q-Former, its stage-1 heads (ITC, ITM, ITG), `Blip2` (tensors in, tensors out),
checkpoints in Hugging Face layout, conversion to and from transformers' BLIP-2, and the hub."""
