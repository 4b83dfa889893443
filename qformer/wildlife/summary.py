"""Short human summaries of a result: a template, or a sentence written by an LLM from the template's facts."""

from __future__ import annotations

from .results import Animal, ImageResult

IUCN = {"LC": "least concern", "NT": "near threatened", "VU": "vulnerable", "EN": "endangered",
        "CR": "critically endangered", "EW": "extinct in the wild", "EX": "extinct", "DD": "data deficient"}


def describe_animal(animal: Animal) -> str:
    if animal.category != "animal":
        return f"a {animal.category} ({animal.detection_conf:.0%} sure)"
    if animal.rank is None:
        return f"an animal ({animal.detection_conf:.0%} sure)"
    if animal.rank == "group":
        return f"an animal, probably {_a(animal.name or 'animal')} ({animal.score:.0%})"
    if animal.rank != "species":
        taxon = f"{animal.rank} {animal.scientific_name or animal.name}"
        what = f"{_a(animal.common_name)}, {taxon}" if animal.common_name else f"an animal of the {taxon}"
        return f"{what} ({animal.score:.0%}; not sure of the species)"
    text = f"{_a(animal.name or 'animal')} ({animal.scientific_name}, {animal.score:.0%})"
    if animal.breed:
        text += f", breed {animal.breed}"
    if animal.domesticated:
        return text + ", a domestic animal"
    status = IUCN.get(animal.iucn_category or "", animal.iucn_category)
    return text + f"; lives in {animal.habitat}; IUCN: {status} ({animal.iucn_year})"


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def describe(result: ImageResult) -> str:
    if result.failure:
        return f"{result.file}: could not be read ({result.failure})"
    if not result.animals:
        return f"{result.file}: no animal found"
    return f"{result.file}: " + "; ".join(describe_animal(a) for a in result.animals)


def llm_describe(result: ImageResult, lm, max_new_tokens: int = 60) -> str:
    """One friendly sentence by a chat LM (a qformer FrozenLM), told to use only the result's facts."""
    facts = describe(result).split(": ", 1)[1]
    request = ("In one friendly sentence for a hiker, say what animals are in their photo. "
               f"Use only these facts: {facts}")
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                              add_generation_prompt=True)
    return lm.generate_text([prompt], max_new_tokens=max_new_tokens)[0]
