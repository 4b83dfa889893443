"""Captions and answers from an exported folder without torch: onnxruntime, numpy, PIL and tokenizers.

`qformer export --onnx OUT --quantize int4` writes a folder whose visual graph and language model
both run on onnxruntime; `LiteCaptioner(OUT)` runs them with nothing else, so a process starts in
about a second instead of four (importing torch, transformers and timm) and holds a few hundred MB
less. The answers are the torch path's own, token for token (tests/test_lite.py): the same
preprocessing (`processing/preprocess.py`), the same prompt ids, the same greedy decoding (`deploy/engine.py`).

`qformer caption` and `qformer ask` use it for such a folder when the request is plain greedy
decoding on the CPU; `LiteCaptioner.unsupported(folder)` says why a folder needs torch instead.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import Blip2Config, resolve_relative_paths
from ..files import inside, native_errors
from ..processing.answers import in_slots
from ..processing.images import ImageInput, ImageLoadError, load_images
from ..processing.prompts import (
    DEFAULT_MAX_NEW_TOKENS,
    as_list,
    check_prompt_lengths,
    check_question,
    question_prompts,
    questions_for,
)
from .engine import TOKENIZER_DIR, OnnxCausalLM
from .exported import MANIFEST, OnnxVisualPrompt, exported_preprocess, is_exported, read_manifest, verify_files

GENERATION = {"max_new_tokens", "min_new_tokens"}  # what plain greedy decoding takes


class LiteCaptioner:
    """`caption(images)` and `ask(images, questions)` on an exported folder, as `qformer.create_model`'s
    model answers them with greedy decoding."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        folder = Path(folder)
        reason = self.unsupported(folder)
        if reason:
            raise ValueError(f"{folder}: {reason}")
        config = _saved_config(folder)
        self.lm_config = config.lm
        self.preprocess = exported_preprocess(folder)
        # the language model loads in a thread while the rest loads here: onnxruntime and hashing leave
        # the GIL free, which took a tenth of a drawing's first caption off on two cores
        with ThreadPoolExecutor(1, thread_name_prefix="lite-load") as pool:
            engine = pool.submit(OnnxCausalLM, config.lm.onnx, threads)
            try:
                self.visual = OnnxVisualPrompt(folder, threads)
                self._load_tokenizer(inside(config.lm.onnx, TOKENIZER_DIR, str(folder / MANIFEST)))
            finally:
                self.engine = engine.result()
        vocab = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if vocab > self.engine.embeddings.shape[0]:
            raise ValueError(f"{config.lm.onnx}: the tokenizer has {vocab} tokens but the embeddings "
                             f"{self.engine.embeddings.shape[0]} rows; export the model again")

    @staticmethod
    def unsupported(folder: str | Path) -> str | None:
        """Why this folder cannot run without torch, or None when it can."""
        folder = Path(folder)
        if not is_exported(folder):
            return f"not an exported folder (no {MANIFEST}); make one with `qformer export --onnx`"
        try:
            verify_files(folder)
            manifest, config = read_manifest(folder), _saved_config(folder)
        except (OSError, ValueError) as e:
            return str(e)
        if config.lm is None or not config.lm.onnx:
            why = (manifest.get("language_model") or {}).get("why", "not exported")
            return f"its language model runs in torch ({why})"
        if (manifest.get("preprocess") or {}).get("resize_with") != "pil":
            return "its images are resized by torchvision, or it was exported by an older qformer; export it again"
        try:  # inside the folder, links followed: the saved config's paths are checked, the folder's links here
            tokenizer = inside(config.lm.onnx, TOKENIZER_DIR, str(folder / MANIFEST))
        except ValueError as e:
            return str(e)
        if not (tokenizer / "tokenizer.json").is_file():
            return "its language model's tokenizer has no tokenizer.json (a built-in or slow tokenizer)"
        try:
            settings = json.loads((tokenizer / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "its tokenizer_config.json is missing or unreadable; export the model again"
        if not isinstance(settings, dict) or settings.get("clean_up_tokenization_spaces"):
            return "its tokenizer cleans up spaces when decoding, which only transformers does"
        return None

    def _load_tokenizer(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        self._tokenizer_file = folder / "tokenizer.json"
        with native_errors(self._tokenizer_file, "loading the tokenizer", "export the model again"):
            self.tokenizer = Tokenizer.from_file(str(self._tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.tokenizer.encode_special_tokens = True  # control tokens typed in a prompt stay text

        def token_id(name: str) -> int | None:
            token = settings.get(name)
            token = token.get("content") if isinstance(token, dict) else token
            return self.tokenizer.token_to_id(token) if isinstance(token, str) else None

        self.eos_token_id = token_id("eos_token")
        self.pad_token_id = token_id("pad_token")
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_id if self.eos_token_id is not None else 0

    # --- the public calls, as `Blip2.caption` and `Blip2.ask` ---------------------------------------

    def caption(self, images: ImageInput | Sequence[ImageInput], prompt: str | None = None,
                return_exceptions: bool = False, **generation: Any) -> list[str | ImageLoadError]:
        images = as_list(images, "images")
        prompt = self.lm_config.prompt if prompt is None else prompt
        return self._answer(images, [prompt] * len(images), return_exceptions, generation)

    def ask(self, images: ImageInput | Sequence[ImageInput], questions: str | Sequence[str],
            return_exceptions: bool = False, **generation: Any) -> list[str | ImageLoadError]:
        images = as_list(images, "images")
        prompts = question_prompts(self.lm_config.question_template, questions_for(len(images), questions))
        return self._answer(images, prompts, return_exceptions, generation)

    # --- the steps ---------------------------------------------------------------------------------

    def _answer(self, images: list, prompts: list[str], return_exceptions: bool, generation: dict) -> list:
        settings = self._greedy_settings(generation)
        rows = self.prompt_ids(prompts)  # fail on an overlong prompt before any image work
        loaded, errors = load_images(images, return_exceptions)
        if not loaded:
            return errors
        prefix = self.visual(self.preprocess.arrays(loaded))  # (B, Q, D)
        kept = [row for row, error in zip(rows, errors) if error is None]
        embeds, mask = self._with_prefix(prefix, kept)
        tokens = self.engine.greedy(embeds, mask, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
                                    **settings)
        with native_errors(self._tokenizer_file, "decoding the answer", "export the model again"):
            texts = self.tokenizer.decode_batch(tokens.tolist(), skip_special_tokens=True)
        return in_slots(errors, (text.strip() for text in texts))

    def check_question(self, question: str) -> str:
        """As `Blip2.check_question`: a question the prompt holds, counted in the LM's tokens."""
        self.prompt_ids(question_prompts(self.lm_config.question_template, [check_question(question)]))
        return question

    def prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """As the processor's: the tokenizer's own special tokens added, never a trailing EOS."""
        with native_errors(self._tokenizer_file, "tokenizing the prompt", "export the model again"):
            encodings = self.tokenizer.encode_batch(list(prompts), add_special_tokens=True)
        rows = [encoding.ids for encoding in encodings]
        rows = [r[:-1] if r and r[-1] == self.eos_token_id else r for r in rows]  # CausalLayout.prompt_rows
        return check_prompt_lengths(rows, prompts, self.lm_config.max_prompt_tokens)

    def _with_prefix(self, prefix: np.ndarray, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """`[padding, prefix, prompt]` per row, left-padded with the pad token's embedding, as the torch
        path lays a causal LM's input out (`lm/layouts.py`)."""
        width = prefix.shape[1] + max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        embeds = self.engine.embed(ids)
        for i, row in enumerate(rows):
            start = width - prefix.shape[1] - len(row)
            embeds[i, start : start + prefix.shape[1]] = prefix[i]
            if row:
                embeds[i, width - len(row) :] = self.engine.embed(np.asarray(row, dtype=np.int64))
            mask[i, start:] = 1
        return embeds, mask

    @staticmethod
    def _greedy_settings(generation: dict) -> dict:
        unknown = sorted(set(generation) - GENERATION - {"num_beams", "do_sample"})
        if unknown or generation.get("num_beams", 1) != 1 or generation.get("do_sample"):
            raise ValueError(f"the torch-free runtime decodes greedily and takes only {sorted(GENERATION)}; got "
                             f"{sorted(generation)}. Load the folder with qformer.create_model for other settings")
        return {"max_new_tokens": generation.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
                "min_new_tokens": generation.get("min_new_tokens", 0)}


def _saved_config(folder: Path) -> Blip2Config:
    """The folder's config.json, its `./` paths made absolute and kept inside the folder."""
    return resolve_relative_paths(Blip2Config.from_json(folder / "config.json"), folder)
