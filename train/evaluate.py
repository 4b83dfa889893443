"""Evaluation of a model on a held-out set: captions, VQA answers and retrieval, as a JSON-able dict."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

import qformer
from qformer.grounded.loading import bridge_of
from qformer.processing.images import ImageLoadError

from .data import decode, has_caption, text_of
from .metrics import caption_scores, retrieval_recall, vqa_accuracy


@torch.no_grad()
def evaluate(model: qformer.Blip2, dataset, base_dir: Path | None, limit: int, prompt: str | None = None,
             batch_size: int = 16) -> dict:
    """Metrics over the first `limit` readable examples of `dataset` (in its stored order)."""
    model.eval()
    images, captions, questions, answers, captioned = [], [], [], [], []
    for record in dataset:
        if len(images) >= limit:
            break
        try:
            images.append(decode(record, base_dir))
        except ImageLoadError:
            continue
        caption, question, answer = text_of(record)
        captions.append(caption)
        captioned.append(has_caption(record))
        questions.append(question)
        answers.append(answer)
    if len(images) < 2:
        return {"examples": len(images), "note": "fewer than 2 readable examples; nothing scored"}
    metrics: dict = {"examples": len(images)}
    # retrieval, ITC and ITM over all pairs (eval sets are small); equal captions count as matches
    positives = torch.tensor([[a == b for b in captions] for a in captions])
    for method in ("itc", "itm"):
        scores = model.scores(images, captions, method=method)
        metrics.update({f"{method}_{k}": v for k, v in retrieval_recall(scores, positives).items()})
    if model.lm is None:
        return metrics
    chunks = range(0, len(images), batch_size)
    metrics["samples"] = []
    if all(captioned):
        predicted = [c for i in tqdm(chunks, desc="captions", unit="batch")
                     for c in model.caption(images[i : i + batch_size], prompt=prompt)]
        metrics.update(caption_scores({str(i): p for i, p in enumerate(predicted)},
                                      {str(i): [c] for i, c in enumerate(captions)}))
        metrics["samples"] += [{"reference": c, "predicted": p} for c, p in list(zip(captions, predicted))[:5]]
    if all(q is not None and a is not None for q, a in zip(questions, answers)):
        predicted = [a for i in tqdm(chunks, desc="answers", unit="batch")
                     for a in model.ask(images[i : i + batch_size], questions[i : i + batch_size])]
        metrics["vqa_accuracy"] = vqa_accuracy(predicted, [[str(a)] for a in answers])
        metrics["samples"] += [{"question": q, "answer": a, "predicted": p}
                               for q, a, p in list(zip(questions, answers, predicted))[:5]]
    return metrics


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    from .data import base_dir_of, load_source

    parser = argparse.ArgumentParser(prog="python -m qformer.training.evaluate",
                                     description="Score a model on held-out data: captions, VQA and retrieval.")
    parser.add_argument("model", help="preset, saved folder or hub id (default: the shipped bridge)", nargs="?",
                        default="bridge")
    parser.add_argument("data", help="an image folder with metadata, or a .jsonl/.parquet file")
    parser.add_argument("--limit", type=int, default=200, help="examples scored (the first readable ones)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", help="also write the metrics here as JSON")
    args = parser.parse_args(argv)
    model = qformer.create_model(bridge_of(args.model))  # the metrics are a bridge's: "default" means its bridge
    metrics = evaluate(model, load_source(args.data), base_dir_of(args.data), args.limit, batch_size=args.batch_size)
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
