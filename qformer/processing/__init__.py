"""From files to tensors and back: safe image decoding, preprocessing for the encoder, prompts, the
processor, and the caption / ask / scores API on top of a model."""
