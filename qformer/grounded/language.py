"""Facts into words: a caption, and answers to the questions the facts can answer. Every object noun
comes from the facts; a question they cannot answer gets that said, never a guess."""

from __future__ import annotations

import re

from .facts import Facts, Thing

NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
IRREGULAR = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis",
             "scissors": "scissors", "wine glass": "wine glasses", "bus": "buses", "fish": "fish"}
SINGULAR = {plural: word for word, plural in IRREGULAR.items()} | {"persons": "person", "men": "person",
                                                                    "women": "person", "man": "person",
                                                                    "woman": "person", "human": "person",
                                                                    "humans": "person", "children": "person"}
CANNOT = "I can only tell what is in the photo: "


def plural(word: str) -> str:
    if word in IRREGULAR:
        return IRREGULAR[word]
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def singular(word: str) -> str:
    word = word.strip().lower()
    if word in SINGULAR:
        return SINGULAR[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if re.search(r"(sses|xes|ches|shes|zes)$", word):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def counted(thing: Thing) -> str:
    if thing.count == 1:
        return ("an " if thing.name[0].lower() in "aeiou" else "a ") + thing.name
    number = NUMBERS[thing.count] if thing.count < len(NUMBERS) else str(thing.count)
    return f"{number} {plural(thing.name)}"


def listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(facts: Facts, most: int = 3) -> str:
    if facts.plain:
        return f"a plain {facts.plain} picture"
    if not facts.things:
        return "a photo in which nothing could be named"
    return listed([counted(t) for t in facts.things[:most]])


def find(facts: Facts, words: str) -> list[Thing]:
    """The things a phrase from a question names: "dogs", "the cat", "animals", "people"."""
    wanted = singular(re.sub(r"^(the|a|an|any|some)\s+", "", words.strip().lower()))
    if wanted in ("animal", "creature"):
        return [t for t in facts.things if t.animal]
    return [t for t in facts.things
            if t.name.lower() == wanted or t.name.lower().endswith(" " + wanted) or singular(t.name) == wanted]


def answer(facts: Facts, question: str) -> str:
    q = re.sub(r"[?!.]+$", "", " ".join(question.lower().split()))
    found = re.match(r"how many (.+?)(?: are there| are in| can you see| do you see| is there|$)", q)
    if found:
        things = find(facts, found.group(1))
        total = sum(t.count for t in things)
        return NUMBERS[total] if total < len(NUMBERS) else str(total)
    found = re.match(r"(?:is|are) there (?:a |an |any |some )?(.+?)(?: in (?:the|this) (?:photo|picture|image))?$", q)
    if found:
        return "yes" if find(facts, found.group(1)) else "no"
    found = re.match(r"where (?:is|are) (.+?)(?: in (?:the|this) (?:photo|picture|image))?$", q)
    if found:
        things = find(facts, found.group(1))
        return things[0].where if things else f"{CANNOT}{caption(facts)}"
    found = re.match(r"what colou?r (?:is|are) (.+?)(?: in (?:the|this) (?:photo|picture|image))?$", q)
    if found:
        if facts.plain and re.fullmatch(r"((the|this) )?(picture|image|photo|background)|it|this", found.group(1)):
            return facts.plain
        things = find(facts, found.group(1))
        return things[0].colour if things and things[0].colour else f"{CANNOT}{caption(facts)}"
    if re.match(r"what (?:kind of |sort of )?animals? (?:is|are) (?:this|that|it|these|those|there|in)", q):
        animals = [t for t in facts.things if t.animal]
        return listed([counted(t) for t in animals]) if animals else "I see no animal"
    if re.match(r"what (?:is|are) (?:this|that|it|these|those|in (?:the|this) "
                r"(?:photo|picture|image))$|what do you see", q):
        return caption(facts)
    return f"{CANNOT}{caption(facts)}"
