"""The wildlife decision policy as a pure function of the models' scores: no weights are loaded."""

import pytest

from qformer.training.calibrate_wildlife import fit, replay
from qformer.wildlife import GROUPS, Knowledge, Thresholds
from qformer.wildlife.policy import Evidence, decide
from qformer.wildlife.summary import describe_animal

TIGER, LION, LEOPARD, LYNX = "n02129604", "n02129165", "n02128385", "n02127052"


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return Knowledge.default()


def groups(**named: float) -> dict[str, float]:
    scores = dict.fromkeys((*GROUPS, "not an animal"), 0.0)
    scores.update({k.replace("_", " "): v for k, v in named.items()})
    return scores


def evidence(category="animal", conf=0.8, animal=0.9, species=None, **kwargs) -> Evidence:
    return Evidence((0.1, 0.1, 0.5, 0.5), conf, category, groups(mammal=animal, not_an_animal=1 - animal),
                    species, **kwargs)


def test_people_and_vehicles_stand_when_sure_or_when_no_animal_is_in_the_box(knowledge):
    assert decide(evidence("person", conf=0.9, animal=0.95), knowledge).category == "person"
    assert decide(evidence("vehicle", conf=0.4, animal=0.1), knowledge).category == "vehicle"
    # an unsure person box on an animal is the animal, unless an animal box already covers it
    assert decide(evidence("person", conf=0.4, animal=0.9), knowledge).category == "animal"
    assert decide(evidence("person", conf=0.4, animal=0.9, covered=True), knowledge) is None


def test_an_animal_needs_evidence_from_the_classifier(knowledge):
    at = Thresholds(box=0.2, region=0.5)
    assert decide(evidence(animal=0.1), knowledge, at) is None  # a detector's "sheep" on a hay bale
    assert decide(evidence(animal=0.3), knowledge, at).category == "animal"
    # a region of the activation maps needs its crop and the whole photo both more animal than not
    assert decide(evidence(animal=0.6, from_detector=False, photo_animal=0.45), knowledge, at) is None
    assert decide(evidence(animal=0.45, from_detector=False, photo_animal=0.9), knowledge, at) is None
    assert decide(evidence(animal=0.6, from_detector=False, photo_animal=0.6), knowledge, at).category == "animal"


def test_names_climb_the_taxonomy_to_the_first_sure_rank(knowledge):
    sure = decide(evidence(animal=1.0, species={TIGER: 0.9, LION: 0.1}), knowledge)
    found = (sure.name, sure.rank, sure.scientific_name, sure.iucn_category)
    assert found == ("tiger", "species", "Panthera tigris", "EN")
    unsure = {TIGER: 0.35, LION: 0.35, LYNX: 0.3}
    genus = decide(evidence(animal=1.0, species=unsure), knowledge, Thresholds(species=0.5, genus=0.5))
    assert (genus.name, genus.rank, genus.common_name) == ("Panthera", "genus", "big cat")
    family = decide(evidence(animal=1.0, species=unsure), knowledge, Thresholds(species=0.5, genus=0.8, family=0.9))
    assert (family.name, family.rank, family.common_name) == ("Felidae", "family", "cat")
    assert describe_animal(family).startswith("a cat, family Felidae (")
    # a rank's threshold is never below the species': an unsure group weighs every rank down
    group_only = decide(evidence(animal=0.6, species=unsure), knowledge, Thresholds(species=0.7, genus=0.3, family=0.3))
    assert group_only.rank in ("order", "class", "group") and group_only.name != "Felidae"
    vague = decide(evidence(animal=0.4, species={TIGER: 1.0}), knowledge, Thresholds(group=0.5))
    assert (vague.name, vague.rank) == ("animal", None)


def test_calibration_picks_the_thresholds_that_meet_the_precision_target(knowledge):
    """Two tigers and a lion the expert takes for a tiger at 0.55: a species threshold above 0.55
    names the lion's genus instead, and at 0.6 the first tiger is still named as a species."""
    photos = [[evidence(animal=1.0, species={TIGER: 0.6, LION: 0.4})],
              [evidence(animal=1.0, species={TIGER: 0.9, LION: 0.1})],
              [evidence(animal=1.0, species={TIGER: 0.55, LEOPARD: 0.45})]]
    tiger, lion = {"tiger", "panthera tigris", "panthera"}, {"lion", "panthera leo", "panthera"}
    labels = [{"animals": 1, "taxa": tiger}, {"animals": 1, "taxa": tiger}, {"animals": 1, "taxa": lion}]
    assert replay(photos, labels, knowledge, Thresholds(species=0.5))["wrong"] == 1
    at, scores = fit(photos, labels, precision=1.0)
    assert at.species == 0.6 and (scores["right"], scores["wrong"], scores["species_right"]) == (3, 0, 2)


def test_a_class_that_stands_for_a_family_is_named_by_its_own_name_at_the_familys_threshold(knowledge):
    flamingo, pelican = "n02007558", "n02051845"  # ImageNet classes of whole families
    scores = {flamingo: 0.8, pelican: 0.2}
    sure = decide(evidence(animal=1.0, species=scores), knowledge, Thresholds(species=0.5, family=0.75))
    assert (sure.name, sure.rank, sure.scientific_name) == ("flamingo", "family", "Phoenicopteridae")
    # below the family's threshold the class alone is not enough, though it is above the species'
    unsure = decide(evidence(animal=1.0, species=scores), knowledge, Thresholds(species=0.5, family=0.85))
    assert unsure.rank not in ("species", "genus", "family")


def test_every_taxon_above_species_has_a_word_a_sentence_can_use(knowledge):
    entries = [c.get("taxa", {}) for c in knowledge.classes] + [s.taxa for s in knowledge.species.values()]
    taxa = {entry[rank] for entry in entries for rank in ("family", "order", "class") if entry.get(rank)}
    assert taxa and not {t for t in taxa if knowledge.noun(t) is None}
    assert (knowledge.noun("Ardeidae"), knowledge.noun("Accipitridae"), knowledge.noun("Aves")) == (
        "heron", "bird of prey", "bird")
    assert knowledge.noun("Panthera tigris") == "tiger" and knowledge.noun("no such taxon") is None


def test_summaries_read_as_sentences(knowledge):
    from qformer.wildlife import Animal

    assert describe_animal(Animal((0, 0, 1, 1), 0.8, "animal", name="animal")) == "an animal (80% sure)"
    bird = Animal((0, 0, 1, 1), 0.8, "animal", group="bird", name="bird", rank="group", score=0.7)
    assert describe_animal(bird) == "an animal, probably a bird (70%)"
    elephant = decide(evidence(animal=1.0, species={"n02504458": 1.0}), knowledge)
    assert describe_animal(elephant).startswith("an African ")
