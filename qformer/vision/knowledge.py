"""What the pipeline knows about animals, shipped as data in `data/`:

- `taxonomy.json`: every ImageNet-1k class with its coarse group and WordNet 3.0 taxon chain,
  brought to current usage where WordNet predates a revision (built by scripts/build_taxonomy.py);
- `species.json`: one entry per species or breed the default can name: names, taxonomy, habitat,
  IUCN category with its year, countries, and whether it is domesticated (sources in its header);
- `taxon_nouns.json`: the everyday noun for each taxon above species ("Ardeidae": "heron"), for captions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
GROUPS = ("mammal", "bird", "reptile", "amphibian", "fish", "insect/arthropod", "other")
RANKS = ("genus", "family", "order", "class")  # the rollup climbs in this order
ANYWHERE = "*"


@dataclass(frozen=True)
class Species:
    label: str  # the WordNet id of its ImageNet class, or a trained head's label
    common_name: str
    scientific_name: str
    taxa: dict[str, str]  # genus, family, order, class
    habitat: str
    iucn_category: str  # LC, NT, VU, EN, CR, EW, EX, DD, or NA for domestic animals
    iucn_year: int | None
    countries: tuple[str, ...]  # ISO 3166-1 alpha-3; ("*",) for the oceans or worldwide
    domesticated: bool
    breed: str | None = None

    def occurs_in(self, country: str) -> bool:
        return ANYWHERE in self.countries or country.upper() in self.countries


# ImageNet-1k classes of animals that no photo of wildlife can show: its one extinct animal. They count
# as "not an animal", so their probability neither names a taxon nor pulls a photo into a group.
EXTINCT = {"n01704323"}  # triceratops


class Knowledge:
    def __init__(self, taxonomy: dict, species: dict, nouns: dict | None = None):
        self.classes = [{**c, "group": None} if c["synset"] in EXTINCT else c
                        for c in taxonomy["classes"]]  # index -> {synset, name, group, taxa, ...}
        self.by_label = {c["synset"]: c for c in self.classes}
        self.species = {label: _species(label, entry) for label, entry in species["species"].items()}
        self.sources = {"taxonomy": taxonomy["source"], "species": species["source"]}
        self._lineages = self._index_lineages()
        self.nouns = {taxon: noun for rank in RANKS for taxon, noun in (nouns or {}).get(rank, {}).items()}

    @classmethod
    @cache
    def default(cls) -> Knowledge:
        files = ("taxonomy", "species", "taxon_nouns")
        return cls(*(json.loads((DATA / f"{name}.json").read_text()) for name in files))

    def group_matrix(self) -> np.ndarray:
        """(1000, len(GROUPS) + 1): 1 where a class belongs to a group; the last column is "not an animal"."""
        matrix = np.zeros((len(self.classes), len(GROUPS) + 1), np.float32)
        for c in self.classes:
            matrix[c["index"], GROUPS.index(c["group"]) if c["group"] else len(GROUPS)] = 1.0
        return matrix

    def classes_of(self, group: str) -> list[dict]:
        if group not in GROUPS:
            raise ValueError(f"unknown group {group!r}; groups are {GROUPS}")
        return [c for c in self.classes if c["group"] == group]

    def name_of(self, label: str) -> str:
        if label in self.species:
            return self.species[label].common_name
        return self.by_label[label]["name"] if label in self.by_label else label

    def find(self, name: str) -> str | None:
        """The label of the species called `name`: a WordNet id, or a common or scientific name
        (any case; underscores for spaces). None when the knowledge base has no such species."""
        if name in self.species:
            return name
        wanted = name.replace("_", " ").strip().lower()
        for label, species in self.species.items():
            if wanted in (species.common_name.lower(), species.scientific_name.lower(), (species.breed or "").lower()):
                return label
        return None

    def taxa_of(self, label: str) -> dict[str, str]:
        """The species entry's taxonomy where there is one, else its ImageNet class's."""
        if label in self.species:
            return self.species[label].taxa
        return dict(self.by_label.get(label, {}).get("taxa", {}))

    def _index_lineages(self) -> dict[str, list[str]]:
        """Every taxon named anywhere in the knowledge base, with the taxa above it (class first)."""
        ranks = ("class", "order", "family", "genus")
        lineages: dict[str, list[str]] = {}
        entries = [c.get("taxa", {}) for c in self.classes] + [s.taxa for s in self.species.values()]
        for taxa in entries:
            chain = [taxa[r] for r in ranks if taxa.get(r)]
            for depth, name in enumerate(chain):
                lineages.setdefault(name.lower(), chain[: depth + 1])
        for species in self.species.values():
            chain = [species.taxa[r] for r in ranks if species.taxa.get(r)] + [species.scientific_name]
            for name in (species.common_name, species.scientific_name):
                lineages.setdefault(name.lower(), chain)
        return lineages

    def noun(self, name: str) -> str | None:
        """What a caption calls a species or taxon: a species by its common name, a taxon by its everyday
        noun ("Ardeidae": "heron") or, lacking one, the nearest taxon above it that has one; None when
        the knowledge base cannot place `name`."""
        label = self.find(name)
        if label is not None:
            return self.species[label].common_name
        for taxon in reversed(self.lineage(name)):
            if taxon in self.nouns:
                return self.nouns[taxon]
        return None

    def lineage(self, name: str) -> list[str]:
        """The taxa from class down to the taxon or species called `name` (empty when unknown)."""
        return list(self._lineages.get(name.strip().lower(), []))

    def occurs_in(self, label: str, country: str) -> bool | None:
        """Whether the species is known to occur in the country; None when its range is unknown."""
        return self.species[label].occurs_in(country) if label in self.species else None


def check_country(code: str | None) -> str | None:
    """An ISO 3166-1 alpha-3 code, upper-cased, or None for none; anything else is a ValueError."""
    if code is None or not code.strip():
        return None
    country = code.strip().upper()
    if len(country) != 3 or not (country.isascii() and country.isalpha()):
        raise ValueError(f"country wants an ISO 3166-1 alpha-3 code such as KEN or USA, got {code[:20]!r}")
    return country


def _species(label: str, entry: dict) -> Species:
    return Species(
        label=label, common_name=entry["common_name"], scientific_name=entry["scientific_name"],
        taxa={rank: entry[rank] for rank in RANKS}, habitat=entry["habitat"],
        iucn_category=entry["iucn"]["category"], iucn_year=entry["iucn"]["year"],
        countries=tuple(entry["countries"]), domesticated=entry["domesticated"], breed=entry.get("breed"),
    )
