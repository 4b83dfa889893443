"""Tokenizers: loading them by name, and the Q-Former's own text tokenizer.

`"byt5"` names transformers' byte-level tokenizer, which needs no vocabulary file: the tiny
random presets use it so that they run with no download at all.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import AutoTokenizer, ByT5Tokenizer, PreTrainedTokenizerBase

from ..files import native_errors

BUILTIN_BYTE_TOKENIZER = "byt5"


REMEDY = "use the tokenizer that came with the model"


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    if name_or_path == BUILTIN_BYTE_TOKENIZER:
        return ByT5Tokenizer()
    with native_errors(name_or_path, "loading the tokenizer", REMEDY):
        return AutoTokenizer.from_pretrained(name_or_path)


def tokenized(tokenizer, texts: Sequence[str], **options) -> list[list[int]]:
    """`tokenizer(texts, **options)["input_ids"]`; a tokenizer that fails on the text (a hostile
    tokenizer.json's regex over the engine's limit panics in Rust) is named in a `ValueError`."""
    with native_errors(getattr(tokenizer, "name_or_path", "the tokenizer"), "tokenizing the text", REMEDY):
        return tokenizer(list(texts), **options)["input_ids"]


def pad_rows(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> torch.Tensor:
    """Ragged rows of ids as a `(B, T)` tensor, padded on the right (or the left)."""
    out = torch.full((len(rows), max((len(r) for r in rows), default=0)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            span = slice(out.shape[1] - len(row), None) if left else slice(0, len(row))
            out[i, span] = torch.tensor(row, dtype=torch.long)
    return out


class QFormerTokenizer:
    """Text for the Q-Former's text branch: `[CLS] tokens [SEP]`, padded on the right.

    BLIP-2 swaps the first token for `[DEC]` in image-grounded generation (ITG); `dec_token_id`
    is that token. Both special tokens are added to the vocabulary when the tokenizer lacks them.
    """

    def __init__(self, name_or_path: str, max_length: int):
        self.tokenizer = load_tokenizer(name_or_path)
        special: dict[str, str] = {"bos_token": "[DEC]"}
        if self.tokenizer.cls_token is None:
            special["cls_token"] = "[CLS]"
        if self.tokenizer.sep_token is None and self.tokenizer.eos_token is None:
            special["sep_token"] = "[SEP]"
        self.tokenizer.add_special_tokens(special)
        self.max_length = max_length
        self.cls_token_id = self.tokenizer.cls_token_id
        self.dec_token_id = self.tokenizer.bos_token_id
        self.end_token_id = self.tokenizer.sep_token_id if self.tokenizer.sep_token else self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __call__(self, texts: Sequence[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """`(input_ids, attention_mask)`, both `(B, T)`, truncated to `max_length`."""
        bodies = tokenized(self.tokenizer, texts, add_special_tokens=False, split_special_tokens=True)
        rows = [[self.cls_token_id, *body[: self.max_length - 2], self.end_token_id] for body in bodies]
        mask = pad_rows([[1] * len(r) for r in rows], 0)
        return pad_rows(rows, self.pad_token_id).to(device), mask.to(device)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
