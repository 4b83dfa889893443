"""The rules for the language model's text around the visual prompt, shared by the torch processor
and the torch-free runtime (`deploy/lite.py`): questions into prompts, batches into lists, length limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

# Bounds on what a request may ask of the language model: memory grows with both (a KV cache per
# token, a copy of it per beam), and a caption or an answer needs far less.
MAX_NEW_TOKENS = 1024
MAX_BEAMS = 16
DEFAULT_MAX_NEW_TOKENS = 30  # a caption or a short answer
# A question is a sentence; the language model's own limit (lm.max_prompt_tokens) is checked in tokens.
MAX_QUESTION_CHARS = 1000


def as_list(items: Any, what: str) -> list:
    """One input or a sequence of them, as a non-empty list."""
    items = [items] if isinstance(items, (str, Path, bytes)) or not isinstance(items, Sequence) else list(items)
    if not items:
        raise ValueError(f"got an empty batch of {what}; pass at least one")
    return items


def question_prompts(template: str, questions: Sequence[str]) -> list[str]:
    """Each question in the LM's template; an empty question is an error that names it."""
    return [template.format(question=q.strip()) for q in check_questions(questions)]


def check_question(question: str, index: int | None = None) -> str:
    """A question that is text, not blank, and at most `MAX_QUESTION_CHARS` long; else a sentence."""
    which = "the question" if index is None else f"question {index}"
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{which} is empty; ask something about the image")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"{which} is {len(question)} characters long; ask in at most {MAX_QUESTION_CHARS}")
    return question


def check_questions(questions: Sequence[str]) -> Sequence[str]:
    for i, q in enumerate(questions):
        check_question(q, i)
    return questions


def questions_for(count: int, questions: str | Sequence[str]) -> list[str]:
    """One question per image of `count`: a single question is asked of every image."""
    questions = [questions] * count if isinstance(questions, str) else list(questions)
    if len(questions) != count:
        raise ValueError(f"ask() got {count} images but {len(questions)} questions")
    return questions


def check_prompt_lengths(rows: list[list[int]], prompts: Sequence[str], limit: int) -> list[list[int]]:
    for i, row in enumerate(rows):
        if len(row) > limit:
            raise ValueError(f"prompt {i} is {len(row)} tokens long, over lm.max_prompt_tokens={limit}: "
                             f"{prompts[i][:60]!r}...")
    return rows


def check_generation(settings: dict) -> None:
    """Refuse `max_new_tokens` and `num_beams` outside their bounds, with a sentence."""
    for key, low, high in (("max_new_tokens", 1, MAX_NEW_TOKENS), ("num_beams", 1, MAX_BEAMS)):
        value = settings.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            raise ValueError(f"{key} must be a whole number from {low} to {high}, got {value!r}")
