"""The default bridge's corpus: procedural scenes plus emoji artwork, split by held-out style, with
provenance. The npm tarballs are stand-ins here, in the registry's layout, so the test needs no network."""

import io
import json
import tarfile

from PIL import Image

from qformer.training import corpus, emoji

ENTRIES = [
    {"name": "CAT FACE", "image": "1f431.png", "category": "Animals & Nature", "subcategory": "animal-mammal"},
    {"name": "EAGLE", "image": "1f985.png", "category": "Animals & Nature", "subcategory": "animal-bird"},
    {"name": "HOT BEVERAGE", "image": "2615.png", "category": "Food & Drink", "subcategory": "drink"},
    {"name": "LIGHT SKIN TONE", "image": "1f3fb.png", "category": "Component", "subcategory": "skin-tone"},
]


def fake_package(folder, style, colour):
    tarball = folder / f"emoji-datasource-{style}-{emoji.VERSION}.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        entries = [{**e, f"has_img_{style}": True} for e in ENTRIES]
        add("package/emoji.json", json.dumps(entries).encode())
        for e in entries:
            png = io.BytesIO()
            Image.new("RGBA", (64, 64), colour).save(png, "PNG")
            add(f"package/img/{style}/64/{e['image']}", png.getvalue())
    tarball.with_suffix(".json").write_text(json.dumps({"package": f"emoji-datasource-{style}@{emoji.VERSION}",
                                                        "integrity": "sha512-test", "url": "https://example"}))


def test_emoji_captions_and_groups():
    cat = emoji.Emoji("cat face", "Animals & Nature", "animal-mammal", b"")
    assert (cat.caption, cat.group) == ("an emoji of a cat face", "mammal")
    assert emoji.Emoji("eagle", "Animals & Nature", "animal-bird", b"").caption == "an emoji of an eagle"
    assert emoji.Emoji("hot beverage", "Food & Drink", "drink", b"").group == "food"


def test_corpus_splits_by_style_records_provenance_and_is_deterministic(tmp_path):
    cache = tmp_path / "npm"
    cache.mkdir()
    fake_package(cache, "google", (255, 0, 0, 255))
    fake_package(cache, "twitter", (0, 0, 255, 255))
    out = corpus.build(tmp_path / "corpus", scene_count=20, size=64, npm_cache=cache)
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    held_out = [json.loads(line) for line in (out / "eval-emoji.jsonl").read_text().splitlines()]
    # components are left out; animals get extra renderings in training
    assert sum(r["source"].startswith("npm:emoji-datasource-google") for r in train) == 2 * corpus.ANIMAL_VARIANTS + 1
    assert len(held_out) == 3 and all("twitter" in r["source"] and r["license"].startswith("CC-BY") for r in held_out)
    assert {r["text"] for r in held_out} == {"an emoji of a cat face", "an emoji of an eagle",
                                             "an emoji of a hot beverage"}
    assert all(r["license"] and (out / r["image"]).is_file() for r in train + held_out)
    assert Image.open(out / held_out[0]["image"]).getpixel((0, 0)) != (0, 0, 255)  # artwork on a background
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parts"]["emoji"]["sources"]["google"]["integrity"] == "sha512-test"
    assert manifest["counts"]["eval-scenes"] == 2 and len((out / "eval.jsonl").read_text().splitlines()) == 4
    again = corpus.build(tmp_path / "again", scene_count=20, size=64, npm_cache=cache)
    assert (again / "train.jsonl").read_text() == (out / "train.jsonl").read_text()
