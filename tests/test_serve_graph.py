"""A `qformer.compose` graph on Ray Serve without rewriting its nodes: the caption ensemble (three
decodings in parallel, each scored, ranked) served node by node gives the in-process answer."""


import pytest
import requests

pytest.importorskip("ray")

from qformer.compose import Chain, Graph, Node, Parallel  # noqa: E402
from qformer.serving.caption_ensemble import GENERATORS, caption_ensemble  # noqa: E402
from qformer.serving.ray_graph import deploy_graph, nodes_of  # noqa: E402

from .test_serve import SAMPLES, descendants, running_server  # noqa: E402


def test_the_ensemble_graph_runs_in_process():
    result = caption_ensemble("tiny-random")(image=str(SAMPLES / "scene.png"))
    ranked = result["ranked"]
    assert [c["generator"] for c in ranked["candidates"]] != [] and len(ranked["candidates"]) == len(GENERATORS)
    scores = [c["score"] for c in ranked["candidates"]]
    assert scores == sorted(scores, reverse=True) and ranked["best"] == ranked["candidates"][0]["caption"]
    assert {f"generate_{g}" for g in GENERATORS} <= set(result.timings)


def test_deploying_names_every_node_and_refuses_what_is_not_there():
    graph = caption_ensemble("tiny-random")
    assert [n.name for n in nodes_of(graph.root)] == [f"{kind}_{g}" for g in GENERATORS for kind in ("generate", "score")]
    with pytest.raises(ValueError, match="not nodes of this graph"):
        deploy_graph(graph, options={"generate_typo": {"num_replicas": 2}})
    twice = Graph(Parallel("p", [Chain("a", Node("same", str, ["x"], "y")), Chain("b", Node("same", str, ["x"], "y"))],
                           collect="y", output="ys"))
    with pytest.raises(ValueError, match="unique"):
        deploy_graph(twice)


@pytest.fixture(scope="module")
def saved_bridge(tmp_path_factory):
    """A preset builds fresh bridge weights in every process; a saved folder is the same everywhere."""
    import qformer

    folder = tmp_path_factory.mktemp("bridge") / "tiny"
    qformer.create_model("tiny-random").save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def ensemble_server(saved_bridge):
    with running_server(["--model", saved_bridge, "--ensemble"], "/ensemble/docs") as running:
        yield running


def test_the_served_ensemble_gives_the_in_process_answer_from_a_deployment_per_node(ensemble_server, saved_bridge):
    url, process = ensemble_server
    image = SAMPLES / "scene.png"
    served = requests.post(f"{url}/ensemble/", files={"image": ("scene.png", image.read_bytes())}, timeout=300)
    assert served.status_code == 200, served.text
    body = served.json()
    expected = caption_ensemble(saved_bridge)(image=str(image))["ranked"]

    def by_generator(ranked: dict) -> dict:
        return {c["generator"]: c for c in ranked["candidates"]}

    served_candidates, expected_candidates = by_generator(body), by_generator(expected)
    assert served_candidates.keys() == expected_candidates.keys() == GENERATORS.keys()
    # greedy and beam search are exact; a sample may differ with the replica's thread count
    assert served_candidates["greedy"] == expected_candidates["greedy"]
    assert served_candidates["beam"] == expected_candidates["beam"]
    assert [c["score"] for c in body["candidates"]] == sorted((c["score"] for c in body["candidates"]), reverse=True)
    replicas = " ".join(descendants(process.pid).values())
    assert all(f"ServeReplica:ensemble:node_{kind}_{g}" in replicas for g in GENERATORS for kind in ("generate", "score"))
    bad = requests.post(f"{url}/ensemble/", files={"image": ("notes.txt", b"not a photo")}, timeout=60)
    assert bad.status_code == 400 and "could not read" in bad.json()["detail"]
