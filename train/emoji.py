"""Emoji artwork with Unicode names and categories, from npm's `emoji-datasource-*` packages.

Each package holds 64-pixel PNGs of one artwork style and `emoji.json` with the Unicode name,
category and subcategory of every emoji (MIT). The artwork's own license depends on the style:
Google's Noto is Apache-2.0 and Twitter's Twemoji is CC-BY-4.0. Tarballs come from the npm
registry through `npm pack` and are read in place; nothing else is downloaded.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

VERSION = "16.0.0"
ARTWORK_LICENSE = {"google": "Apache-2.0 (Noto Emoji artwork)", "twitter": "CC-BY-4.0 (Twemoji artwork)"}
# What "what is this?" is answered with: the animal's class where there is one, else the category.
GROUP_OF_SUBCATEGORY = {
    "animal-mammal": "mammal", "animal-bird": "bird", "animal-reptile": "reptile",
    "animal-amphibian": "amphibian", "animal-marine": "sea animal", "animal-bug": "bug",
}
GROUP_OF_CATEGORY = {
    "Smileys & Emotion": "face", "People & Body": "person", "Animals & Nature": "plant",
    "Food & Drink": "food", "Travel & Places": "place", "Activities": "activity",
    "Objects": "object", "Symbols": "symbol", "Flags": "flag",
}
QUESTION = "what is this?"


@dataclass(frozen=True)
class Emoji:
    name: str  # the Unicode name, lower case: "cat face"
    category: str
    subcategory: str
    png: bytes

    @property
    def group(self) -> str:
        return GROUP_OF_SUBCATEGORY.get(self.subcategory) or GROUP_OF_CATEGORY[self.category]

    @property
    def caption(self) -> str:
        article = "an" if self.name[0] in "aeiou" else "a"
        return f"an emoji of {article} {self.name}"


def fetch(style: str, cache_dir: Path) -> tuple[Path, dict]:
    """The `emoji-datasource-<style>` tarball (downloaded once with `npm pack`) and its provenance."""
    package = f"emoji-datasource-{style}@{VERSION}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"emoji-datasource-{style}-{VERSION}.tgz"
    info_file = tarball.with_suffix(".json")
    if not (tarball.is_file() and info_file.is_file()):
        if shutil.which("npm") is None:
            raise RuntimeError(f"npm is needed to fetch {package} (apt install npm), or put its tarball at {tarball}")
        result = subprocess.run(["npm", "pack", package, "--json", "--pack-destination", str(cache_dir)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"npm pack {package} failed: {result.stderr.strip()[-500:]}")
        packed = json.loads(result.stdout[result.stdout.index("[") :])[0]
        info_file.write_text(json.dumps({"package": package, "integrity": packed["integrity"],
                                         "url": f"https://registry.npmjs.org/emoji-datasource-{style}/-/"
                                                f"emoji-datasource-{style}-{VERSION}.tgz"}))
    return tarball, json.loads(info_file.read_text())


def read(tarball: Path, style: str) -> list[Emoji]:
    """Every named emoji with artwork in this style, in the package's order (components left out)."""
    with tarfile.open(tarball) as archive:
        entries = json.load(archive.extractfile("package/emoji.json"))
        members = {m.name: m for m in archive.getmembers()}
        found = []
        for entry in entries:
            member = members.get(f"package/img/{style}/64/{entry['image']}")
            if entry["category"] == "Component" or not entry.get(f"has_img_{style}") or member is None:
                continue
            name = entry["name"].lower().replace(":", "").replace("-", " ")
            png = archive.extractfile(member).read()
            found.append(Emoji(name, entry["category"], entry["subcategory"], png))
    return found


def render(emoji: Emoji, size: int, rng: random.Random) -> Image.Image:
    """The artwork at a random scale and place on a plain light background."""
    art = Image.open(io.BytesIO(emoji.png)).convert("RGBA")
    side = rng.randint(size * 2 // 5, size * 4 // 5)
    art = art.resize((side, side), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), tuple(rng.randint(200, 255) for _ in range(3)))
    canvas.paste(art, (rng.randint(0, size - side), rng.randint(0, size - side)), art)
    return canvas


def write_split(emojis: list[Emoji], folder: Path, prefix: str, variants_of, size: int, rng: random.Random,
                license_: str, source: str) -> list[dict]:
    """Render `variants_of(emoji)` pictures of each emoji into `folder`; one metadata row per picture."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, emoji in enumerate(emojis):
        for variant in range(variants_of(emoji)):
            name = f"{index:04d}-{variant}.png"
            render(emoji, size, rng).save(folder / name)
            rows.append({"image": f"{prefix}/{name}", "text": emoji.caption, "question": QUESTION,
                         "answer": emoji.group, "source": source, "license": license_})
    return rows
