"""Train the photo-or-drawing router that the default captioner uses, from what the registries serve:

    python scripts/train_router.py [--out qformer/grounded/data/router.safetensors]

Drawings: the bridge's own training distribution (procedural scenes, Google's Noto emoji from npm).
Photos: the real cut-out photographs of Debian's tuxpaint-stamps-default (GPL-2) outside its animal
and people folders and outside every `cartoon` folder, shown on white as they are and cropped to
their middle (what a full-frame photo looks like). The model is a logistic regression on
EfficientNet-Lite0's pooled features, which the captioner computes anyway.

It prints the routing accuracy on held-out data of another kind: held-out scenes, Twitter's
Twemoji (an artwork style never trained on), and real photos it never saw (the package's animal and
people photos, scikit-image's photos).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

from qformer.grounded.router import ROUTER
from qformer.processing.images import load_image
from qformer.training import emoji, scenes
from qformer.vision.classifiers import LITE0, ImageNetClassifier

PHOTO_FOLDERS = ("clothes", "food", "hobbies", "household", "medical", "military", "plants", "space", "sports",
                 "town", "vehicles")


def tuxpaint(work: Path) -> Path:
    subprocess.run("apt-get download tuxpaint-stamps-default >/dev/null 2>&1 || "
                   "(apt-get update -q >/dev/null && apt-get download tuxpaint-stamps-default >/dev/null)",
                   shell=True, check=True, cwd=work)
    deb = next(work.glob("tuxpaint-stamps-default_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
    return work / "x" / "usr" / "share" / "tuxpaint" / "stamps"


def photos(stamps: Path, folders) -> list[Path]:
    return sorted(p for f in folders for p in (stamps / f).rglob("*.png") if "cartoon" not in p.parts)


def middle(image: Image.Image) -> Image.Image:
    width, height = image.size
    return image.crop((width // 4, height // 4, width * 3 // 4, height * 3 // 4))


def drawings(rng: random.Random, style: str, count: int, held_out: bool, cache: Path) -> list[Image.Image]:
    drawn = [scenes.draw_scene(scenes.make_scene(rng, held_out), 128, rng) for _ in range(count)]
    items = emoji.read(emoji.fetch(style, cache)[0], style)
    rng.shuffle(items)
    return drawn + [emoji.render(e, 128, rng) for e in items[:count]]


def features(classifier: ImageNetClassifier, images: list[Image.Image]) -> torch.Tensor:
    return torch.cat([classifier.pooled_features(images[k : k + 32]) for k in range(0, len(images), 32)])


def fit(x: torch.Tensor, y: torch.Tensor, decay: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        fit = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y)
        value = fit + decay * weight.square().sum()
        value.backward()
        return value

    optimiser.step(loss)
    return weight.detach(), bias.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROUTER))
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    classifier = ImageNetClassifier(*LITE0)
    with tempfile.TemporaryDirectory() as tmp:
        stamps = tuxpaint(Path(tmp))
        train_photos = [load_image(str(p)) for p in photos(stamps, PHOTO_FOLDERS)]
        test_photos = [load_image(str(p)) for p in photos(stamps, ("animals", "people"))]
    from skimage import data

    names = ("astronaut", "camera", "chelsea", "coffee", "rocket")
    test_photos += [Image.fromarray(getattr(data, n)()).convert("RGB") for n in names]
    test_photos.append(Image.fromarray(data.stereo_motorcycle()[0]))
    train_photos += [middle(p) for p in train_photos]
    cache = Path(tempfile.gettempdir()) / "qformer-npm"
    train_drawings = drawings(rng, "google", len(train_photos) // 2, False, cache)
    test_drawings = drawings(rng, "twitter", 200, True, cache)

    x = features(classifier, train_photos + train_drawings)
    y = torch.tensor([1.0] * len(train_photos) + [0.0] * len(train_drawings))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    weight, bias = fit((x - mean) / std, y)
    # fold the standardisation into the weights: one dot product at run time
    folded_weight, folded_bias = weight / std, bias - (weight * mean / std).sum()
    save_file({"weight": folded_weight.contiguous(), "bias": folded_bias.contiguous()}, args.out,
              metadata={"features": classifier.name,
                        "trained_on": f"{len(train_photos)} photos, {len(train_drawings)} drawings"})
    for name, images, label in (("held-out photos", test_photos, 1), ("held-out drawings", test_drawings, 0)):
        p = torch.sigmoid(features(classifier, images) @ folded_weight + folded_bias)
        right = int(((p >= 0.5) == bool(label)).sum())
        print(f"{name}: {right}/{len(images)} routed right ({right / len(images):.3f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
