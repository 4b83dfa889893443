"""Hugging Face hub layout for bridges: `save_pretrained`, `push_to_hub` and `from_pretrained` through
huggingface_hub's mixin, with strict loading and backbone paths kept inside the checkpoint's folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelHubMixin, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from ..config import Blip2Config, has_relative_paths, resolve_relative_paths
from .checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    check_sizes_against_weights,
    load_bridge_state,
    read_bridge,
    save_bridge,
)

MODEL_CARD = """---
{{ card_data }}
---

# {{ name }}

A BLIP-2 style bridge made with [qformer]({{ repo_url }}): a Q-Former with {{ num_queries }} learned
queries between a frozen image encoder and a frozen language model. This repository holds only the
bridge (queries, Q-Former, heads and projection); the frozen backbones are named in `config.json`.

- Image encoder: `{{ vision }}`
- Language model: `{{ lm }}`
- Trainable parameters: {{ num_params }}

```python
import qformer
model = qformer.Blip2.from_pretrained("{{ repo_id }}")
print(model.caption(["photo.jpg"]))
```
"""



class HubMixin(ModelHubMixin):
    """Saving and loading a bridge (config.json + model.safetensors + a model card); the frozen
    backbones are named by the config and never copied."""

    def _save_pretrained(self, save_directory: Path) -> None:
        save_bridge(self, save_directory)
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2))

    def generate_model_card(self, *args, **kwargs):
        lm = self.config.lm
        return super().generate_model_card(
            name=self.config.name,
            num_queries=self.config.qformer.num_queries,
            vision=f"{self.config.vision.backend}: {self.config.vision.model_name or self.config.vision.pretrained}",
            lm=(lm.name_or_path or lm.random_config.get("model_type") + " (random)") if lm else "none",
            num_params=f"{sum(p.numel() for p in self.trainable_parameters()):,}",
            repo_id=kwargs.pop("repo_id", "path/to/this/folder"),
            **kwargs,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Any:
        """Load a saved bridge from a folder or hub id. Keyword arguments are the hub's download
        options (revision, cache_dir, token, local_files_only...), `map_location`, or config overrides."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (HfHubHTTPError, LocalEntryNotFoundError) as e:
            raise FileNotFoundError(
                f"{pretrained_model_name_or_path}: could not get it from the Hugging Face hub or its local cache "
                f"({e}). Check the id and your connection, or pass a local folder."
            ) from e

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         config: dict | None = None, map_location: str = "cpu", **overrides) -> Any:
        if config is None:  # the mixin found no config.json
            raise FileNotFoundError(f"{model_id}: no {CONFIG_NAME}; is this a qformer checkpoint folder?")
        saved = Blip2Config.from_dict(config)
        download = dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
                        local_files_only=local_files_only, token=token)
        if Path(model_id).is_dir():
            root = Path(model_id)
        elif has_relative_paths(saved):  # backbones stored in the repo itself: fetch the whole folder
            root = Path(snapshot_download(model_id, **download))
        else:
            root = Path(hf_hub_download(model_id, WEIGHTS_NAME, **download)).parent
        weights = root / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{weights}: no such weights file")
        # the folder's own paths are checked; the caller's overrides are the caller's own
        blip2_config = resolve_relative_paths(saved, root).with_overrides(**overrides)
        check_sizes_against_weights(blip2_config.qformer, weights)
        model = cls(blip2_config)
        load_bridge_state(model, read_bridge(weights), f"{model_id}/{WEIGHTS_NAME}")
        return model.to(map_location).eval()
