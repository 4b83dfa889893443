"""A `qformer.compose` graph on Ray Serve without rewriting its nodes: the caption ensemble (three
decodings in parallel, each scored, ranked) served node by node gives the in-process answer."""


import pytest
import requests

pytest.importorskip("ray")

from qformer.compose import Chain, Graph, Node, Parallel  # noqa: E402
from qformer.serving.caption_ensemble import GENERATORS, caption_ensemble  # noqa: E402
from qformer.serving.ray_graph import deploy_graph, nodes_of  # noqa: E402

from .conftest import SAMPLES, descendants, running_server  # noqa: E402


def test_the_ensemble_graph_runs_in_process():
    result = caption_ensemble("tiny-random")(image=str(SAMPLES / "scene.png"))
    ranked = result["ranked"]
    assert [c["generator"] for c in ranked["candidates"]] != [] and len(ranked["candidates"]) == len(GENERATORS)
    scores = [c["score"] for c in ranked["candidates"]]
    assert scores == sorted(scores, reverse=True) and ranked["best"] == ranked["candidates"][0]["caption"]
    assert {f"generate_{g}" for g in GENERATORS} <= set(result.timings)


def test_deploying_names_every_node_and_refuses_what_is_not_there():
    graph = caption_ensemble("tiny-random")
    expected = [f"{kind}_{g}" for g in GENERATORS for kind in ("generate", "score")]
    assert [n.name for n in nodes_of(graph.root)] == expected
    with pytest.raises(ValueError, match="neither nodes nor groups here"):
        deploy_graph(graph, options={"generate_typo": {"num_replicas": 2}})
    for groups in ({"g": ["generate_typo"]}, {"g": ["score_greedy"], "h": ["score_greedy"]}, {"g": []},
                   {"score_beam": ["generate_beam"]}):
        with pytest.raises(ValueError, match="groups must name each node of this graph"):
            deploy_graph(graph, groups=groups)
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
    with running_server(["--model", saved_bridge, "--ensemble"], "/healthz") as running:
        yield running


def test_the_served_ensemble_gives_the_in_process_answer_from_a_deployment_per_node(ensemble_server, saved_bridge):
    url, process = ensemble_server
    image = SAMPLES / "scene.png"
    served = requests.post(f"{url}/ensemble", files={"image": ("scene.png", image.read_bytes())}, timeout=300)
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
    kinds = ("generate", "score")
    assert all(f"ServeReplica:qformer:node_{kind}_{g}" in replicas for g in GENERATORS for kind in kinds)
    bad = requests.post(f"{url}/ensemble", files={"image": ("notes.txt", b"not a photo")}, timeout=60)
    assert bad.status_code == 400 and "could not read" in bad.json()["detail"]


GROUPED = """
import json, sys
from functools import partial
import ray
from ray import serve
from qformer.compose import Chain, Graph, Node, Parallel
from qformer.serving.ray_graph import deploy_graph

def branch(name, case):
    return Chain(name, Node(f"case_{name}", case, ["x"], "y"), Node(f"keep_{name}", list, ["y"], "z", batch_size=4))

graph = Graph(Parallel("p", [branch("up", str.upper), branch("low", str.lower)], collect="z", output="zs"))
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
handle = serve.run(deploy_graph(graph, groups={"cases": ["case_up", "case_low"], "keeps": ["keep_up", "keep_low"]},
                                options={"cases": {"num_replicas": 1}}), name="grouped", route_prefix=None)
inputs = [{"x": f"Word{i}"} for i in range(6)]
served = handle.remote(inputs).result(timeout_s=120)
deployments = sorted(serve.status().applications["grouped"].deployments)
print("RESULT " + json.dumps({"served": [r["values"]["zs"] for r in served],
                  "in_process": [r.values["zs"] for r in graph.map(inputs)], "deployments": deployments}), flush=True)
serve.shutdown()
ray.shutdown()
"""


def test_a_declared_group_of_nodes_shares_one_deployment(tmp_path):
    """Four nodes in two groups: two deployments (and the driver), the in-process answers, batches that
    mix the requests of two nodes split by node."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", GROUPED], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]  # Ray logs around it
    result = json.loads(line[len("RESULT "):])
    assert result["served"] == result["in_process"] == [[f"WORD{i}", f"word{i}"] for i in range(6)]
    assert result["deployments"] == ["GraphDriver", "node_cases", "node_keeps"]
