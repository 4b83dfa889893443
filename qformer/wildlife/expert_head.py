"""A species expert with a trained head: a linear layer over a frozen ImageNet backbone's pooled
features, trained by `python -m qformer.training.expert` on a folder of species crops.

A head folder holds `head.safetensors` and `expert.json` (backbone, labels, group, held-out accuracy).
Labels that name a knowledge-base species (its WordNet id, common or scientific name) are reported
with that species' facts; other labels are reported by name alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ..files import with_default_mode
from ..vision.classifiers import ImageNetClassifier
from ..vision.knowledge import Knowledge

HEAD_FILE, INFO_FILE = "head.safetensors", "expert.json"


class TrainedExpert:
    def __init__(self, classifier: ImageNetClassifier, head: torch.nn.Linear, labels: list[str], group: str,
                 knowledge: Knowledge | None = None):
        if head.out_features != len(labels):
            raise ValueError(f"the head has {head.out_features} outputs for {len(labels)} labels")
        knowledge = knowledge or Knowledge.default()
        self.classifier, self.head, self.group = classifier, head.eval().to(classifier.device), group
        self.labels = [knowledge.find(label) or label for label in labels]

    def features(self, crops: list[Image.Image]) -> torch.Tensor:
        return self.classifier.pooled_features(crops)

    @torch.no_grad()
    def __call__(self, crops: list[Image.Image]) -> list[dict[str, float]]:
        if not crops:
            return []
        probs = self.head(self.features(crops)).softmax(-1).cpu()
        return [dict(zip(self.labels, row.tolist())) for row in probs]

    def save(self, folder: str | Path, raw_labels: list[str], metrics: dict) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.cpu().contiguous() for k, v in self.head.state_dict().items()}, str(folder / HEAD_FILE))
        with_default_mode(folder / HEAD_FILE)
        info = {"backbone": self.classifier.name, "weights": self.classifier.weights, "group": self.group,
                "labels": raw_labels, **metrics}
        (folder / INFO_FILE).write_text(json.dumps(info, indent=2))

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu", classifier: ImageNetClassifier | None = None,
             knowledge: Knowledge | None = None) -> TrainedExpert:
        folder = Path(folder)
        if not (folder / INFO_FILE).is_file() or not (folder / HEAD_FILE).is_file():
            raise FileNotFoundError(f"{folder}: not an expert head (needs {INFO_FILE} and {HEAD_FILE}); "
                                    "train one with `python -m qformer.training.expert`")
        info = json.loads((folder / INFO_FILE).read_text())
        classifier = classifier or ImageNetClassifier(info["backbone"], info["weights"], device=device)
        state = load_file(str(folder / HEAD_FILE))
        head = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        head.load_state_dict(state)
        return cls(classifier, head, info["labels"], info["group"], knowledge)
