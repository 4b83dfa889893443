"""A disk cache of frozen image tokens. The encoder never trains, so each image's tokens can be
computed once and reused every epoch; on a CPU or a small GPU this is most of a step's time.

Entries live under `root/<key>/`, where the key hashes the encoder's config and its preprocessing:
change either and the cache starts afresh instead of serving stale tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file

from qformer.config import VisionConfig
from qformer.files import write_atomically
from qformer.vision.encoders import FrozenImageEncoder


class FeatureCache:
    def __init__(self, root: str | Path, vision: VisionConfig, encoder: FrozenImageEncoder):
        if not isinstance(encoder, FrozenImageEncoder):
            raise ValueError(
                "the feature cache needs one frozen encoder; a fusion encoder's projections train, "
                "so its tokens change every step"
            )
        identity = {"vision": dataclasses.asdict(vision), "preprocess": dataclasses.asdict(encoder.preprocessor)}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.directory = Path(root) / digest
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "identity.json").write_text(json.dumps(identity, indent=2, default=str))
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        name = hashlib.sha1(key.encode()).hexdigest()
        return self.directory / name[:2] / f"{name}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()

    def tokens(self, keys: Sequence[str], pixels: Sequence[torch.Tensor | None],
               encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`(B, N, D)` tokens for a batch: cached rows are read, the rest encoded once from their pixels
        (present for every key that was not cached when its example was decoded) and stored."""
        missing = [i for i, k in enumerate(keys) if k not in self]
        rows: dict[int, torch.Tensor] = {}
        if missing:
            fresh = encode(torch.stack([pixels[i] for i in missing])).cpu()
            for i, row in zip(missing, fresh):
                # never a half-written entry, even if the run dies here
                write_atomically(self._path(keys[i]), lambda staging, row=row: save_file(
                    {"tokens": row.contiguous()}, str(staging)))
                rows[i] = row
        for i, key in enumerate(keys):
            if i not in rows:
                rows[i] = load_file(str(self._path(key)))["tokens"]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return torch.stack([rows[i] for i in range(len(keys))])
