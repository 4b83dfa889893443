"""Evaluation metrics. BLEU-4 and CIDEr are pycocoevalcap's scorers; VQA accuracy follows the
official VQAv2 evaluation (its answer normalisation and min(#agreeing humans / 3, 1)), which no
maintained package on PyPI provides; retrieval recall is a few lines over a score matrix."""

from __future__ import annotations

import re
from itertools import combinations

import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

_PUNCTUATION = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|']")


def _tokenize(text: str) -> str:
    """Lower-case words without punctuation: what COCO's PTB tokenizer yields for plain captions,
    without the Java it needs."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def caption_scores(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """BLEU-4 and CIDEr of predictions against one or more references per id."""
    keys = sorted(predictions)
    if not keys:
        return {"bleu4": 0.0, "cider": 0.0}
    res = {k: [_tokenize(predictions[k]) or "<empty>"] for k in keys}
    gts = {k: [_tokenize(r) for r in references[k]] for k in keys}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


_CONTRACTIONS = {"dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't", "cant": "can't",
                 "wont": "won't", "im": "i'm", "ive": "i've", "youre": "you're", "whats": "what's",
                 "thats": "that's", "theres": "there's", "hes": "he's", "shes": "she's", "its": "it's"}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(answer: str) -> str:
    """VQAv2's answer normalisation: punctuation, digits for number words, no articles, contractions."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # 1,000 -> 1000
    text = re.sub(r"(?!<=\d)(\.)(?!\d)", "", text)  # periods that are not decimal points
    text = _PUNCTUATION.sub(lambda m: "" if m.group(0) == "'" else " ", text)
    words = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def vqa_accuracy(predictions: list[str], answers: list[list[str]]) -> float:
    """Mean VQAv2 accuracy: for each of the leave-one-out subsets of the human answers,
    min(#matches / 3, 1), averaged. With a single reference answer this is exact match."""
    if not predictions:
        return 0.0
    total = 0.0
    for prediction, humans in zip(predictions, answers):
        guess = normalize_answer(prediction)
        humans = [normalize_answer(h) for h in humans]
        if len(humans) == 1:
            total += float(guess == humans[0])
            continue
        subsets = list(combinations(range(len(humans)), len(humans) - 1))
        total += sum(min(sum(guess == humans[i] for i in s) / 3, 1.0) for s in subsets) / len(subsets)
    return total / len(predictions)


def retrieval_recall(scores: torch.Tensor, positives: torch.Tensor | None = None,
                     ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k both ways for an `(images, texts)` score matrix. `positives[i, j]` marks matching
    pairs (default: the diagonal); a query scores a hit when any of its top k is a match."""
    scores = scores.detach().float().cpu()  # scores may come from a GPU; ranking is cheap here
    if positives is None:
        positives = torch.eye(scores.shape[0], scores.shape[1], dtype=torch.bool)
    positives = positives.cpu()
    out = {}
    for k in ks:
        k_eff = min(k, scores.shape[1])
        i2t = positives.gather(1, scores.topk(k_eff, dim=1).indices)
        t2i = positives.t().gather(1, scores.t().topk(min(k, scores.shape[0]), dim=1).indices)
        out[f"i2t_r@{k}"] = i2t.any(1).float().mean().item()
        out[f"t2i_r@{k}"] = t2i.any(1).float().mean().item()
    return out
