"""Train a species expert head on your own crops: `python -m qformer.training.expert CROPS OUT --group bird`.

CROPS holds one folder per species (`CROPS/bald eagle/*.jpg`, `CROPS/Haliaeetus leucocephalus/...`, or
WordNet ids); folder names that match the knowledge base get its facts in reports. The backbone stays
frozen: its pooled features are computed once, then a linear head trains on them (a linear probe).
A fifth of each species is held out to report accuracy. Use the head with
`qformer wildlife PHOTOS --expert bird=OUT`.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from qformer.processing.images import ImageLoadError, load_image
from qformer.vision.classifiers import LITE2, ImageNetClassifier
from qformer.vision.knowledge import GROUPS
from qformer.wildlife.expert_head import TrainedExpert

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def gather(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    labels = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(labels) < 2:
        raise ValueError(f"{root} needs at least two species folders, found {labels}")
    items = [(f, k) for k, label in enumerate(labels) for f in sorted((root / label).rglob("*"))
             if f.suffix.lower() in SUFFIXES]
    return labels, items


def train_expert(crops: str | Path, out: str | Path, group: str, backbone: tuple[str, str] = LITE2,
                 epochs: int = 100, lr: float = 1e-2, holdout: float = 0.2, seed: int = 0,
                 batch_size: int = 16, device: str = "cpu") -> dict:
    if group not in GROUPS:
        raise ValueError(f"--group must be one of {GROUPS}, got {group!r}")
    labels, items = gather(Path(crops))
    classifier = ImageNetClassifier(*backbone, device=device)
    features, targets, skipped = [], [], []
    probe = TrainedExpert(classifier, torch.nn.Linear(classifier.model.num_features, len(labels)), labels, group)
    for start in tqdm(range(0, len(items), batch_size), desc="features", unit="batch"):
        images, ks = [], []
        for path, k in items[start : start + batch_size]:
            try:
                images.append(load_image(str(path)))
                ks.append(k)
            except ImageLoadError as e:
                skipped.append(str(e))
        if images:
            features.append(probe.features(images).cpu())
            targets += ks
    x, y = torch.cat(features), torch.tensor(targets)
    rng = random.Random(seed)
    held = set()
    for k in range(len(labels)):
        members = [i for i, t in enumerate(targets) if t == k]
        rng.shuffle(members)
        held.update(members[: int(len(members) * holdout)])
    train_idx = torch.tensor([i for i in range(len(y)) if i not in held])
    test_idx = torch.tensor(sorted(held), dtype=torch.long)
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], len(labels))
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-3)
    for _ in range(epochs):  # full-batch: the features fit in memory
        loss = torch.nn.functional.cross_entropy(head(x[train_idx]), y[train_idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = float((head(x[test_idx]).argmax(-1) == y[test_idx]).float().mean()) if len(test_idx) else None
    metrics = {"train_images": len(train_idx), "heldout_images": len(test_idx), "heldout_accuracy": accuracy,
               "final_train_loss": float(loss.detach()), "skipped": skipped}
    TrainedExpert(classifier, head, labels, group).save(out, labels, metrics)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crops")
    parser.add_argument("out")
    parser.add_argument("--group", required=True, choices=GROUPS)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    metrics = train_expert(args.crops, args.out, args.group, epochs=args.epochs, lr=args.lr, device=args.device)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
