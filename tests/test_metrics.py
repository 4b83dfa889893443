"""Metrics on fixed inputs with known values."""

import pytest
import torch

from qformer.training.metrics import caption_scores, normalize_answer, retrieval_recall, vqa_accuracy


def test_caption_scores_known_values():
    refs = {"1": ["a cat sits on a mat"], "2": ["a dog runs in the park"]}
    perfect = caption_scores({"1": "a cat sits on a mat", "2": "a dog runs in the park"}, refs)
    assert perfect["bleu4"] == pytest.approx(1.0, abs=1e-6)
    # CIDEr-D of exact matches over a 2-image corpus: 10 * mean cosine = 10 (no length penalty)
    assert perfect["cider"] == pytest.approx(10.0, rel=1e-3)
    wrong = caption_scores({"1": "purple elephants", "2": "nothing here at all"}, refs)
    assert wrong["bleu4"] < 1e-6 and wrong["cider"] == pytest.approx(0.0, abs=1e-9)


def test_vqa_normalisation_and_accuracy():
    assert normalize_answer("Two dogs.") == "2 dogs"
    assert normalize_answer("The  Red, car!") == "red car"
    assert normalize_answer("dont") == "don't"
    assert normalize_answer("1,000") == "1000"
    assert vqa_accuracy(["two"], [["2"]]) == 1.0
    humans = ["yes"] * 2 + ["no"] * 8  # 2 of 10 agree: each 9-subset has 1 or 2 matches
    assert vqa_accuracy(["yes"], [humans]) == pytest.approx((8 * (2 / 3) + 2 * (1 / 3)) / 10)
    assert vqa_accuracy(["no"], [humans]) == 1.0


def test_retrieval_recall():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.1, 0.8], [0.0, 0.3, 0.7]])
    recall = retrieval_recall(scores, ks=(1, 2))
    assert recall["i2t_r@1"] == pytest.approx(2 / 3)  # image 1's best text is 2
    assert recall["t2i_r@1"] == pytest.approx(1 / 3)  # texts 1 and 2 best match images 2 and 1
    assert recall["i2t_r@2"] == pytest.approx(2 / 3)  # image 1 ranks its text last
    assert recall["t2i_r@2"] == pytest.approx(2 / 3)
    duplicates = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 1, 1]], dtype=torch.bool)  # texts 1 and 2 are equal
    assert retrieval_recall(scores, duplicates, ks=(1,))["i2t_r@1"] == pytest.approx(1.0)
